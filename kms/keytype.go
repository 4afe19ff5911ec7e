package kms

import (
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"

	"github.com/custos-pki/custos/kms/internal/subkey"
)

// KeyType is the algorithm of a named key; it never changes.
type KeyType string

// Key types.
const (
	// TypeAES256GCM96 is Vault Transit's default: AES-256-GCM with random
	// 96-bit nonces, ciphertext body nonce || ciphertext || tag. Random
	// nonces limit one version to 2^32 encryptions, so versions of this type
	// rotate automatically after 2^31 and refuse to encrypt past 2^32.
	TypeAES256GCM96 KeyType = "aes256-gcm96"
	// TypeAES256GCM96HKDF, the default, is AES-256-GCM under subkeys derived
	// with HKDF-SHA256 from random 128-bit salts (see kms/internal/subkey),
	// body salt || nonce || ciphertext || tag: no practical message limit,
	// at the cost of plain AES-GCM.
	TypeAES256GCM96HKDF KeyType = "aes256-gcm96-hkdf"
	TypeECDSAP256       KeyType = "ecdsa-p256"
	TypeECDSAP384       KeyType = "ecdsa-p384"
	TypeEd25519         KeyType = "ed25519"
	TypeRSA2048         KeyType = "rsa-2048"
	TypeRSA3072         KeyType = "rsa-3072"
	TypeRSA4096         KeyType = "rsa-4096"
	// TypeHMAC is a 256-bit HMAC key (SHA-256, SHA-384 or SHA-512).
	TypeHMAC KeyType = "hmac"
)

// DefaultKeyType is the type of a key created without one.
const DefaultKeyType = TypeAES256GCM96HKDF

// gcm96UseLimit is where aes256-gcm96 versions stop encrypting (NIST SP
// 800-38D, 8.3) and gcm96AutoRotate where they rotate by themselves.
const (
	gcm96UseLimit   = 1 << 32
	gcm96AutoRotate = 1 << 31
)

// purpose is what a key type can do.
type purpose int

const (
	purposeEncrypt purpose = iota + 1
	purposeSign
	purposeHMAC
)

type typeInfo struct {
	purpose  purpose
	curve    elliptic.Curve
	rsaBits  int
	hash     crypto.Hash // default hash for sign and hmac
	useLimit uint64      // hard limit of uses per version, 0 for none
}

var keyTypes = map[KeyType]typeInfo{
	TypeAES256GCM96:     {purpose: purposeEncrypt, useLimit: gcm96UseLimit},
	TypeAES256GCM96HKDF: {purpose: purposeEncrypt},
	TypeECDSAP256:       {purpose: purposeSign, curve: elliptic.P256(), hash: crypto.SHA256},
	TypeECDSAP384:       {purpose: purposeSign, curve: elliptic.P384(), hash: crypto.SHA384},
	TypeEd25519:         {purpose: purposeSign},
	TypeRSA2048:         {purpose: purposeSign, rsaBits: 2048, hash: crypto.SHA256},
	TypeRSA3072:         {purpose: purposeSign, rsaBits: 3072, hash: crypto.SHA256},
	TypeRSA4096:         {purpose: purposeSign, rsaBits: 4096, hash: crypto.SHA256},
	TypeHMAC:            {purpose: purposeHMAC, hash: crypto.SHA256},
}

func (t KeyType) info() (typeInfo, error) {
	ti, ok := keyTypes[t]
	if !ok {
		return typeInfo{}, fmt.Errorf("%w: unknown key type %q", ErrInvalid, t)
	}
	return ti, nil
}

// Asymmetric reports whether keys of this type have a public key.
func (t KeyType) Asymmetric() bool {
	ti, err := t.info()
	return err == nil && ti.purpose == purposeSign
}

// generate makes new key material: 32 random bytes for symmetric types,
// PKCS#8 DER for the others.
func generate(t KeyType) ([]byte, error) {
	ti, err := t.info()
	if err != nil {
		return nil, err
	}
	var priv any
	switch {
	case ti.purpose != purposeSign:
		return randomKey(), nil
	case ti.curve != nil:
		priv, err = ecdsa.GenerateKey(ti.curve, rand.Reader)
	case ti.rsaBits != 0:
		priv, err = rsa.GenerateKey(rand.Reader, ti.rsaBits)
	default:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", t, err)
	}
	return x509.MarshalPKCS8PrivateKey(priv)
}

// version is one key version ready to use.
type version struct {
	n       int
	aead    cipher.AEAD   // aes256-gcm96
	sub     *subkey.AEAD  // aes256-gcm96-hkdf
	signer  crypto.Signer // ecdsa, ed25519, rsa
	hmacKey []byte        // hmac
	use     *usage
}

// parseVersion turns stored material into a usable version; it checks that
// the material is of type t.
func parseVersion(t KeyType, n int, material []byte) (*version, error) {
	ti, err := t.info()
	if err != nil {
		return nil, err
	}
	v := &version{n: n}
	bad := fmt.Errorf("%w: key material does not match type %s", ErrCorrupt, t)
	switch {
	case ti.purpose == purposeHMAC:
		if len(material) != keySize {
			return nil, bad
		}
		v.hmacKey = append([]byte(nil), material...)
	case t == TypeAES256GCM96:
		if len(material) != keySize {
			return nil, bad
		}
		if v.aead, err = newGCM(material); err != nil {
			return nil, err
		}
	case t == TypeAES256GCM96HKDF:
		if v.sub, err = subkey.New(material); err != nil {
			return nil, bad
		}
	default:
		priv, err := x509.ParsePKCS8PrivateKey(material)
		if err != nil {
			return nil, bad
		}
		switch p := priv.(type) {
		case *ecdsa.PrivateKey:
			if ti.curve == nil || p.Curve != ti.curve {
				return nil, bad
			}
			v.signer = p
		case *rsa.PrivateKey:
			if p.N.BitLen() != ti.rsaBits {
				return nil, bad
			}
			v.signer = p
		case ed25519.PrivateKey:
			if t != TypeEd25519 {
				return nil, bad
			}
			v.signer = p
		default:
			return nil, bad
		}
	}
	return v, nil
}

// zero overwrites what can be overwritten. Callers hold KMS.opMu for
// writing, so no operation is using v.
func (v *version) zero() {
	if v.sub != nil {
		v.sub.Zero()
	}
	clear(v.hmacKey)
	if p, ok := v.signer.(ed25519.PrivateKey); ok {
		clear(p)
	}
	v.aead, v.signer = nil, nil
}

// publicKey returns the public key of an asymmetric version, else nil.
func (v *version) publicKey() crypto.PublicKey {
	if v.signer == nil {
		return nil
	}
	return v.signer.Public()
}
