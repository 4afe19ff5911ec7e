package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
	"github.com/go-jose/go-jose/v4"
)

// JWT signing key: a non-exportable KMS key (the leading '_' hides it from
// the KMS API), rotated by the KMS.
const (
	jwtKeyName     = "_custos-spiffe-jwt"
	jwtKeyType     = kms.TypeECDSAP256
	jwtKeyRotation = 30 * 24 * time.Hour
	// jwtKeyGrace keeps a replaced version in the bundle this long, so that
	// JWT-SVIDs it signed still verify.
	jwtKeyGrace = 24 * time.Hour
)

// Limits on FetchJWTSVID and ValidateJWTSVID requests.
const (
	maxAudiences     = 16
	maxAudienceBytes = 256
	maxTokenBytes    = 16 << 10
)

// jwtKey returns the signing key's info, creating the key on first use. A
// key of that name that is exportable or of another type is refused.
func (s *Server) jwtKey(ctx context.Context) (kms.KeyInfo, error) {
	info, err := s.cfg.Keys.Key(ctx, jwtKeyName)
	if errors.Is(err, kms.ErrNotFound) {
		_, err = s.cfg.Keys.CreateKey(ctx, jwtKeyName, kms.KeyOptions{Type: jwtKeyType, AutoRotatePeriod: jwtKeyRotation})
		if err != nil && !errors.Is(err, kms.ErrKeyExists) {
			return kms.KeyInfo{}, fmt.Errorf("workload: create the JWT key: %w", err)
		}
		info, err = s.cfg.Keys.Key(ctx, jwtKeyName)
	}
	if err != nil {
		return kms.KeyInfo{}, err
	}
	if info.Type != jwtKeyType || info.Exportable {
		return kms.KeyInfo{}, fmt.Errorf("workload: key %s exists with type %s (exportable %t), want a non-exportable %s", jwtKeyName, info.Type, info.Exportable, jwtKeyType)
	}
	return info, nil
}

// keyID is the RFC 7638 thumbprint of a public key, base64url.
func keyID(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// jwtAuthorities returns the public keys a JWT-SVID may be signed with, by
// key ID: the latest version and the versions replaced within jwtKeyGrace.
func (s *Server) jwtAuthorities(ctx context.Context) (map[string]crypto.PublicKey, error) {
	info, err := s.jwtKey(ctx)
	if err != nil {
		return nil, err
	}
	vs := slices.Clone(info.Versions)
	slices.SortFunc(vs, func(a, b kms.VersionInfo) int { return a.Version - b.Version })
	out := map[string]crypto.PublicKey{}
	for i, v := range vs {
		if v.State != kms.StateActive {
			continue
		}
		if v.Version != info.Latest && (i+1 >= len(vs) || s.now().Sub(vs[i+1].Created) > jwtKeyGrace) {
			continue
		}
		pub, err := s.cfg.Keys.PublicKey(ctx, jwtKeyName, v.Version)
		if err != nil {
			return nil, err
		}
		kid, err := keyID(pub)
		if err != nil {
			return nil, err
		}
		out[kid] = pub
	}
	return out, nil
}

// signJWT makes a JWT-SVID (ES256) and checks its signature with the
// public key before returning it.
func (s *Server) signJWT(ctx context.Context, sub string, aud []string, ttl time.Duration) (string, error) {
	if _, err := s.jwtKey(ctx); err != nil {
		return "", err
	}
	signer, err := s.cfg.Keys.Signer(ctx, jwtKeyName, 0)
	if err != nil {
		return "", err
	}
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok {
		return "", errors.New("workload: the JWT key is not ECDSA")
	}
	kid, err := keyID(pub)
	if err != nil {
		return "", err
	}
	now := s.now().Truncate(time.Second)
	header, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": kid, "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{"sub": sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(ttl).Unix()})
	input := b64(header) + "." + b64(claims)
	digest := sha256.Sum256([]byte(input))
	der, err := signer.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("workload: sign the JWT-SVID: %w", err)
	}
	if !ecdsa.VerifyASN1(pub, digest[:], der) {
		return "", errors.New("workload: the JWT-SVID signature does not verify")
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return "", fmt.Errorf("workload: signature: %w", err)
	}
	raw := make([]byte, 64)
	sig.R.FillBytes(raw[:32])
	sig.S.FillBytes(raw[32:])
	return input + "." + b64(raw), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// checkAudience validates FetchJWTSVID's audience.
func checkAudience(aud []string) error {
	switch {
	case len(aud) == 0:
		return errors.New("audience must be specified")
	case len(aud) > maxAudiences:
		return fmt.Errorf("at most %d audiences", maxAudiences)
	}
	for _, a := range aud {
		if a == "" || len(a) > maxAudienceBytes {
			return fmt.Errorf("an audience must be 1 to %d bytes", maxAudienceBytes)
		}
	}
	return nil
}

func caIssueRequest(spiffeID string, ttl time.Duration) ca.IssueRequest {
	return ca.IssueRequest{URIs: []string{spiffeID}, TTL: ttl}
}
