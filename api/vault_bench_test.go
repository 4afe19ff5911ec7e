//go:build unix

package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/custos-pki/custos/kms"
)

// BenchmarkVaultEncryptHandler encrypts 1 KiB through the native route and
// through the Vault route of one server, in process (no TLS, no network),
// so that the figure is the API's own cost per operation: request decoding,
// translation, the audit entries and the response encoding.
func BenchmarkVaultEncryptHandler(b *testing.B) {
	s := newTestStack(b, stackOptions{})
	if _, err := s.kms.CreateKey(context.Background(), "bench", kms.KeyOptions{Type: kms.TypeAES256GCM96}); err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, 1024)
	rand.Read(pt)
	body, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
	for _, c := range []struct{ name, path, header string }{
		{"native", "/v1/kms/encrypt/bench", TokenHeader},
		{"vault", VaultPrefix + "/v1/transit/encrypt/bench", vaultHeader},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, c.path, bytes.NewReader(body))
				req.Header.Set(c.header, s.root)
				w := httptest.NewRecorder()
				s.server.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", c.name, w.Code, w.Body)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used: on a
// shared machine a steadier figure than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
