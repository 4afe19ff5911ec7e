// Package subkey implements aes256-gcm96-hkdf: AES-256-GCM under subkeys
// derived from one 256-bit key, which lifts the 2^32-message limit that
// random 96-bit nonces put on a single AES-GCM key.
//
// A sealer picks a random 128-bit salt, derives
//
//	subkey = HKDF-SHA256(secret = key, salt = salt, info = Info, length 32)
//
// and seals at most MaxPerSubkey messages under it with random 96-bit nonces
// before it picks a new salt. A sealed message is
//
//	salt (16) || nonce (12) || AES-256-GCM(subkey, nonce, plaintext, ad)
//
// Why this bound: with q messages under one subkey the chance of a repeated
// nonce is below q^2/2^97, 2^-57 for q = 2^20; it stays below 2^-32 until
// 2^25 subkeys, that is 2^45 messages under one key. Salts repeat with
// probability below s^2/2^129 for s subkeys. The derivation costs one HKDF
// per 2^20 messages, so sealing costs what plain AES-GCM costs.
//
// Opening derives the subkey from the salt in the message; recently used
// subkeys are cached.
package subkey

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"sync/atomic"
)

// Sizes of the parts of a sealed message.
const (
	KeySize   = 32
	SaltSize  = 16
	NonceSize = 12
	TagSize   = 16
	// Overhead is how much longer a sealed message is than its plaintext.
	Overhead = SaltSize + NonceSize + TagSize
)

// MaxPerSubkey is how many messages are sealed under one subkey.
const MaxPerSubkey = 1 << 20

// Info is the HKDF info string; it names the construction and its version.
const Info = "custos kms aes256-gcm96-hkdf v1 subkey"

// cacheSize bounds the subkeys kept for opening.
const cacheSize = 256

var (
	// ErrOpen is returned for any message that does not authenticate.
	ErrOpen = errors.New("subkey: message authentication failed")
	// ErrZeroed is returned after Zero.
	ErrZeroed = errors.New("subkey: key was zeroed")
)

type epoch struct {
	salt [SaltSize]byte
	aead cipher.AEAD
	used atomic.Uint64
}

// AEAD seals and opens messages under one key. It is safe for concurrent use.
type AEAD struct {
	cur atomic.Pointer[epoch]

	mu    sync.Mutex // guards key and cache, serialises derivation
	key   []byte
	cache map[[SaltSize]byte]cipher.AEAD
}

// New returns an AEAD for a 32-byte key; it keeps its own copy of key.
func New(key []byte) (*AEAD, error) {
	if len(key) != KeySize {
		return nil, errors.New("subkey: key must be 32 bytes")
	}
	return &AEAD{
		key:   append([]byte(nil), key...),
		cache: make(map[[SaltSize]byte]cipher.AEAD),
	}, nil
}

// Seal appends salt || nonce || ciphertext || tag to dst.
func (a *AEAD) Seal(dst, plaintext, ad []byte) ([]byte, error) {
	e := a.cur.Load()
	if e == nil || e.used.Add(1) > MaxPerSubkey {
		var err error
		if e, err = a.nextEpoch(e); err != nil {
			return nil, err
		}
	}
	ret, out := sliceForAppend(dst, SaltSize+NonceSize+len(plaintext)+TagSize)
	copy(out, e.salt[:])
	nonce := out[SaltSize : SaltSize+NonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	e.aead.Seal(out[SaltSize+NonceSize:SaltSize+NonceSize], nonce, plaintext, ad)
	return ret, nil
}

// nextEpoch replaces old (which is used up, or nil) with a fresh subkey and
// returns an epoch with room for one more message, already counted.
func (a *AEAD) nextEpoch(old *epoch) (*epoch, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.key == nil {
		return nil, ErrZeroed
	}
	if e := a.cur.Load(); e != old && e.used.Add(1) <= MaxPerSubkey {
		return e, nil // another goroutine got there first
	}
	e := &epoch{}
	if _, err := rand.Read(e.salt[:]); err != nil {
		return nil, err
	}
	aead, err := a.derive(e.salt[:])
	if err != nil {
		return nil, err
	}
	e.aead = aead
	e.used.Store(1)
	a.cur.Store(e)
	return e, nil
}

// Open decrypts a message made by Seal and appends the plaintext to dst.
func (a *AEAD) Open(dst, msg, ad []byte) ([]byte, error) {
	if len(msg) < Overhead {
		return nil, ErrOpen
	}
	var salt [SaltSize]byte
	copy(salt[:], msg)
	aead, err := a.opener(salt)
	if err != nil {
		return nil, err
	}
	out, err := aead.Open(dst, msg[SaltSize:SaltSize+NonceSize], msg[SaltSize+NonceSize:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

func (a *AEAD) opener(salt [SaltSize]byte) (cipher.AEAD, error) {
	if e := a.cur.Load(); e != nil && e.salt == salt {
		return e.aead, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.key == nil {
		return nil, ErrZeroed
	}
	if aead, ok := a.cache[salt]; ok {
		return aead, nil
	}
	aead, err := a.derive(salt[:])
	if err != nil {
		return nil, err
	}
	if len(a.cache) >= cacheSize {
		for k := range a.cache { // evict an arbitrary entry
			delete(a.cache, k)
			break
		}
	}
	a.cache[salt] = aead
	return aead, nil
}

// derive must be called with a.mu held.
func (a *AEAD) derive(salt []byte) (cipher.AEAD, error) {
	sub, err := hkdf.Key(sha256.New, a.key, salt, Info, KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(sub)
	block, err := aes.NewCipher(sub)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Zero overwrites the key and drops every subkey. Later calls fail with
// ErrZeroed. (The AES key schedules inside crypto/aes cannot be overwritten;
// they become unreachable.)
func (a *AEAD) Zero() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.key)
	a.key = nil
	clear(a.cache)
	a.cur.Store(nil)
}

// sliceForAppend extends in by n bytes, returning the whole slice and the new
// tail (the idiom of crypto/cipher).
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	return head, head[len(in):]
}
