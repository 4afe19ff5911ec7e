package stepca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/jose"
)

// JWKTable holds the JWK provisioners operators make for the step CLI, by
// name, through the barrier.
const JWKTable = "stepca.jwk_provisioners"

// Bounds of a JWK provisioner's password: step's CLI decrypts the key with
// it, so it is a secret a person types or keeps in a file.
const (
	MinJWKPassword = 8
	MaxJWKPassword = 1024
)

// JWKProvisioner is a JWK provisioner for the step CLI (`step ca token`,
// `step ca certificate`). Its key pair is made by custos; the private key
// is kept only encrypted under the operator's password (a JWE, PBES2, as
// step-ca stores it) and served at /provisioners/<kid>/encrypted-key, so
// only holders of the password can sign tokens. Its policy is an ACME
// provisioner's, checked by the same matcher, before step signs and again
// when the certificate is made, and at every renewal.
type JWKProvisioner struct {
	Name           string        `json:"name"`
	AllowedNames   []string      `json:"allowed_names,omitempty"`
	DeniedNames    []string      `json:"denied_names,omitempty"`
	AllowWildcards bool          `json:"allow_wildcards,omitempty"`
	MaxLifetime    time.Duration `json:"max_lifetime,omitempty"`
	KeyTypes       []string      `json:"key_types,omitempty"`
	Role           string        `json:"role,omitempty"`

	// Key is the public key (its KeyID is the kid tokens name);
	// EncryptedKey the private key as a compact JWE.
	Key          *jose.JSONWebKey `json:"key"`
	EncryptedKey string           `json:"encrypted_key"`
}

// policy returns p's policy in the shape ACME provisioners have.
func (p JWKProvisioner) policy() ACMEProvisioner {
	return ACMEProvisioner{
		Name: p.Name, AllowedNames: p.AllowedNames, DeniedNames: p.DeniedNames, AllowWildcards: p.AllowWildcards,
		MaxLifetime: p.MaxLifetime, KeyTypes: p.KeyTypes, Role: p.Role,
	}
}

// KeyID is the kid of the provisioner's key.
func (p JWKProvisioner) KeyID() string {
	if p.Key == nil {
		return ""
	}
	return p.Key.KeyID
}

// stepJWK is step's provisioner for p.
func (s *Server) stepJWK(p JWKProvisioner) *provisioner.JWK {
	return &provisioner.JWK{
		Type: provisioner.TypeJWK.String(), Name: p.Name, Key: p.Key, EncryptedKey: p.EncryptedKey,
		Claims: &provisioner.Claims{
			MaxTLSDur:     &provisioner.Duration{Duration: p.MaxLifetime},
			DefaultTLSDur: &provisioner.Duration{Duration: min(s.cfg.DefaultCertDuration, p.MaxLifetime)},
		},
	}
}

// CreateJWKProvisioner makes a JWK provisioner: a new key pair, its private
// key encrypted under password. Its name must be free among the ACME and
// JWK provisioners (kms.ErrConflict). The password is not kept.
func (s *Server) CreateJWKProvisioner(ctx context.Context, p JWKProvisioner, password []byte) (JWKProvisioner, error) {
	if len(password) < MinJWKPassword || len(password) > MaxJWKPassword {
		return JWKProvisioner{}, fmt.Errorf("%w: stepca: the password must be %d to %d bytes", kms.ErrInvalid, MinJWKPassword, MaxJWKPassword)
	}
	pol, _, err := s.checked(ctx, p.policy())
	if err != nil {
		return JWKProvisioner{}, err
	}
	p.AllowedNames, p.DeniedNames, p.MaxLifetime, p.KeyTypes = pol.AllowedNames, pol.DeniedNames, pol.MaxLifetime, pol.KeyTypes
	pub, jwe, err := jose.GenerateDefaultKeyPair(password)
	if err != nil {
		return JWKProvisioner{}, fmt.Errorf("stepca: JWK provisioner key: %w", err)
	}
	if p.EncryptedKey, err = jwe.CompactSerialize(); err != nil {
		return JWKProvisioner{}, fmt.Errorf("stepca: JWK provisioner key: %w", err)
	}
	p.Key = pub
	raw, err := json.Marshal(p)
	if err != nil {
		return JWKProvisioner{}, err
	}
	key := []byte(p.Name)
	ok, err := s.write(ctx,
		raftstore.Op{Kind: raftstore.OpCAS, Table: JWKTable, Key: key, Value: raw},
		// and no ACME provisioner of that name (asserts absence, deletes nothing)
		raftstore.Op{Kind: raftstore.OpCAS, Table: ProvisionerTable, Key: key, Delete: true})
	switch {
	case err != nil:
		return JWKProvisioner{}, fmt.Errorf("stepca: create JWK provisioner: %w", err)
	case !ok:
		return JWKProvisioner{}, fmt.Errorf("%w: stepca: a provisioner %q exists", kms.ErrConflict, p.Name)
	}
	return p, nil
}

// JWKProvisioners returns the JWK provisioners, by name.
func (s *Server) JWKProvisioners(ctx context.Context) ([]JWKProvisioner, error) {
	return s.loadJWKs(ctx)
}

// JWKProvisioner returns one JWK provisioner, or an error matching
// kms.ErrNotFound.
func (s *Server) JWKProvisioner(ctx context.Context, name string) (JWKProvisioner, error) {
	if err := checkProvisionerName(name); err != nil {
		return JWKProvisioner{}, err
	}
	raw, err := s.cfg.Storage.Get(ctx, JWKTable, []byte(name))
	if errors.Is(err, raftstore.ErrNotFound) {
		return JWKProvisioner{}, fmt.Errorf("%w: stepca: no JWK provisioner %q", kms.ErrNotFound, name)
	}
	if err != nil {
		return JWKProvisioner{}, fmt.Errorf("stepca: read JWK provisioner: %w", err)
	}
	var p JWKProvisioner
	if err := json.Unmarshal(raw, &p); err != nil {
		return JWKProvisioner{}, fmt.Errorf("stepca: stored JWK provisioner %q: %w", name, err)
	}
	return p, nil
}

// DeleteJWKProvisioner deletes a JWK provisioner: its tokens are refused
// at once by every node, and its certificates can no longer be renewed;
// they stay valid until they expire or are revoked.
func (s *Server) DeleteJWKProvisioner(ctx context.Context, name string) error {
	if err := checkProvisionerName(name); err != nil {
		return err
	}
	return s.deleteProvisionerRecord(ctx, JWKTable, name, "JWK provisioner")
}

func (s *Server) loadJWKs(ctx context.Context, opts ...raftstore.ReadOption) ([]JWKProvisioner, error) {
	out := []JWKProvisioner{}
	var after []byte
	for {
		page, err := s.cfg.Storage.List(ctx, JWKTable, raftstore.ListOptions{After: after}, opts...)
		if err != nil {
			return nil, fmt.Errorf("stepca: list JWK provisioners: %w", err)
		}
		for _, kv := range page.Items {
			var p JWKProvisioner
			if err := json.Unmarshal(kv.Value, &p); err != nil || p.Key == nil {
				return nil, fmt.Errorf("stepca: stored JWK provisioner %q is malformed", kv.Key)
			}
			out = append(out, p)
		}
		if page.Next == nil {
			sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
			return out, nil
		}
		after = page.Next
	}
}
