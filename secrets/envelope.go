package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/custos-pki/custos/kms"
)

// Envelope: a version's data is sealed with AES-256-GCM under a data key
// made for it alone; the data key, wrapped by the mount's kms key, is kept
// in the secret's metadata record. Associated data:
//
//	data key: "custos/secrets/key/v1"   || lp(mount ID) || lp(path) || lp(secret ID) || version (8)
//	value:    "custos/secrets/value/v1" || lp(mount ID) || lp(secret ID) || version (8)
//
// The wrapped key is bound to the path, so a record copied to another path
// does not open; a move rewraps the keys and leaves the values in place.
const nonceSize = 12

func lp(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

func keyAD(mountID, path, secretID string, v int) []byte {
	const prefix = "custos/secrets/key/v1"
	ad := append(make([]byte, 0, len(prefix)+12+len(mountID)+len(path)+len(secretID)+8), prefix...)
	ad = lp(ad, mountID)
	ad = lp(ad, path)
	ad = lp(ad, secretID)
	return binary.BigEndian.AppendUint64(ad, uint64(v))
}

func valueAD(mountID, secretID string, v int) []byte {
	const prefix = "custos/secrets/value/v1"
	ad := append(make([]byte, 0, len(prefix)+8+len(mountID)+len(secretID)+8), prefix...)
	ad = lp(ad, mountID)
	ad = lp(ad, secretID)
	return binary.BigEndian.AppendUint64(ad, uint64(v))
}

// seal encrypts version v of the secret rec at path under a fresh data key
// and returns the wrapped key and the sealed value.
func (s *Store) seal(ctx context.Context, m *mountRec, path string, rec *record, v int, data []byte) (wrapped, sealed []byte, err error) {
	dk, err := s.keys.GenerateDataKey(ctx, m.Key, 256, true, kms.CryptOptions{AD: keyAD(m.ID, path, rec.ID, v)})
	if err != nil {
		return nil, nil, fmt.Errorf("data key: %w", err)
	}
	defer clear(dk.Plaintext)
	aead, err := newAEAD(dk.Plaintext)
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, nonceSize, nonceSize+len(data)+aead.Overhead())
	rand.Read(out)
	return dk.Ciphertext, aead.Seal(out, out, data, valueAD(m.ID, rec.ID, v)), nil
}

// open decrypts version v's sealed value, read for this call alone: into
// its own buffer.
func (s *Store) open(ctx context.Context, m *mountRec, path string, rec *record, v *versionRec, sealed []byte) ([]byte, error) {
	dk, err := s.keys.Decrypt(ctx, m.Key, v.Key, kms.CryptOptions{AD: keyAD(m.ID, path, rec.ID, v.Version)})
	if errors.Is(err, kms.ErrDecrypt) || errors.Is(err, kms.ErrMalformed) {
		return nil, fmt.Errorf("%w: %q version %d: data key does not open", kms.ErrCorrupt, path, v.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	defer clear(dk)
	aead, err := newAEAD(dk)
	if err != nil {
		return nil, err
	}
	if len(sealed) < nonceSize+aead.Overhead() {
		return nil, fmt.Errorf("%w: %q version %d: value too short", kms.ErrCorrupt, path, v.Version)
	}
	// sealed was read for this call alone: it is decrypted in place.
	pt, err := aead.Open(sealed[nonceSize:nonceSize], sealed[:nonceSize], sealed[nonceSize:], valueAD(m.ID, rec.ID, v.Version))
	if err != nil {
		return nil, fmt.Errorf("%w: %q version %d: value does not open", kms.ErrCorrupt, path, v.Version)
	}
	return pt[:len(pt):len(pt)], nil
}

// rewrap moves version v's data key from path from to path to.
func (s *Store) rewrap(ctx context.Context, m *mountRec, from, to string, rec *record, v *versionRec) ([]byte, error) {
	dk, err := s.keys.Decrypt(ctx, m.Key, v.Key, kms.CryptOptions{AD: keyAD(m.ID, from, rec.ID, v.Version)})
	if err != nil {
		return nil, fmt.Errorf("%q version %d: unwrap data key: %w", from, v.Version, err)
	}
	defer clear(dk)
	return s.keys.Encrypt(ctx, m.Key, dk, kms.CryptOptions{AD: keyAD(m.ID, to, rec.ID, v.Version)})
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
