package node

import (
	"errors"
	"testing"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/kms"
)

// FuzzNewCeremony feeds init requests from outside to the checks that
// build a ceremony: they must never panic, and every refusal is invalid
// input (the node's ErrInvalid, or kms's for a seal configuration).
func FuzzNewCeremony(f *testing.F) {
	otp := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4=" // 47 bytes
	f.Add(api.CeremonyGenerateRoot, otp, 0, 0, "")
	f.Add(api.CeremonyGenerateRoot, "not base64!", 0, 0, "")
	f.Add(api.CeremonyRekey, "", 3, 2, "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p")
	f.Add(api.CeremonyRekey, "", 1, 1, "age1bogus")
	f.Add(api.CeremonyRekey, "", 300, 2, "")
	f.Add(api.CeremonyRotateRoot, "", 0, 0, "")
	f.Add(api.CeremonyRotateRoot, otp, 0, 0, "")
	n := &Node{}
	st := kms.SealStatus{Initialized: true, Type: kms.SealShamir, Shares: 5, Threshold: 3}
	f.Fuzz(func(t *testing.T, kind, otp string, shares, threshold int, recipient string) {
		if checkKind(kind) != nil {
			return
		}
		req := api.CeremonyRequest{OTP: otp, SecretShares: shares, SecretThreshold: threshold}
		if recipient != "" {
			for range max(0, min(shares, 8)) {
				req.Recipients = append(req.Recipients, recipient)
			}
		}
		cer, err := n.newCeremony(kind, st, req)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, kms.ErrInvalid) {
				t.Fatalf("refusal %v is not invalid input", err)
			}
			return
		}
		if kind == api.CeremonyGenerateRoot && len(cer.otp) != rootTokenLen {
			t.Fatalf("accepted an OTP of %d bytes", len(cer.otp))
		}
	})
}
