package kms

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-pki/custos/kms/internal/shamir"
	"github.com/custos-pki/custos/raftstore"
)

// Seal types.
const (
	SealShamir  = "shamir"
	SealKeyFile = "keyfile"
)

// keySize is the size of every symmetric key of the hierarchy.
const keySize = 32

// SealConfig says how the unseal key is kept: split into Shares shares of
// which Threshold unseal, or (KeyFile set) in a 32-byte file on each node.
type SealConfig struct {
	Shares    int
	Threshold int
	// KeyFile, when set, is the path of the unseal key file (see
	// GenerateKeyFile); Shares and Threshold must then be zero. The path is
	// not stored: each node is told where its copy is.
	KeyFile string
}

// DefaultSealConfig is 5 shares, any 3 of which unseal.
func DefaultSealConfig() SealConfig { return SealConfig{Shares: 5, Threshold: 3} }

// Validate checks the fields against each other.
func (c SealConfig) Validate() error {
	if c.KeyFile != "" {
		if c.Shares != 0 || c.Threshold != 0 {
			return fmt.Errorf("%w: seal config: Shares and Threshold must be 0 with KeyFile", ErrInvalid)
		}
		return nil
	}
	switch {
	case c.Shares < 1 || c.Shares > shamir.MaxShares:
		return fmt.Errorf("%w: seal config: Shares must be 1 to 255, got %d", ErrInvalid, c.Shares)
	case c.Threshold < 1 || c.Threshold > c.Shares:
		return fmt.Errorf("%w: seal config: Threshold must be 1 to Shares, got %d", ErrInvalid, c.Threshold)
	case c.Shares > 1 && c.Threshold < 2:
		return fmt.Errorf("%w: seal config: Threshold must be at least 2 when Shares > 1", ErrInvalid)
	}
	return nil
}

// UnsealKey proves possession of the current unseal key, for Rekey and
// RotateRootKey: at least the threshold of shares, or the key file.
type UnsealKey struct {
	Shares  [][]byte
	KeyFile string
}

// InitResult is what Init hands out once. Shares is nil for a key file seal.
type InitResult struct {
	Shares [][]byte
}

// SealStatus describes the seal of this node.
type SealStatus struct {
	Initialized bool
	Sealed      bool
	Type        string // SealShamir or SealKeyFile
	Shares      int
	Threshold   int
	Progress    int    // shares given so far towards unsealing
	RootGen     uint32 // generation of the root key
	Term        uint32 // active keyring term; 0 while sealed
}

// sealRecord is stored in the clear in tableCore: the root key is encrypted
// under the unseal key.
type sealRecord struct {
	Version   int       `json:"version"`
	Type      string    `json:"type"`
	Shares    int       `json:"shares,omitempty"`
	Threshold int       `json:"threshold,omitempty"`
	RootGen   uint32    `json:"root_gen"`
	RootKey   []byte    `json:"root_key"`
	Created   time.Time `json:"created"`
}

// Barrier holds the seal and encrypts every value it writes to storage.
// It is safe for concurrent use.
type Barrier struct {
	store Storage
	clock Clock

	mu       sync.RWMutex
	sealed   bool
	isSealed atomic.Bool // mirrors sealed, for the lock-free Sealed
	root     []byte
	rootGen  uint32
	kr       *keyring
	progress [][]byte

	reloadMu sync.Mutex // one keyring reload at a time
	leaseMu  sync.Mutex // one reservation of encryptions at a time
	lease    atomic.Pointer[lease]
	hookMu   sync.Mutex
	onSeal   []sealHook
	hookSeq  uint64
}

// NewBarrier returns a sealed barrier over store. clock may be nil (wall
// clock). A value store.Get returns must be the caller's to change, as
// raftstore's are: the barrier decrypts it in place.
func NewBarrier(store Storage, clock Clock) (*Barrier, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: NewBarrier: nil store", ErrInvalid)
	}
	if clock == nil {
		clock = SystemClock()
	}
	b := &Barrier{store: store, clock: clock, sealed: true}
	b.isSealed.Store(true)
	return b, nil
}

// Init creates the root key and the keyring, and stores them encrypted. It
// returns the unseal key shares (once: they are not kept) and leaves the
// barrier sealed. It fails with ErrAlreadyInitialized the second time, on
// any node.
func (b *Barrier) Init(ctx context.Context, cfg SealConfig) (*InitResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := b.createTables(ctx); err != nil {
		return nil, err
	}
	rec := &sealRecord{Version: 1, Type: SealShamir, Shares: cfg.Shares, Threshold: cfg.Threshold, RootGen: 1, Created: b.clock.Now().UTC()}
	var unsealKey []byte
	if cfg.KeyFile != "" {
		rec.Type, rec.Shares, rec.Threshold = SealKeyFile, 0, 0
		k, err := readKeyFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
		unsealKey = k
	} else {
		unsealKey = randomKey()
	}
	defer clear(unsealKey)
	root := randomKey()
	defer clear(root)
	kr, err := newKeyring(b.clock.Now())
	if err != nil {
		return nil, err
	}
	defer kr.zero()
	if rec.RootKey, err = wrap(unsealKey, root, adRoot(1)); err != nil {
		return nil, err
	}
	sealRaw, _ := json.Marshal(rec)
	krRaw, err := kr.record(root, 1)
	if err != nil {
		return nil, err
	}
	res, err := b.store.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpCAS, Table: tableCore, Key: recSeal, Old: nil, Value: sealRaw},
		{Kind: raftstore.OpPut, Table: tableCore, Key: recKeyring, Value: krRaw},
	})
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if !res.Succeeded {
		return nil, ErrAlreadyInitialized
	}
	out := &InitResult{}
	if rec.Type == SealShamir {
		if out.Shares, err = shamir.Split(unsealKey, cfg.Shares, cfg.Threshold); err != nil {
			return nil, fmt.Errorf("init: split: %w", err)
		}
	}
	return out, nil
}

func (b *Barrier) createTables(ctx context.Context) error {
	for _, t := range []string{tableCore, tableKeys, tableKeyMat} {
		if err := b.store.CreateTable(ctx, t); err != nil {
			return fmt.Errorf("create table %s: %w", t, err)
		}
	}
	return nil
}

// readSeal returns the seal record and its stored bytes.
func (b *Barrier) readSeal(ctx context.Context) (*sealRecord, []byte, error) {
	raw, err := b.store.Get(ctx, tableCore, recSeal)
	if errors.Is(err, raftstore.ErrNotFound) || errors.Is(err, raftstore.ErrUnknownTable) {
		return nil, nil, ErrNotInitialized
	}
	if err != nil {
		return nil, nil, err
	}
	var rec sealRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Version != 1 {
		return nil, nil, fmt.Errorf("%w: seal record", ErrCorrupt)
	}
	return &rec, raw, nil
}

// Status reports whether the KMS is initialised and this node unsealed.
func (b *Barrier) Status(ctx context.Context) (SealStatus, error) {
	rec, _, err := b.readSeal(ctx)
	if errors.Is(err, ErrNotInitialized) {
		return SealStatus{Sealed: true}, nil
	}
	if err != nil {
		return SealStatus{}, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	st := SealStatus{Initialized: true, Sealed: b.sealed, Type: rec.Type, Shares: rec.Shares,
		Threshold: rec.Threshold, Progress: len(b.progress), RootGen: rec.RootGen}
	if !b.sealed {
		st.Term = b.kr.active
	}
	return st, nil
}

// Sealed reports whether this node is sealed, without touching storage.
func (b *Barrier) Sealed() bool { return b.isSealed.Load() }

// Unseal adds one unseal key share. When the threshold is reached it
// recovers the root key and unseals; a wrong set of shares fails with
// ErrBadUnsealKey and starts the count again. Unsealing an unsealed barrier
// does nothing.
func (b *Barrier) Unseal(ctx context.Context, share []byte) (SealStatus, error) {
	rec, _, err := b.readSeal(ctx)
	if err != nil {
		return SealStatus{}, err
	}
	if rec.Type != SealShamir {
		return SealStatus{}, fmt.Errorf("%w: this KMS is sealed with a key file: use UnsealKeyFile", ErrInvalid)
	}
	b.mu.Lock()
	if !b.sealed {
		b.mu.Unlock()
		return b.Status(ctx)
	}
	if len(share) != keySize+shamir.ShareOverhead || share[keySize] == 0 {
		b.mu.Unlock()
		return SealStatus{}, fmt.Errorf("%w: unseal share must be %d bytes", ErrInvalid, keySize+shamir.ShareOverhead)
	}
	for _, p := range b.progress {
		if p[keySize] == share[keySize] {
			b.mu.Unlock()
			return SealStatus{}, fmt.Errorf("%w: this share was already given", ErrInvalid)
		}
	}
	b.progress = append(b.progress, bytes.Clone(share))
	if len(b.progress) < rec.Threshold {
		b.mu.Unlock()
		return b.Status(ctx)
	}
	shares := b.progress
	b.progress = nil
	b.mu.Unlock()

	key, err := shamir.Combine(shares)
	for _, s := range shares {
		clear(s)
	}
	if err != nil {
		return SealStatus{}, fmt.Errorf("%w: unseal: combine shares: %v", ErrInvalid, err)
	}
	defer clear(key)
	if err := b.unsealWith(ctx, rec, key); err != nil {
		return SealStatus{}, err
	}
	return b.Status(ctx)
}

// UnsealKeyFile unseals with the key file at path (auto-unseal).
func (b *Barrier) UnsealKeyFile(ctx context.Context, path string) error {
	rec, _, err := b.readSeal(ctx)
	if err != nil {
		return err
	}
	if rec.Type != SealKeyFile {
		return fmt.Errorf("%w: this KMS is sealed with shares: use Unseal", ErrInvalid)
	}
	if !b.Sealed() {
		return nil
	}
	key, err := readKeyFile(path)
	if err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	defer clear(key)
	return b.unsealWith(ctx, rec, key)
}

// ResetUnseal forgets the shares given so far.
func (b *Barrier) ResetUnseal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.progress {
		clear(s)
	}
	b.progress = nil
}

// unsealWith opens the root key with unsealKey, loads the keyring and
// unseals.
func (b *Barrier) unsealWith(ctx context.Context, rec *sealRecord, unsealKey []byte) error {
	root, err := unwrap(unsealKey, rec.RootKey, adRoot(rec.RootGen))
	if err != nil {
		return ErrBadUnsealKey
	}
	defer clear(root)
	if err := b.createTables(ctx); err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	kr, root2, gen, err := b.loadKeyring(ctx, root, rec.RootGen)
	if err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.sealed {
		kr.zero()
		clear(root2)
		return nil
	}
	b.root, b.rootGen, b.kr, b.sealed = root2, gen, kr, false
	b.isSealed.Store(false)
	return nil
}

// Seal zeroes the root key and the keyring in memory and tells the key
// manager to drop its keys. Everything that needs a key fails with
// ErrSealed until the next unseal.
func (b *Barrier) Seal() {
	b.mu.Lock()
	b.zeroLocked()
	b.mu.Unlock()
	b.runSealHooks()
}

func (b *Barrier) runSealHooks() {
	b.hookMu.Lock()
	hooks := append([]sealHook{}, b.onSeal...)
	b.hookMu.Unlock()
	for _, h := range hooks {
		h.f()
	}
}

func (b *Barrier) zeroLocked() {
	clear(b.root)
	b.root, b.rootGen = nil, 0
	if b.kr != nil {
		b.kr.zero()
		b.kr = nil
	}
	for _, s := range b.progress {
		clear(s)
	}
	b.progress = nil
	b.lease.Store(nil)
	b.sealed = true
	b.isSealed.Store(true)
}

type sealHook struct {
	id uint64
	f  func()
}

// addSealHook registers f to run after every Seal, until remove is called.
func (b *Barrier) addSealHook(f func()) (remove func()) {
	b.hookMu.Lock()
	defer b.hookMu.Unlock()
	b.hookSeq++
	id := b.hookSeq
	b.onSeal = append(b.onSeal, sealHook{id, f})
	return func() {
		b.hookMu.Lock()
		defer b.hookMu.Unlock()
		b.onSeal = slices.DeleteFunc(b.onSeal, func(h sealHook) bool { return h.id == id })
	}
}

// GenerateKeyFile writes a new unseal key file: 32 random bytes, mode 0600.
// It refuses to overwrite an existing file.
func GenerateKeyFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("generate key file: %w", err)
	}
	key := randomKey()
	defer clear(key)
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("generate key file: %w", err)
	}
	return nil
}

// readKeyFile reads an unseal key file, refusing one that group or others
// may read or write, or that does not hold exactly 32 bytes.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: key file: %v", ErrInvalid, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: key file: %v", ErrInvalid, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: key file %s is not a regular file", ErrInvalid, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o", ErrKeyFilePermissions, path, fi.Mode().Perm())
	}
	key := make([]byte, keySize+1)
	n, err := io.ReadFull(f, key)
	if n != keySize || !errors.Is(err, io.ErrUnexpectedEOF) {
		clear(key)
		return nil, fmt.Errorf("%w: key file %s must hold exactly %d bytes", ErrInvalid, path, keySize)
	}
	return key[:keySize], nil
}

// randomKey returns 32 bytes from crypto/rand (which never fails).
func randomKey() []byte {
	k := make([]byte, keySize)
	rand.Read(k)
	return k
}

// wrap encrypts plaintext under a 32-byte key with AES-256-GCM and a random
// nonce: nonce || ciphertext || tag.
func wrap(key, plaintext []byte, ad string) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, plaintext, []byte(ad)), nil
}

func unwrap(key, sealed []byte, ad string) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrDecrypt
	}
	n := aead.NonceSize()
	pt, err := aead.Open(nil, sealed[:n], sealed[n:], []byte(ad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func adRoot(gen uint32) string    { return fmt.Sprintf("custos/kms/root-key/%d", gen) }
func adKeyring(gen uint32) string { return fmt.Sprintf("custos/kms/keyring/%d", gen) }
func adUpgrade(gen uint32) string { return fmt.Sprintf("custos/kms/root-upgrade/%d", gen) }
