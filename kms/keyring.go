package kms

import (
	"bytes"
	"context"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// keyring holds the barrier's terms. It is immutable once installed: a
// rotation or reload installs a new one. Its bytes are read only under
// Barrier.mu (read lock) and zeroed only under the write lock.
type keyring struct {
	active uint32
	terms  map[uint32]*term
	// casKey keys the MAC that lets compare-and-swap compare plaintexts. It
	// never changes, so a MAC stays valid when the active term rotates.
	casKey []byte
}

type term struct {
	key     []byte
	created time.Time
	aead    cipher.AEAD
}

// keyringDoc is the keyring as stored, encrypted under the root key.
type keyringDoc struct {
	Active uint32    `json:"active"`
	Terms  []termDoc `json:"terms"`
	CASKey []byte    `json:"cas_key"`
}

type termDoc struct {
	Term    uint32    `json:"term"`
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
}

// keyringRecord is stored in the clear in tableCore.
type keyringRecord struct {
	RootGen uint32 `json:"root_gen"`
	Keyring []byte `json:"keyring"`
}

// upgradeRecord carries the newest root key encrypted under the one before,
// so that nodes unsealed before a root rotation can follow it.
type upgradeRecord struct {
	RootGen uint32 `json:"root_gen"` // generation of the key inside
	RootKey []byte `json:"root_key"`
}

func newKeyring(now time.Time) (*keyring, error) {
	kr := &keyring{terms: map[uint32]*term{}, casKey: randomKey()}
	if err := kr.addTerm(1, randomKey(), now.UTC()); err != nil {
		return nil, err
	}
	kr.active = 1
	return kr, nil
}

func (kr *keyring) addTerm(n uint32, key []byte, created time.Time) error {
	if len(key) != keySize || n == 0 || kr.terms[n] != nil {
		return fmt.Errorf("%w: keyring term %d", ErrCorrupt, n)
	}
	aead, err := newGCM(key)
	if err != nil {
		return err
	}
	kr.terms[n] = &term{key: key, created: created, aead: aead}
	return nil
}

func (kr *keyring) maxTerm() uint32 {
	var m uint32
	for n := range kr.terms {
		m = max(m, n)
	}
	return m
}

func (kr *keyring) zero() {
	for _, t := range kr.terms {
		clear(t.key)
	}
	clear(kr.casKey)
}

// record returns the stored form of kr, encrypted under root.
func (kr *keyring) record(root []byte, gen uint32) ([]byte, error) {
	doc := keyringDoc{Active: kr.active, CASKey: kr.casKey}
	for n, t := range kr.terms {
		doc.Terms = append(doc.Terms, termDoc{Term: n, Key: t.key, Created: t.created})
	}
	plain, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	sealed, err := wrap(root, plain, adKeyring(gen))
	if err != nil {
		return nil, err
	}
	return json.Marshal(keyringRecord{RootGen: gen, Keyring: sealed})
}

// decodeKeyring opens a stored keyring with root (of generation gen). If the
// root key was rotated once since, it follows the upgrade record and returns
// the new root key and generation.
func (b *Barrier) decodeKeyring(ctx context.Context, raw, root []byte, gen uint32) (*keyring, []byte, uint32, error) {
	var rec keyringRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, nil, 0, fmt.Errorf("%w: keyring record", ErrCorrupt)
	}
	root = bytes.Clone(root)
	if rec.RootGen == gen+1 {
		upRaw, err := b.store.Get(ctx, tableCore, recRootUpgrade)
		if err != nil {
			clear(root)
			return nil, nil, 0, fmt.Errorf("read root upgrade: %w", err)
		}
		var up upgradeRecord
		if err := json.Unmarshal(upRaw, &up); err != nil || up.RootGen != rec.RootGen {
			clear(root)
			return nil, nil, 0, fmt.Errorf("%w: root upgrade record", ErrCorrupt)
		}
		next, err := unwrap(root, up.RootKey, adUpgrade(up.RootGen))
		clear(root)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("%w: root upgrade record", ErrCorrupt)
		}
		root, gen = next, rec.RootGen
	}
	if rec.RootGen != gen {
		clear(root)
		return nil, nil, 0, fmt.Errorf("%w: the root key was rotated more than once since this node unsealed: unseal it again", ErrSealed)
	}
	plain, err := unwrap(root, rec.Keyring, adKeyring(gen))
	if err != nil {
		clear(root)
		return nil, nil, 0, fmt.Errorf("%w: keyring", ErrCorrupt)
	}
	defer clear(plain)
	var doc keyringDoc
	if err := json.Unmarshal(plain, &doc); err != nil || len(doc.CASKey) != keySize {
		clear(root)
		return nil, nil, 0, fmt.Errorf("%w: keyring", ErrCorrupt)
	}
	kr := &keyring{active: doc.Active, terms: map[uint32]*term{}, casKey: doc.CASKey}
	for _, t := range doc.Terms {
		if err := kr.addTerm(t.Term, t.Key, t.Created); err != nil {
			kr.zero()
			clear(root)
			return nil, nil, 0, err
		}
	}
	if kr.terms[kr.active] == nil {
		kr.zero()
		clear(root)
		return nil, nil, 0, fmt.Errorf("%w: keyring has no active term", ErrCorrupt)
	}
	return kr, root, gen, nil
}

// loadKeyring reads the stored keyring and opens it with root.
func (b *Barrier) loadKeyring(ctx context.Context, root []byte, gen uint32) (*keyring, []byte, uint32, error) {
	raw, err := b.store.Get(ctx, tableCore, recKeyring)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read keyring: %w", err)
	}
	return b.decodeKeyring(ctx, raw, root, gen)
}

// rootSnapshot copies the root key and its generation, or fails if sealed.
func (b *Barrier) rootSnapshot() ([]byte, uint32, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.sealed {
		return nil, 0, ErrSealed
	}
	return bytes.Clone(b.root), b.rootGen, nil
}

// install replaces the keyring (and root key, if it moved on) of an
// unsealed barrier.
func (b *Barrier) install(kr *keyring, root []byte, gen uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sealed {
		kr.zero()
		return ErrSealed
	}
	b.kr.zero()
	b.kr = kr
	if gen != b.rootGen {
		clear(b.root)
		b.root, b.rootGen = bytes.Clone(root), gen
	}
	return nil
}

// ReloadKeyring re-reads the keyring from storage. Call it when another node
// may have rotated the keyring or the root key; the barrier also calls it by
// itself, once, when it meets a value written under a term it does not know.
func (b *Barrier) ReloadKeyring(ctx context.Context) error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	return b.reloadLocked(ctx)
}

func (b *Barrier) reloadLocked(ctx context.Context) error {
	root, gen, err := b.rootSnapshot()
	if err != nil {
		return err
	}
	defer clear(root)
	kr, newRoot, newGen, err := b.loadKeyring(ctx, root, gen)
	if errors.Is(err, ErrSealed) {
		// This node can no longer follow the root key: seal now. The hooks
		// run apart, because the reload may come from inside a KMS
		// operation, which the KMS hook waits for.
		b.mu.Lock()
		b.zeroLocked()
		b.mu.Unlock()
		go b.runSealHooks()
	}
	if err != nil {
		return fmt.Errorf("reload keyring: %w", err)
	}
	defer clear(newRoot)
	return b.install(kr, newRoot, newGen)
}

// reloadForTerm reloads the keyring unless term has become known meanwhile.
func (b *Barrier) reloadForTerm(ctx context.Context, n uint32) error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	b.mu.RLock()
	known := !b.sealed && b.kr.terms[n] != nil
	b.mu.RUnlock()
	if known {
		return nil
	}
	return b.reloadLocked(ctx)
}

// RotateKeyring adds a new term to the keyring and makes it the one new
// values are encrypted under; values under older terms still decrypt. It
// returns the new term. Other nodes keep encrypting under the old term until
// they reload the keyring (they do so on reading a value under the new one,
// and before reserving more encryptions).
func (b *Barrier) RotateKeyring(ctx context.Context) (uint32, error) {
	n, _, err := b.rotateKeyring(ctx, nil)
	return n, err
}

// rotateKeyring adds a term to the stored keyring if due (nil: always)
// says so of it, and installs the result. It returns the active term and
// whether it rotated.
func (b *Barrier) rotateKeyring(ctx context.Context, due func(*keyring) bool) (uint32, bool, error) {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	for range 5 {
		root, gen, err := b.rootSnapshot()
		if err != nil {
			return 0, false, err
		}
		raw, err := b.store.Get(ctx, tableCore, recKeyring)
		if err != nil {
			clear(root)
			return 0, false, fmt.Errorf("rotate keyring: %w", err)
		}
		kr, newRoot, newGen, err := b.decodeKeyring(ctx, raw, root, gen)
		clear(root)
		if err != nil {
			return 0, false, fmt.Errorf("rotate keyring: %w", err)
		}
		if due != nil && !due(kr) {
			n := kr.active
			err := b.install(kr, newRoot, newGen)
			clear(newRoot)
			return n, false, err
		}
		n := kr.maxTerm() + 1
		if err := kr.addTerm(n, randomKey(), b.clock.Now().UTC()); err != nil {
			kr.zero()
			clear(newRoot)
			return 0, false, err
		}
		kr.active = n
		newRaw, err := kr.record(newRoot, newGen)
		if err != nil {
			kr.zero()
			clear(newRoot)
			return 0, false, err
		}
		swapped, _, err := b.store.CompareAndSwap(ctx, tableCore, recKeyring, raw, newRaw)
		if err == nil && swapped {
			err = b.install(kr, newRoot, newGen)
			clear(newRoot)
			return n, true, err
		}
		kr.zero()
		clear(newRoot)
		if err != nil {
			return 0, false, fmt.Errorf("rotate keyring: %w", err)
		}
	}
	return 0, false, fmt.Errorf("%w: rotate keyring: keyring kept changing", ErrConflict)
}

// keyringOps returns the operation that stores the keyring under newRoot,
// and the keyring.
func (b *Barrier) keyringOps(ctx context.Context, root []byte, gen uint32, newRoot []byte, newGen uint32) ([]raftstore.Op, *keyring, error) {
	raw, err := b.store.Get(ctx, tableCore, recKeyring)
	if err != nil {
		return nil, nil, err
	}
	kr, cur, curGen, err := b.decodeKeyring(ctx, raw, root, gen)
	if err != nil {
		return nil, nil, err
	}
	defer clear(cur)
	if curGen != gen {
		kr.zero()
		return nil, nil, fmt.Errorf("%w: root key changed meanwhile", ErrConflict)
	}
	newRaw, err := kr.record(newRoot, newGen)
	if err != nil {
		kr.zero()
		return nil, nil, err
	}
	return []raftstore.Op{{Kind: raftstore.OpCAS, Table: tableCore, Key: recKeyring, Old: raw, Value: newRaw}}, kr, nil
}
