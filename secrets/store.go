package secrets

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/custos-pki/custos/internal/decodecache"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

// Clock tells the time: version creation and deletion times, and whether a
// version's deletion time has passed, are decided with it.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// KeyManager is what the store needs of the kms: one key per mount, data
// keys under it, and rewrapping them when a secret moves.
type KeyManager interface {
	CreateKey(ctx context.Context, name string, o kms.KeyOptions) (kms.KeyInfo, error)
	ScheduleDeletion(ctx context.Context, name string, wait time.Duration) (time.Time, error)
	CancelDeletion(ctx context.Context, name string) error
	GenerateDataKey(ctx context.Context, name string, bits int, withPlaintext bool, o kms.CryptOptions) (kms.DataKey, error)
	Encrypt(ctx context.Context, name string, plaintext []byte, o kms.CryptOptions) ([]byte, error)
	Decrypt(ctx context.Context, name string, ciphertext []byte, o kms.CryptOptions) ([]byte, error)
}

var _ KeyManager = (*kms.KMS)(nil)

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// Storage keeps every record. It must be the kms barrier: records hold
	// paths, metadata and wrapped keys that only the barrier encrypts.
	Storage kms.Storage
	// Keys makes and unwraps the data keys.
	Keys KeyManager
	// Clock stamps versions and decides deletions.
	Clock Clock
	// KeyType is the type of the mount keys.
	KeyType kms.KeyType
	// KeyDeletionWait is how long after a mount is deleted its key is
	// deleted: 0 for the kms default, else at least the kms minimum.
	KeyDeletionWait time.Duration
}

// DefaultConfig returns the configuration custos runs with; the caller sets
// Storage and Keys.
func DefaultConfig() Config {
	return Config{Clock: systemClock{}, KeyType: kms.DefaultKeyType}
}

// Validate checks the fields.
func (c Config) Validate() error {
	switch {
	case c.Storage == nil:
		return fmt.Errorf("%w: config: Storage is required", ErrInvalid)
	case c.Keys == nil:
		return fmt.Errorf("%w: config: Keys is required", ErrInvalid)
	case c.Clock == nil:
		return fmt.Errorf("%w: config: Clock is required", ErrInvalid)
	case c.KeyType == "":
		return fmt.Errorf("%w: config: KeyType is required", ErrInvalid)
	case c.KeyDeletionWait < 0:
		return fmt.Errorf("%w: config: KeyDeletionWait is negative", ErrInvalid)
	}
	if _, raw := c.Storage.(*raftstore.Store); raw {
		return fmt.Errorf("%w: config: Storage must be the kms barrier, not the raw store", ErrInvalid)
	}
	return nil
}

// Tables the store keeps, all through the barrier.
const (
	tableMounts = "secrets.mounts" // mount name -> mountRec
	tableLive   = "secrets.live"   // mount ID -> mount name, while the mount takes writes
	tableMeta   = "secrets.meta"   // mount ID "/" path -> record
	tableData   = "secrets.data"   // mount ID "/" secret ID "/" version -> nonce || AES-GCM ciphertext

	keyPrefix = "_secrets-"
)

// Store is the secret store of one node. Its state is all in storage, so
// any number of Stores on the nodes of a cluster serve the same secrets.
// Safe for concurrent use.
type Store struct {
	st      kms.Storage
	keys    KeyManager
	clock   Clock
	keyType kms.KeyType
	keyWait time.Duration

	// locks serialise this node's writers to one secret, so that they do
	// not make each other retry; writers on other nodes are ordered by the
	// compare-and-swap alone.
	locks [256]sync.Mutex

	listPageSize int // tests: records per storage page when listing

	// mounts and records decode the mount and metadata records reads
	// meet, keyed by their bytes.
	mounts  decodecache.Cache[mountRec]
	records decodecache.Cache[record]
}

// New returns a Store, creating its tables (safe at every start, on every
// node, sealed or not).
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, t := range []string{tableMounts, tableLive, tableMeta, tableData} {
		if err := cfg.Storage.CreateTable(ctx, t); err != nil {
			return nil, fmt.Errorf("secrets: create table %s: %w", t, err)
		}
	}
	return &Store{st: cfg.Storage, keys: cfg.Keys, clock: cfg.Clock, keyType: cfg.KeyType, keyWait: cfg.KeyDeletionWait}, nil
}

func (s *Store) now() time.Time { return s.clock.Now().UTC().Round(0) }

// lock takes this node's lock for the secrets at paths, in a fixed order.
func (s *Store) lock(mount string, paths ...string) (unlock func()) {
	var idx []int
	for _, p := range paths {
		h := fnv.New32a()
		h.Write([]byte(mount + "\x00" + p))
		i := int(h.Sum32() % uint32(len(s.locks)))
		if len(idx) == 1 && idx[0] == i {
			continue
		}
		idx = append(idx, i)
	}
	if len(idx) == 2 && idx[0] > idx[1] {
		idx[0], idx[1] = idx[1], idx[0]
	}
	for _, i := range idx {
		s.locks[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s.locks[i].Unlock()
		}
	}
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Limits of the settings.
const (
	DefaultMaxVersions = 10   // versions kept when neither mount nor secret says
	MaxVersionsLimit   = 1000 // the most versions a secret keeps
)

// MountOptions are the settings of a mount, defaults for its secrets.
type MountOptions struct {
	// MaxVersions is how many versions a secret keeps (0: DefaultMaxVersions);
	// a secret's own setting overrides it.
	MaxVersions int
	// DeleteVersionAfter soft-deletes each version this long after it is
	// written (0: never); a secret's own setting applies when shorter.
	DeleteVersionAfter time.Duration
	// CASRequired refuses writes without check-and-set.
	CASRequired bool
}

func checkSettings(maxVersions int, dva time.Duration) error {
	switch {
	case maxVersions < 0 || maxVersions > MaxVersionsLimit:
		return fmt.Errorf("%w: max_versions must be 0 to %d", ErrInvalid, MaxVersionsLimit)
	case dva < 0:
		return fmt.Errorf("%w: delete_version_after must not be negative", ErrInvalid)
	}
	return nil
}

// MountInfo describes a mount.
type MountInfo struct {
	Name    string
	Created time.Time
	MountOptions
	// Key is the kms key that wraps the mount's data keys.
	Key string
	// Deleting is set while the mount is being deleted.
	Deleting bool
}

// mountRec is stored at tableMounts/name.
type mountRec struct {
	Name               string        `json:"name"`
	ID                 string        `json:"id"` // random, new for every CreateMount
	Key                string        `json:"key"`
	Created            time.Time     `json:"created"`
	MaxVersions        int           `json:"max_versions,omitempty"`
	DeleteVersionAfter time.Duration `json:"delete_version_after,omitempty"`
	CASRequired        bool          `json:"cas_required,omitempty"`
	Deleting           bool          `json:"deleting,omitempty"`
}

func (m *mountRec) info() MountInfo {
	return MountInfo{
		Name: m.Name, Created: m.Created, Key: m.Key, Deleting: m.Deleting,
		MountOptions: MountOptions{MaxVersions: m.MaxVersions, DeleteVersionAfter: m.DeleteVersionAfter, CASRequired: m.CASRequired},
	}
}

// CreateMount creates a mount and its kms key.
func (s *Store) CreateMount(ctx context.Context, name string, o MountOptions) (MountInfo, error) {
	if err := checkMount(name); err != nil {
		return MountInfo{}, err
	}
	if err := checkSettings(o.MaxVersions, o.DeleteVersionAfter); err != nil {
		return MountInfo{}, err
	}
	if _, _, err := s.readMount(ctx, name); !errors.Is(err, ErrMountNotFound) {
		if err == nil || errors.Is(err, ErrMountDeleting) {
			return MountInfo{}, fmt.Errorf("%w: %q", ErrMountExists, name)
		}
		return MountInfo{}, err
	}
	m := &mountRec{
		Name: name, ID: randomID(8), Key: keyPrefix + name, Created: s.now(),
		MaxVersions: o.MaxVersions, DeleteVersionAfter: o.DeleteVersionAfter, CASRequired: o.CASRequired,
	}
	// The key of an earlier mount of this name may still exist, pending
	// deletion: it is reused, and its deletion cancelled once the mount
	// exists (DeleteMount checks for a new mount after scheduling it).
	if _, err := s.keys.CreateKey(ctx, m.Key, kms.KeyOptions{Type: s.keyType, DeletionAllowed: true}); err != nil && !errors.Is(err, kms.ErrKeyExists) {
		return MountInfo{}, fmt.Errorf("create mount %q: %w", name, err)
	}
	raw, err := jsonMarshal(m)
	if err != nil {
		return MountInfo{}, err
	}
	res, err := s.st.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpCAS, Table: tableMounts, Key: []byte(name), Value: raw},
		{Kind: raftstore.OpCAS, Table: tableLive, Key: []byte(m.ID), Value: []byte(name)},
	})
	if err != nil {
		return MountInfo{}, fmt.Errorf("create mount %q: %w", name, err)
	}
	if !res.Succeeded {
		return MountInfo{}, fmt.Errorf("%w: %q", ErrMountExists, name)
	}
	if err := s.keys.CancelDeletion(ctx, m.Key); err != nil {
		return MountInfo{}, fmt.Errorf("create mount %q: keep its key: %w", name, err)
	}
	return m.info(), nil
}

// readMount returns a mount's record, with ErrMountDeleting (and the
// record) while it is being deleted. It is a linearizable read: within an
// API request's read session (raftstore.WithReadSession) it shares the
// read index the request's token check took, and after a write of the
// request (a retry after a lost compare-and-swap) it takes a fresh one, so
// the retry sees the write it lost to.
func (s *Store) readMount(ctx context.Context, name string) (*mountRec, []byte, error) {
	return s.readMountWith(ctx, name)
}

func (s *Store) readMountWith(ctx context.Context, name string, opts ...raftstore.ReadOption) (*mountRec, []byte, error) {
	if err := checkMount(name); err != nil {
		return nil, nil, err
	}
	raw, err := s.st.Get(ctx, tableMounts, []byte(name), opts...)
	if errors.Is(err, raftstore.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: %q", ErrMountNotFound, name)
	}
	if err != nil {
		return nil, nil, err
	}
	shared, err := s.mounts.Decode(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: mount %q", kms.ErrCorrupt, name)
	}
	m := new(mountRec)
	*m = *shared // callers may change theirs
	if m.Deleting {
		return m, raw, fmt.Errorf("%w: %q", ErrMountDeleting, name)
	}
	return m, raw, nil
}

// Mount describes a mount, also while it is being deleted.
func (s *Store) Mount(ctx context.Context, name string) (MountInfo, error) {
	m, _, err := s.readMount(ctx, name)
	if err != nil && !errors.Is(err, ErrMountDeleting) {
		return MountInfo{}, err
	}
	return m.info(), nil
}

// ListMounts describes every mount, in name order.
func (s *Store) ListMounts(ctx context.Context) ([]MountInfo, error) {
	var out []MountInfo
	o := raftstore.ListOptions{}
	for {
		page, err := s.st.List(ctx, tableMounts, o)
		if err != nil {
			return nil, err
		}
		for _, kv := range page.Items {
			var m mountRec
			if err := jsonUnmarshal(kv.Value, &m); err != nil {
				return nil, fmt.Errorf("%w: mount %q", kms.ErrCorrupt, kv.Key)
			}
			out = append(out, m.info())
		}
		if page.Next == nil {
			return out, nil
		}
		o.After = page.Next
	}
}

// MountUpdate changes a mount's settings; nil fields are left alone.
type MountUpdate struct {
	MaxVersions        *int
	DeleteVersionAfter *time.Duration
	CASRequired        *bool
}

// UpdateMount changes a mount's settings. They apply to each secret at its
// next change.
func (s *Store) UpdateMount(ctx context.Context, name string, u MountUpdate) (MountInfo, error) {
	for range maxAttempts {
		m, raw, err := s.readMount(ctx, name)
		if err != nil {
			return MountInfo{}, err
		}
		if u.MaxVersions != nil {
			m.MaxVersions = *u.MaxVersions
		}
		if u.DeleteVersionAfter != nil {
			m.DeleteVersionAfter = *u.DeleteVersionAfter
		}
		if u.CASRequired != nil {
			m.CASRequired = *u.CASRequired
		}
		if err := checkSettings(m.MaxVersions, m.DeleteVersionAfter); err != nil {
			return MountInfo{}, err
		}
		ok, err := s.swapMount(ctx, name, m, raw)
		if err != nil || ok {
			return m.info(), err
		}
	}
	return MountInfo{}, fmt.Errorf("%w: mount %q kept changing", kms.ErrConflict, name)
}

// swapMount writes m (nil: deletes the mount) over the record raw, with
// extra ops in the same transaction, and reports whether raw was current.
func (s *Store) swapMount(ctx context.Context, name string, m *mountRec, raw []byte, extra ...raftstore.Op) (bool, error) {
	op := raftstore.Op{Kind: raftstore.OpCAS, Table: tableMounts, Key: []byte(name), Old: raw}
	if m == nil {
		op.Delete = true
	} else {
		v, err := jsonMarshal(m)
		if err != nil {
			return false, err
		}
		op.Value = v
	}
	res, err := s.st.Txn(ctx, append([]raftstore.Op{op}, extra...))
	return err == nil && res.Succeeded, err
}

// DeleteMount deletes a mount with all its secrets and schedules its key
// for deletion. Without force it refuses a mount that holds a secret; force
// also finishes a deletion that was interrupted.
func (s *Store) DeleteMount(ctx context.Context, name string, force bool) error {
	m, raw, err := s.readMount(ctx, name)
	switch {
	case errors.Is(err, ErrMountDeleting) && !force:
		return fmt.Errorf("%w: %q: delete it with force to finish", ErrMountDeleting, name)
	case err != nil && !errors.Is(err, ErrMountDeleting):
		return err
	}
	if !m.Deleting {
		// Stop writes first: they all check the live marker.
		d := *m
		d.Deleting = true
		ok, err := s.swapMount(ctx, name, &d, raw, raftstore.Op{Kind: raftstore.OpDelete, Table: tableLive, Key: []byte(m.ID)})
		if err != nil {
			return fmt.Errorf("delete mount %q: %w", name, err)
		}
		if !ok {
			return fmt.Errorf("%w: mount %q changed during the deletion; try again", kms.ErrConflict, name)
		}
		if raw, err = jsonMarshal(&d); err != nil {
			return err
		}
		if !force {
			if err := s.checkEmpty(ctx, m, raw); err != nil {
				return err
			}
		}
	}
	if err := s.sweep(ctx, m.ID); err != nil {
		return fmt.Errorf("delete mount %q: %w", name, err)
	}
	if ok, err := s.swapMount(ctx, name, nil, raw); err != nil {
		return fmt.Errorf("delete mount %q: %w", name, err)
	} else if !ok {
		return fmt.Errorf("%w: mount %q changed during the deletion; try again", kms.ErrConflict, name)
	}
	if _, err := s.keys.ScheduleDeletion(ctx, m.Key, s.keyWait); err != nil && !errors.Is(err, kms.ErrNotFound) {
		return fmt.Errorf("delete mount %q: schedule deletion of its key: %w", name, err)
	}
	if _, _, err := s.readMount(ctx, name); !errors.Is(err, ErrMountNotFound) {
		// Created again meanwhile: it uses the key.
		return s.keys.CancelDeletion(ctx, m.Key)
	}
	return nil
}

// checkEmpty is run on a mount marked as deleting, with no writes possible:
// if it holds a secret, the mark is taken back and ErrMountNotEmpty returned.
func (s *Store) checkEmpty(ctx context.Context, m *mountRec, deletingRaw []byte) error {
	page, err := s.st.List(ctx, tableMeta, raftstore.ListOptions{Prefix: []byte(m.ID + "/"), Limit: 1, KeysOnly: true})
	if err != nil {
		return err
	}
	if len(page.Items) == 0 {
		return nil
	}
	ok, err := s.swapMount(ctx, m.Name, m, deletingRaw, raftstore.Op{Kind: raftstore.OpCAS, Table: tableLive, Key: []byte(m.ID), Value: []byte(m.Name)})
	if err == nil && !ok {
		err = fmt.Errorf("%w: mount %q changed during the deletion", kms.ErrConflict, m.Name)
	}
	if err != nil {
		return fmt.Errorf("delete mount %q: restore it: %w", m.Name, err)
	}
	return fmt.Errorf("%w: %q holds secrets; delete them or use force", ErrMountNotEmpty, m.Name)
}

// sweep deletes every record of a mount, a page at a time.
func (s *Store) sweep(ctx context.Context, id string) error {
	for _, table := range []string{tableData, tableMeta} {
		for {
			page, err := s.st.List(ctx, table, raftstore.ListOptions{Prefix: []byte(id + "/"), KeysOnly: true, Limit: raftstore.MaxTxnOps})
			if err != nil {
				return err
			}
			if len(page.Items) == 0 {
				break
			}
			ops := make([]raftstore.Op, len(page.Items))
			for i, kv := range page.Items {
				ops[i] = raftstore.Op{Kind: raftstore.OpDelete, Table: table, Key: kv.Key}
			}
			if _, err := s.st.Txn(ctx, ops); err != nil {
				return err
			}
		}
	}
	return nil
}
