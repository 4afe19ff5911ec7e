package kms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// Config tunes the key manager. Start from DefaultConfig.
type Config struct {
	// Clock decides key ages, rotation and deletion dates.
	Clock Clock
	// CacheTTL bounds how long this node uses key metadata (versions,
	// minimum versions, states) read earlier before reading it again; a
	// change made on another node takes effect here within CacheTTL, or at
	// once when the server calls Invalidate.
	CacheTTL time.Duration
	// MaintenanceInterval is how often Run flushes use counters, rotates
	// keys that are due and deletes keys whose deletion date has passed.
	MaintenanceInterval time.Duration
	// MinDeletionWindow is the shortest wait ScheduleDeletion accepts;
	// DefaultDeletionWindow is the wait when none is given.
	MinDeletionWindow     time.Duration
	DefaultDeletionWindow time.Duration
	// MaxBatch caps the items of one Batch call.
	MaxBatch int
}

// DefaultConfig returns the configuration custos runs with.
func DefaultConfig() Config {
	return Config{
		Clock:                 SystemClock(),
		CacheTTL:              5 * time.Second,
		MaintenanceInterval:   time.Minute,
		MinDeletionWindow:     7 * 24 * time.Hour,
		DefaultDeletionWindow: 30 * 24 * time.Hour,
		MaxBatch:              1000,
	}
}

// Validate checks the fields against each other.
func (c Config) Validate() error {
	switch {
	case c.Clock == nil:
		return fmt.Errorf("%w: config: Clock is nil", ErrInvalid)
	case c.CacheTTL <= 0:
		return fmt.Errorf("%w: config: CacheTTL must be positive", ErrInvalid)
	case c.MaintenanceInterval <= 0:
		return fmt.Errorf("%w: config: MaintenanceInterval must be positive", ErrInvalid)
	case c.MinDeletionWindow < 0:
		return fmt.Errorf("%w: config: MinDeletionWindow is negative", ErrInvalid)
	case c.DefaultDeletionWindow < c.MinDeletionWindow:
		return fmt.Errorf("%w: config: DefaultDeletionWindow is below MinDeletionWindow", ErrInvalid)
	case c.MaxBatch < 1:
		return fmt.Errorf("%w: config: MaxBatch must be at least 1", ErrInvalid)
	}
	return nil
}

// KMS manages named keys and performs operations with them. Key material
// lives in storage only through the Barrier; in memory, loaded versions are
// cached per node and dropped when the barrier seals. Safe for concurrent use.
type KMS struct {
	b     *Barrier
	cfg   Config
	clock Clock

	// opMu is held for reading by every operation that uses key material and
	// for writing by the seal hook, which then drops and zeroes the cache.
	opMu sync.RWMutex

	cacheMu sync.RWMutex
	cache   map[string]*entry
	gen     atomic.Uint64 // bumped by Invalidate and seal: loads started before do not cache

	usage sync.Map // usageKey -> *usage

	removeHook func()
	closed     atomic.Bool
}

// New returns a key manager over an (initialised or not) barrier.
func New(b *Barrier, cfg Config) (*KMS, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: kms.New: nil barrier", ErrInvalid)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &KMS{b: b, cfg: cfg, clock: cfg.Clock, cache: map[string]*entry{}}
	k.removeHook = b.addSealHook(k.onSeal)
	return k, nil
}

// entry is the cached state of one key: its metadata as read at loaded and
// the versions loaded since.
type entry struct {
	meta   *keyMeta
	ti     typeInfo
	loaded time.Time

	mu   sync.RWMutex
	vers map[int]*version
}

func (e *entry) loadedVersion(n int) *version {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.vers[n]
}

// usageKey names one version of one key; id tells a key from an earlier
// key of the same name.
type usageKey struct {
	name, id string
	version  int
}

// usage counts the operations of one version on this node since the last
// flush to storage.
type usage struct {
	uses     atomic.Uint64 // encrypt, data key, sign, hmac
	decrypts atomic.Uint64 // decrypt, verify
}

func (k *KMS) counter(m *keyMeta, v int) *usage {
	u, _ := k.usage.LoadOrStore(usageKey{m.Name, m.ID, v}, &usage{})
	return u.(*usage)
}

func (k *KMS) onSeal() {
	k.opMu.Lock()
	defer k.opMu.Unlock()
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	k.gen.Add(1)
	for _, e := range k.cache {
		for _, v := range e.vers {
			v.zero()
		}
	}
	clear(k.cache)
}

// Invalidate drops the cached metadata of the named key (all keys if name
// is empty), so the next operation reads it from storage. The server calls
// it when it learns that another node changed a key.
func (k *KMS) Invalidate(name string) {
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	k.gen.Add(1)
	if name == "" {
		clear(k.cache)
		return
	}
	delete(k.cache, name)
}

// Close unregisters the key manager from its barrier and drops its cached
// keys; every later operation fails with ErrSealed. Call it when the key
// manager is replaced (on seal, or an unseal that is undone), so the
// barrier does not keep it alive.
func (k *KMS) Close() {
	if k.closed.Swap(true) {
		return
	}
	k.removeHook()
	k.onSeal()
}

// begin starts an operation that uses key material: it fails if sealed or
// closed, and otherwise holds opMu until end.
func (k *KMS) begin() error {
	k.opMu.RLock()
	if k.closed.Load() || k.b.Sealed() {
		k.opMu.RUnlock()
		return ErrSealed
	}
	return nil
}

func (k *KMS) end() { k.opMu.RUnlock() }

// entry returns the cached state of a key, reading it when it is missing or
// older than CacheTTL.
func (k *KMS) entry(ctx context.Context, name string) (*entry, error) {
	k.cacheMu.RLock()
	e := k.cache[name]
	k.cacheMu.RUnlock()
	if e != nil && k.clock.Now().Sub(e.loaded) < k.cfg.CacheTTL {
		return e, nil
	}
	return k.load(ctx, name)
}

// load reads a key's metadata. Versions already loaded and still usable
// carry over from the previous entry of the same key (same ID: not one
// deleted and created again under its name).
func (k *KMS) load(ctx context.Context, name string) (*entry, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	gen := k.gen.Load()
	m, _, err := k.readMeta(ctx, name)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			k.cacheMu.Lock()
			delete(k.cache, name)
			k.cacheMu.Unlock()
		}
		return nil, err
	}
	return k.store(name, m, gen), nil
}

// store caches new metadata unless the cache was invalidated since gen.
func (k *KMS) store(name string, m *keyMeta, gen uint64) *entry {
	ti, _ := m.Type.info()
	e := &entry{meta: m, ti: ti, loaded: k.clock.Now(), vers: map[int]*version{}}
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	if old := k.cache[name]; old != nil && old.meta.ID == m.ID {
		old.mu.RLock()
		for n, v := range old.vers {
			if vm := m.version(n); vm != nil && vm.State != StateDestroyed {
				e.vers[n] = v
			}
		}
		old.mu.RUnlock()
	}
	if k.gen.Load() == gen {
		k.cache[name] = e
	}
	return e
}

// readMeta reads and decodes a key's metadata; it also returns the stored
// plaintext, for compare-and-swap.
func (k *KMS) readMeta(ctx context.Context, name string) (*keyMeta, []byte, error) {
	raw, err := k.b.get(ctx, tableKeys, []byte(name))
	if errors.Is(err, raftstore.ErrNotFound) || errors.Is(err, raftstore.ErrUnknownTable) {
		return nil, nil, fmt.Errorf("%w: key %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, nil, err
	}
	var m keyMeta
	if err := json.Unmarshal(raw, &m); err != nil || m.Name != name || !m.valid() {
		return nil, nil, fmt.Errorf("%w: metadata of key %q", ErrCorrupt, name)
	}
	return &m, raw, nil
}

// version returns a loaded version of e, reading its material if needed.
func (k *KMS) version(ctx context.Context, e *entry, n int) (*version, error) {
	if v := e.loadedVersion(n); v != nil {
		return v, nil
	}
	name := e.meta.Name
	raw, err := k.b.get(ctx, tableKeyMat, materialKey(name, n))
	if err != nil {
		if errors.Is(err, raftstore.ErrNotFound) {
			return nil, fmt.Errorf("%w: key %q version %d has no material", ErrVersionUnavailable, name, n)
		}
		return nil, err
	}
	defer clear(raw)
	var mat material
	if err := json.Unmarshal(raw, &mat); err != nil || mat.Version != n {
		return nil, fmt.Errorf("%w: material of key %q version %d", ErrCorrupt, name, n)
	}
	defer clear(mat.Key)
	v, err := parseVersion(e.meta.Type, n, mat.Key)
	if err != nil {
		return nil, err
	}
	v.use = k.counter(e.meta, n)
	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.vers[n]; old != nil {
		v.zero()
		return old, nil
	}
	e.vers[n] = v
	return v, nil
}

// op says how an operation uses a version.
type op int

const (
	opProduce op = iota + 1 // encrypt, data key, sign, hmac: uses the newest allowed version
	opConsume               // decrypt, verify: any version at or above the minimum
)

// use finds the version an operation may use, checking the key's purpose,
// deletion state, minimum versions and the version's state. n = 0 means the
// latest version. A version newer than the cached latest makes it re-read
// the metadata once: another node may have rotated the key.
func (k *KMS) use(ctx context.Context, name string, p purpose, o op, n int) (*entry, *version, error) {
	e, err := k.entry(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if n > e.meta.Latest {
		if e, err = k.load(ctx, name); err != nil {
			return nil, nil, err
		}
	}
	if err := e.meta.check(e.ti, p, o, n); err != nil {
		return nil, nil, err
	}
	if n == 0 {
		n = e.meta.Latest
	}
	v, err := k.version(ctx, e, n)
	if err != nil {
		return nil, nil, err
	}
	if o == opProduce {
		if lim := e.ti.useLimit; lim > 0 && e.meta.version(n).Uses+v.use.uses.Load() >= lim {
			return nil, nil, fmt.Errorf("%w: key %q version %d", ErrUseLimit, name, n)
		}
	}
	return e, v, nil
}

// check applies the rules of use to version n (0: latest).
func (m *keyMeta) check(ti typeInfo, p purpose, o op, n int) error {
	if ti.purpose != p {
		return fmt.Errorf("%w: key %q is of type %s", ErrUnsupported, m.Name, m.Type)
	}
	if !m.DeleteAfter.IsZero() {
		return fmt.Errorf("%w: key %q", ErrPendingDeletion, m.Name)
	}
	if n == 0 {
		n = m.Latest
	}
	low := m.MinDecryption
	if o == opProduce {
		low = max(low, m.MinEncryption)
	}
	switch {
	case n < 1 || n > m.Latest:
		return fmt.Errorf("%w: key %q has no version %d", ErrVersionUnavailable, m.Name, n)
	case n < low:
		return fmt.Errorf("%w: key %q version %d is below the minimum version %d", ErrVersionUnavailable, m.Name, n, low)
	}
	state := StateDestroyed // versions no longer kept were destroyed
	if vm := m.version(n); vm != nil {
		state = vm.State
	}
	if state != StateActive {
		return fmt.Errorf("%w: key %q version %d is %s", ErrVersionUnavailable, m.Name, n, state)
	}
	return nil
}
