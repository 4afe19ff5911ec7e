package kms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // register the hashes SignOptions may name
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io"
)

// Padding is the RSA signature scheme.
type Padding int

// RSA signature schemes.
const (
	PaddingPSS      Padding = iota // RSASSA-PSS, salt length = hash length
	PaddingPKCS1v15                // RSASSA-PKCS1-v1_5
)

// SignOptions are the options of sign, verify and HMAC.
type SignOptions struct {
	// Version selects the key version that signs (0: the latest). Verify
	// ignores it: the signature names its version.
	Version int
	// Hash is SHA-256, SHA-384 or SHA-512; 0 is the type's default (SHA-256,
	// SHA-384 for ecdsa-p384). For ed25519, 0 is pure Ed25519 and SHA-512 is
	// Ed25519ph.
	Hash crypto.Hash
	// Prehashed says the input is already the digest.
	Prehashed bool
	// Padding is the RSA scheme.
	Padding Padding
}

func (o SignOptions) hash(ti typeInfo, t KeyType) (crypto.Hash, error) {
	h := o.Hash
	if h == 0 {
		h = ti.hash
	}
	if t == TypeEd25519 {
		if h != 0 && h != crypto.SHA512 || h == 0 && o.Prehashed {
			return 0, fmt.Errorf("%w: ed25519 signs the message itself, or a SHA-512 digest (Ed25519ph)", ErrInvalid)
		}
		return h, nil
	}
	if h != crypto.SHA256 && h != crypto.SHA384 && h != crypto.SHA512 {
		return 0, fmt.Errorf("%w: hash must be SHA-256, SHA-384 or SHA-512", ErrInvalid)
	}
	return h, nil
}

// digest returns what the signing primitive takes: the message hashed with
// h, or the message itself if prehashed (its length is checked).
func digest(h crypto.Hash, msg []byte, prehashed bool) ([]byte, error) {
	if h == 0 {
		return msg, nil
	}
	if prehashed {
		if len(msg) != h.Size() {
			return nil, fmt.Errorf("%w: a prehashed input must be %d bytes", ErrInvalid, h.Size())
		}
		return msg, nil
	}
	hh := h.New()
	hh.Write(msg)
	return hh.Sum(nil), nil
}

// Sign signs msg with the named key and returns a self-describing signature
// in binary form. The signature is checked against the public key before it
// is returned.
func (k *KMS) Sign(ctx context.Context, name string, msg []byte, o SignOptions) ([]byte, error) {
	n, sig, err := k.signRaw(ctx, name, msg, o)
	if err != nil {
		return nil, err
	}
	return append(appendHeader(make([]byte, 0, 6+len(sig)), n), sig...), nil
}

func (k *KMS) signRaw(ctx context.Context, name string, msg []byte, o SignOptions) (int, []byte, error) {
	if err := k.begin(); err != nil {
		return 0, nil, err
	}
	defer k.end()
	e, v, err := k.use(ctx, name, purposeSign, opProduce, o.Version)
	if err != nil {
		return 0, nil, err
	}
	h, err := o.hash(e.ti, e.meta.Type)
	if err != nil {
		return 0, nil, err
	}
	d, err := digest(h, msg, o.Prehashed)
	if err != nil {
		return 0, nil, err
	}
	var sig []byte
	switch s := v.signer.(type) {
	case *ecdsa.PrivateKey:
		sig, err = ecdsa.SignASN1(rand.Reader, s, d)
	case *rsa.PrivateKey:
		if o.Padding == PaddingPKCS1v15 {
			sig, err = rsa.SignPKCS1v15(rand.Reader, s, h, d)
		} else {
			sig, err = rsa.SignPSS(rand.Reader, s, h, d, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
	case ed25519.PrivateKey:
		sig, err = s.Sign(nil, d, &ed25519.Options{Hash: h})
	default:
		err = ErrUnsupported
	}
	if err != nil {
		return 0, nil, fmt.Errorf("sign: %w", err)
	}
	if !verifySig(v.publicKey(), h, d, sig, o.Padding) {
		return 0, nil, errors.New("kms: sign: the signature does not verify with the public key")
	}
	v.use.uses.Add(1)
	return v.n, sig, nil
}

func verifySig(pub crypto.PublicKey, h crypto.Hash, d, sig []byte, p Padding) bool {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(pub, d, sig)
	case *rsa.PublicKey:
		if p == PaddingPKCS1v15 {
			return rsa.VerifyPKCS1v15(pub, h, d, sig) == nil
		}
		return rsa.VerifyPSS(pub, h, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
	case ed25519.PublicKey:
		return ed25519.VerifyWithOptions(pub, d, sig, &ed25519.Options{Hash: h}) == nil
	}
	return false
}

// Verify checks a signature (either form) over msg. It reports false for a
// signature that does not verify, and an error for malformed input or a
// version that may not be used.
func (k *KMS) Verify(ctx context.Context, name string, msg, signature []byte, o SignOptions) (bool, error) {
	n, sig, err := ParseCiphertext(signature)
	if err != nil {
		return false, err
	}
	if err := k.begin(); err != nil {
		return false, err
	}
	defer k.end()
	e, v, err := k.use(ctx, name, purposeSign, opConsume, n)
	if err != nil {
		return false, err
	}
	h, err := o.hash(e.ti, e.meta.Type)
	if err != nil {
		return false, err
	}
	d, err := digest(h, msg, o.Prehashed)
	if err != nil {
		return false, err
	}
	v.use.decrypts.Add(1)
	return verifySig(v.publicKey(), h, d, sig, o.Padding), nil
}

// HMAC returns a self-describing HMAC of msg under the named hmac key.
func (k *KMS) HMAC(ctx context.Context, name string, msg []byte, o SignOptions) ([]byte, error) {
	if err := k.begin(); err != nil {
		return nil, err
	}
	defer k.end()
	e, v, err := k.use(ctx, name, purposeHMAC, opProduce, o.Version)
	if err != nil {
		return nil, err
	}
	mac, err := v.hmac(e, msg, o)
	if err != nil {
		return nil, err
	}
	v.use.uses.Add(1)
	return append(appendHeader(make([]byte, 0, 6+len(mac)), v.n), mac...), nil
}

func (v *version) hmac(e *entry, msg []byte, o SignOptions) ([]byte, error) {
	if o.Prehashed {
		return nil, fmt.Errorf("%w: HMAC takes the message, not a digest", ErrInvalid)
	}
	h, err := o.hash(e.ti, e.meta.Type)
	if err != nil {
		return nil, err
	}
	m := hmac.New(h.New, v.hmacKey)
	m.Write(msg)
	return m.Sum(nil), nil
}

// VerifyHMAC checks an HMAC (either form) of msg, in constant time.
func (k *KMS) VerifyHMAC(ctx context.Context, name string, msg, mac []byte, o SignOptions) (bool, error) {
	n, tag, err := ParseCiphertext(mac)
	if err != nil {
		return false, err
	}
	if err := k.begin(); err != nil {
		return false, err
	}
	defer k.end()
	e, v, err := k.use(ctx, name, purposeHMAC, opConsume, n)
	if err != nil {
		return false, err
	}
	want, err := v.hmac(e, msg, o)
	if err != nil {
		return false, err
	}
	v.use.decrypts.Add(1)
	return hmac.Equal(want, tag), nil
}

// Signer returns a crypto.Signer for one version (0: the latest at the
// time of the call) of a sign key. Its private key stays in the KMS: Sign
// asks the KMS, which fails while sealed.
func (k *KMS) Signer(ctx context.Context, name string, version int) (crypto.Signer, error) {
	if err := k.begin(); err != nil {
		return nil, err
	}
	defer k.end()
	_, v, err := k.use(ctx, name, purposeSign, opProduce, version)
	if err != nil {
		return nil, err
	}
	return &signer{k: k, name: name, version: v.n, pub: v.publicKey()}, nil
}

type signer struct {
	k       *KMS
	name    string
	version int
	pub     crypto.PublicKey
}

var _ crypto.Signer = (*signer)(nil)

func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest as crypto.Signer says: opts.HashFunc() names the hash
// the digest was made with (0 for Ed25519's whole message), *rsa.PSSOptions
// asks for PSS, *ed25519.Options with SHA-512 for Ed25519ph. rand is
// ignored: the KMS uses crypto/rand.
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	o := SignOptions{Version: s.version, Padding: PaddingPKCS1v15}
	if opts != nil {
		o.Hash = opts.HashFunc()
	}
	o.Prehashed = o.Hash != 0
	if _, ok := opts.(*rsa.PSSOptions); ok {
		o.Padding = PaddingPSS
	}
	if _, ok := s.pub.(ed25519.PublicKey); !ok && o.Hash == 0 {
		return nil, fmt.Errorf("%w: signer: a hash is required", ErrInvalid)
	}
	_, sig, err := s.k.signRaw(context.Background(), s.name, digest, o)
	return sig, err
}
