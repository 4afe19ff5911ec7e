package kms

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/custos-pki/custos/kms/internal/subkey"
)

// CryptOptions are the options of encrypt, decrypt, rewrap and data keys.
type CryptOptions struct {
	// AD is associated data: authenticated, not encrypted. Decrypt needs the
	// same AD that encrypt was given.
	AD []byte
	// Version selects the key version that encrypts (0: the latest). Decrypt
	// ignores it: the ciphertext names its version.
	Version int
}

// MaxRandomBytes caps one Random call.
const MaxRandomBytes = 1 << 16

const gcmNonceSize = 12

// Encrypt encrypts plaintext under the named key and returns a ciphertext
// in binary form (FormatCiphertext gives the text form). It reads storage
// only when the key is not cached.
func (k *KMS) Encrypt(ctx context.Context, name string, plaintext []byte, o CryptOptions) ([]byte, error) {
	if err := k.begin(); err != nil {
		return nil, err
	}
	defer k.end()
	_, v, err := k.use(ctx, name, purposeEncrypt, opProduce, o.Version)
	if err != nil {
		return nil, err
	}
	return v.encrypt(plaintext, o.AD)
}

func (v *version) encrypt(plaintext, ad []byte) ([]byte, error) {
	out := appendHeader(make([]byte, 0, 6+len(plaintext)+subkey.Overhead), v.n)
	var err error
	if v.sub != nil {
		if out, err = v.sub.Seal(out, plaintext, ad); err != nil {
			return nil, err
		}
	} else {
		off := len(out)
		out = out[:off+gcmNonceSize]
		rand.Read(out[off:])
		out = v.aead.Seal(out, out[off:], plaintext, ad)
	}
	v.use.uses.Add(1)
	return out, nil
}

// Decrypt decrypts a ciphertext (either form) made by the named key. A
// ciphertext that was altered, truncated, made by another key or with other
// associated data fails with ErrDecrypt or ErrMalformed; one whose version
// is below the minimum, disabled or destroyed fails with
// ErrVersionUnavailable.
func (k *KMS) Decrypt(ctx context.Context, name string, ciphertext []byte, o CryptOptions) ([]byte, error) {
	n, body, err := ParseCiphertext(ciphertext)
	if err != nil {
		return nil, err
	}
	if err := k.begin(); err != nil {
		return nil, err
	}
	defer k.end()
	_, v, err := k.use(ctx, name, purposeEncrypt, opConsume, n)
	if err != nil {
		return nil, err
	}
	return v.decrypt(body, o.AD)
}

func (v *version) decrypt(body, ad []byte) ([]byte, error) {
	var pt []byte
	var err error
	if v.sub != nil {
		pt, err = v.sub.Open(nil, body, ad)
	} else if len(body) < gcmNonceSize+v.aead.Overhead() {
		err = ErrDecrypt
	} else {
		pt, err = v.aead.Open(nil, body[:gcmNonceSize], body[gcmNonceSize:], ad)
	}
	if err != nil {
		return nil, ErrDecrypt
	}
	if pt == nil {
		pt = []byte{}
	}
	v.use.decrypts.Add(1)
	return pt, nil
}

// Rewrap decrypts a ciphertext and encrypts the plaintext again under the
// latest version (or o.Version), without returning the plaintext.
func (k *KMS) Rewrap(ctx context.Context, name string, ciphertext []byte, o CryptOptions) ([]byte, error) {
	n, body, err := ParseCiphertext(ciphertext)
	if err != nil {
		return nil, err
	}
	if err := k.begin(); err != nil {
		return nil, err
	}
	defer k.end()
	_, from, err := k.use(ctx, name, purposeEncrypt, opConsume, n)
	if err != nil {
		return nil, err
	}
	_, to, err := k.use(ctx, name, purposeEncrypt, opProduce, o.Version)
	if err != nil {
		return nil, err
	}
	pt, err := from.decrypt(body, o.AD)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	return to.encrypt(pt, o.AD)
}

// DataKey is a new random key for envelope encryption: Ciphertext is it
// encrypted under a KMS key; Plaintext is nil when only the wrapped form
// was asked for.
type DataKey struct {
	Plaintext  []byte
	Ciphertext []byte
}

// GenerateDataKey makes a random data key of bits (128, 256 or 512; 0 means
// 256) and returns it encrypted under the named key, and in the clear if
// withPlaintext is set.
func (k *KMS) GenerateDataKey(ctx context.Context, name string, bits int, withPlaintext bool, o CryptOptions) (DataKey, error) {
	if bits == 0 {
		bits = 256
	}
	if bits != 128 && bits != 256 && bits != 512 {
		return DataKey{}, fmt.Errorf("%w: data key bits must be 128, 256 or 512", ErrInvalid)
	}
	if err := k.begin(); err != nil {
		return DataKey{}, err
	}
	defer k.end()
	_, v, err := k.use(ctx, name, purposeEncrypt, opProduce, o.Version)
	if err != nil {
		return DataKey{}, err
	}
	dk := make([]byte, bits/8)
	rand.Read(dk)
	ct, err := v.encrypt(dk, o.AD)
	if err != nil {
		clear(dk)
		return DataKey{}, err
	}
	if !withPlaintext {
		clear(dk)
		dk = nil
	}
	return DataKey{Plaintext: dk, Ciphertext: ct}, nil
}

// Random returns n bytes from crypto/rand (1 to MaxRandomBytes). It needs
// no key and works while sealed.
func (k *KMS) Random(n int) ([]byte, error) {
	if n < 1 || n > MaxRandomBytes {
		return nil, fmt.Errorf("%w: random byte count must be 1 to %d", ErrInvalid, MaxRandomBytes)
	}
	b := make([]byte, n)
	rand.Read(b)
	return b, nil
}
