package stepca

import (
	"context"
	"fmt"

	"github.com/custos-pki/custos/kms"
)

// EABKey is an ACME external account binding key. HMACKey is secret: it is
// shown once, to whoever asked for the key, and kept only in storage.
type EABKey struct {
	KeyID       string
	HMACKey     []byte
	Reference   string
	Provisioner string
}

// CreateEABKey makes an external account binding key for the ACME
// provisioner prov (empty: the default one); it is good for that
// provisioner only, and with RequireEAB an account can only be created
// with one. reference, if not empty, names the key and must be unused.
func (s *Server) CreateEABKey(ctx context.Context, prov, reference string) (EABKey, error) {
	if prov == "" {
		prov = s.cfg.ACMEProvisioner
	}
	p, err := s.ACMEProvisioner(ctx, prov)
	if err != nil {
		return EABKey{}, err
	}
	id := p.stepID()
	if reference != "" {
		if k, err := s.acmeDB.GetExternalAccountKeyByReference(ctx, id, reference); err == nil && k != nil {
			return EABKey{}, fmt.Errorf("%w: stepca: an EAB key with reference %q exists", kms.ErrConflict, reference)
		}
	}
	k, err := s.acmeDB.CreateExternalAccountKey(ctx, id, reference)
	if err != nil {
		return EABKey{}, fmt.Errorf("stepca: create EAB key: %w", err)
	}
	return EABKey{KeyID: k.ID, HMACKey: k.HmacKey, Reference: k.Reference, Provisioner: p.Name}, nil
}
