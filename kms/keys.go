package kms

import (
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// VersionState is the state of one key version.
type VersionState string

// Version states. A disabled version can be enabled again; a destroyed one
// has lost its material for good.
const (
	StateActive    VersionState = "active"
	StateDisabled  VersionState = "disabled"
	StateDestroyed VersionState = "destroyed"
)

// MaxVersions caps the versions a key keeps, from its oldest version that
// is not destroyed to its latest; destroy the oldest versions to rotate
// further. (Destroyed versions older than every other are dropped from the
// metadata.)
const MaxVersions = 1000

// KeyOptions are the settings of a new key.
type KeyOptions struct {
	Type KeyType // DefaultKeyType when empty
	// Exportable allows Export. It can be turned off later, never on.
	Exportable bool
	// DeletionAllowed allows ScheduleDeletion.
	DeletionAllowed bool
	// AutoRotatePeriod rotates the key when its latest version is this old
	// (0: never). AutoRotateUses rotates it when its latest version has been
	// used this many times, counted across the cluster (0: never).
	AutoRotatePeriod time.Duration
	AutoRotateUses   uint64
}

// KeyUpdate changes the settings of a key; nil fields are left alone.
type KeyUpdate struct {
	MinDecryptionVersion *int
	MinEncryptionVersion *int // 0: no minimum beyond MinDecryptionVersion
	Exportable           *bool
	DeletionAllowed      *bool
	AutoRotatePeriod     *time.Duration
	AutoRotateUses       *uint64
}

// KeyInfo is a key's metadata. It holds no key material.
type KeyInfo struct {
	Name                 string
	Type                 KeyType
	Created              time.Time
	Latest               int
	MinDecryptionVersion int
	MinEncryptionVersion int
	Exportable           bool
	DeletionAllowed      bool
	DeletionDate         time.Time // zero unless deletion is scheduled
	AutoRotatePeriod     time.Duration
	AutoRotateUses       uint64
	Versions             []VersionInfo
}

// VersionInfo describes one version. Uses and Decryptions are the counts
// flushed by every node plus this node's unflushed counts.
type VersionInfo struct {
	Version     int
	Created     time.Time
	State       VersionState
	Uses        uint64 // encryptions, data keys, signatures, HMACs
	Decryptions uint64 // decryptions and verifications
}

// keyMeta is stored through the barrier at tableKeys/name.
type keyMeta struct {
	Name             string        `json:"name"`
	ID               string        `json:"id"` // random, new for every CreateKey
	Type             KeyType       `json:"type"`
	Created          time.Time     `json:"created"`
	Exportable       bool          `json:"exportable"`
	DeletionAllowed  bool          `json:"deletion_allowed"`
	DeleteAfter      time.Time     `json:"delete_after,omitzero"`
	MinDecryption    int           `json:"min_decryption_version"`
	MinEncryption    int           `json:"min_encryption_version"`
	Latest           int           `json:"latest"`
	AutoRotatePeriod time.Duration `json:"auto_rotate_period,omitempty"`
	AutoRotateUses   uint64        `json:"auto_rotate_uses,omitempty"`
	// Versions runs from the oldest version kept to Latest, without gaps.
	Versions []versionMeta `json:"versions"`
}

// version returns the metadata of version n, or nil if it is not kept
// (below the oldest kept version: destroyed; or above Latest).
func (m *keyMeta) version(n int) *versionMeta {
	if len(m.Versions) == 0 {
		return nil
	}
	i := n - m.Versions[0].Version
	if i < 0 || i >= len(m.Versions) {
		return nil
	}
	return &m.Versions[i]
}

// valid checks that Versions is a run without gaps ending at Latest.
func (m *keyMeta) valid() bool {
	if len(m.Versions) == 0 || m.Versions[len(m.Versions)-1].Version != m.Latest {
		return false
	}
	for i := 1; i < len(m.Versions); i++ {
		if m.Versions[i].Version != m.Versions[i-1].Version+1 {
			return false
		}
	}
	return m.Versions[0].Version >= 1
}

// trim drops destroyed versions older than every other version.
func (m *keyMeta) trim() {
	for len(m.Versions) > 1 && m.Versions[0].State == StateDestroyed {
		m.Versions = m.Versions[1:]
	}
}

type versionMeta struct {
	Version     int          `json:"version"`
	Created     time.Time    `json:"created"`
	State       VersionState `json:"state"`
	Uses        uint64       `json:"uses"`
	Decryptions uint64       `json:"decryptions"`
}

// material is stored through the barrier at tableKeyMat/materialKey.
type material struct {
	Version int     `json:"version"`
	Type    KeyType `json:"type"`
	Key     []byte  `json:"key"`
}

func materialKey(name string, v int) []byte { return fmt.Appendf(nil, "%s/%010d", name, v) }

// checkName accepts 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'.
func checkName(name string) error {
	ok := len(name) >= 1 && len(name) <= 128 && name[0] != '.' && name[0] != '-'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: key name must be 1 to 128 of [A-Za-z0-9_.-]", ErrInvalid)
	}
	return nil
}

// newVersionOps makes material for version n and returns the op storing it.
func newVersionOp(name string, t KeyType, n int) (raftstore.Op, error) {
	key, err := generate(t)
	if err != nil {
		return raftstore.Op{}, err
	}
	defer clear(key)
	raw, err := json.Marshal(material{Version: n, Type: t, Key: key})
	if err != nil {
		return raftstore.Op{}, err
	}
	return raftstore.Op{Kind: raftstore.OpPut, Table: tableKeyMat, Key: materialKey(name, n), Value: raw}, nil
}

// CreateKey creates a key with one version.
func (k *KMS) CreateKey(ctx context.Context, name string, o KeyOptions) (KeyInfo, error) {
	if err := checkName(name); err != nil {
		return KeyInfo{}, err
	}
	if o.Type == "" {
		o.Type = DefaultKeyType
	}
	if _, err := o.Type.info(); err != nil {
		return KeyInfo{}, err
	}
	if o.AutoRotatePeriod < 0 {
		return KeyInfo{}, fmt.Errorf("%w: AutoRotatePeriod is negative", ErrInvalid)
	}
	if err := k.begin(); err != nil {
		return KeyInfo{}, err
	}
	defer k.end()
	now := k.clock.Now().UTC()
	m := &keyMeta{
		Name: name, ID: hex.EncodeToString(randomKey()[:16]), Type: o.Type, Created: now, Exportable: o.Exportable, DeletionAllowed: o.DeletionAllowed,
		MinDecryption: 1, Latest: 1, AutoRotatePeriod: o.AutoRotatePeriod, AutoRotateUses: o.AutoRotateUses,
		Versions: []versionMeta{{Version: 1, Created: now, State: StateActive}},
	}
	matOp, err := newVersionOp(name, o.Type, 1)
	if err != nil {
		return KeyInfo{}, err
	}
	raw, _ := json.Marshal(m)
	gen := k.gen.Load()
	res, err := k.b.txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpCAS, Table: tableKeys, Key: []byte(name), Old: nil, Value: raw},
		matOp,
	})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("create key %q: %w", name, err)
	}
	if !res.Succeeded {
		return KeyInfo{}, fmt.Errorf("%w: %q", ErrKeyExists, name)
	}
	k.store(name, m, gen)
	return k.info(m), nil
}

// errNoChange tells updateMeta that there is nothing to write.
var errNoChange = errors.New("no change")

// updateMeta applies fn to the stored metadata of a key and writes it back
// with a compare-and-swap, retrying when another writer got there first.
// fn may return more operations for the same transaction.
func (k *KMS) updateMeta(ctx context.Context, name string, fn func(m *keyMeta) ([]raftstore.Op, error)) (*keyMeta, error) {
	for range 8 {
		gen := k.gen.Load()
		m, raw, err := k.readMeta(ctx, name)
		if err != nil {
			return nil, err
		}
		ops, err := fn(m)
		if errors.Is(err, errNoChange) {
			return m, nil
		}
		if err != nil {
			return nil, err
		}
		newRaw, _ := json.Marshal(m)
		ops = append([]raftstore.Op{{Kind: raftstore.OpCAS, Table: tableKeys, Key: []byte(name), Old: raw, Value: newRaw}}, ops...)
		res, err := k.b.txn(ctx, ops)
		if err != nil {
			return nil, err
		}
		if res.Succeeded {
			k.store(name, m, gen)
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: key %q kept changing", ErrConflict, name)
}

// Key returns a key's metadata.
func (k *KMS) Key(ctx context.Context, name string) (KeyInfo, error) {
	if err := checkName(name); err != nil {
		return KeyInfo{}, err
	}
	if err := k.begin(); err != nil {
		return KeyInfo{}, err
	}
	defer k.end()
	m, _, err := k.readMeta(ctx, name)
	if err != nil {
		return KeyInfo{}, err
	}
	return k.info(m), nil
}

func (k *KMS) info(m *keyMeta) KeyInfo {
	ki := KeyInfo{
		Name: m.Name, Type: m.Type, Created: m.Created, Latest: m.Latest,
		MinDecryptionVersion: m.MinDecryption, MinEncryptionVersion: m.MinEncryption,
		Exportable: m.Exportable, DeletionAllowed: m.DeletionAllowed, DeletionDate: m.DeleteAfter,
		AutoRotatePeriod: m.AutoRotatePeriod, AutoRotateUses: m.AutoRotateUses,
	}
	for _, v := range m.Versions {
		vi := VersionInfo(v)
		if u, ok := k.usage.Load(usageKey{m.Name, m.ID, v.Version}); ok {
			vi.Uses += u.(*usage).uses.Load()
			vi.Decryptions += u.(*usage).decrypts.Load()
		}
		ki.Versions = append(ki.Versions, vi)
	}
	return ki
}

// ListKeys returns the names of all keys, in order.
func (k *KMS) ListKeys(ctx context.Context) ([]string, error) {
	if err := k.begin(); err != nil {
		return nil, err
	}
	defer k.end()
	var names []string
	o := raftstore.ListOptions{KeysOnly: true}
	for {
		page, err := k.b.list(ctx, tableKeys, o)
		if err != nil {
			return nil, err
		}
		for _, kv := range page.Items {
			names = append(names, string(kv.Key))
		}
		if page.Next == nil {
			return names, nil
		}
		o.After = page.Next
	}
}

// RotateKey adds a new version and makes it the latest.
func (k *KMS) RotateKey(ctx context.Context, name string) (KeyInfo, error) {
	return k.rotate(ctx, name, func(*keyMeta) bool { return true })
}

// rotate adds a version if due(m) still holds on the stored metadata.
func (k *KMS) rotate(ctx context.Context, name string, due func(*keyMeta) bool) (KeyInfo, error) {
	if err := checkName(name); err != nil {
		return KeyInfo{}, err
	}
	if err := k.begin(); err != nil {
		return KeyInfo{}, err
	}
	defer k.end()
	m, err := k.updateMeta(ctx, name, func(m *keyMeta) ([]raftstore.Op, error) {
		if !m.DeleteAfter.IsZero() {
			return nil, fmt.Errorf("%w: key %q", ErrPendingDeletion, name)
		}
		if !due(m) {
			return nil, errNoChange
		}
		if len(m.Versions) >= MaxVersions {
			return nil, fmt.Errorf("%w: key %q keeps %d versions: destroy the oldest first", ErrForbidden, name, len(m.Versions))
		}
		n := m.Latest + 1
		op, err := newVersionOp(name, m.Type, n)
		if err != nil {
			return nil, err
		}
		m.Latest = n
		m.Versions = append(m.Versions, versionMeta{Version: n, Created: k.clock.Now().UTC(), State: StateActive})
		return []raftstore.Op{op}, nil
	})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("rotate key: %w", err)
	}
	return k.info(m), nil
}

// UpdateKey changes a key's settings. Minimum versions must lie between 1
// (0 for MinEncryptionVersion: no minimum) and the latest version, with the
// encryption minimum not below the decryption minimum; Exportable can only
// be turned off.
func (k *KMS) UpdateKey(ctx context.Context, name string, u KeyUpdate) (KeyInfo, error) {
	if err := checkName(name); err != nil {
		return KeyInfo{}, err
	}
	if err := k.begin(); err != nil {
		return KeyInfo{}, err
	}
	defer k.end()
	m, err := k.updateMeta(ctx, name, func(m *keyMeta) ([]raftstore.Op, error) {
		if u.MinDecryptionVersion != nil {
			m.MinDecryption = *u.MinDecryptionVersion
		}
		if u.MinEncryptionVersion != nil {
			m.MinEncryption = *u.MinEncryptionVersion
		}
		switch {
		case m.MinDecryption < 1 || m.MinDecryption > m.Latest:
			return nil, fmt.Errorf("%w: MinDecryptionVersion must be 1 to %d", ErrInvalid, m.Latest)
		case m.MinEncryption != 0 && (m.MinEncryption < m.MinDecryption || m.MinEncryption > m.Latest):
			return nil, fmt.Errorf("%w: MinEncryptionVersion must be 0 or %d to %d", ErrInvalid, m.MinDecryption, m.Latest)
		}
		if u.Exportable != nil {
			if *u.Exportable && !m.Exportable {
				return nil, fmt.Errorf("%w: key %q", ErrNotExportable, name)
			}
			m.Exportable = *u.Exportable
		}
		if u.DeletionAllowed != nil {
			m.DeletionAllowed = *u.DeletionAllowed
		}
		if u.AutoRotatePeriod != nil {
			if *u.AutoRotatePeriod < 0 {
				return nil, fmt.Errorf("%w: AutoRotatePeriod is negative", ErrInvalid)
			}
			m.AutoRotatePeriod = *u.AutoRotatePeriod
		}
		if u.AutoRotateUses != nil {
			m.AutoRotateUses = *u.AutoRotateUses
		}
		return nil, nil
	})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("update key: %w", err)
	}
	return k.info(m), nil
}

// SetVersionState disables, re-enables or destroys a version. Destroying
// deletes the version's material for good. The latest version can be
// neither disabled nor destroyed: rotate first.
func (k *KMS) SetVersionState(ctx context.Context, name string, n int, s VersionState) (KeyInfo, error) {
	if err := checkName(name); err != nil {
		return KeyInfo{}, err
	}
	if s != StateActive && s != StateDisabled && s != StateDestroyed {
		return KeyInfo{}, fmt.Errorf("%w: unknown version state %q", ErrInvalid, s)
	}
	if err := k.begin(); err != nil {
		return KeyInfo{}, err
	}
	defer k.end()
	m, err := k.updateMeta(ctx, name, func(m *keyMeta) ([]raftstore.Op, error) {
		switch {
		case n < 1 || n > m.Latest:
			return nil, fmt.Errorf("%w: key %q has no version %d", ErrNotFound, name, n)
		case n == m.Latest && s != StateActive:
			return nil, fmt.Errorf("%w: the latest version cannot be %s; rotate first", ErrForbidden, s)
		}
		vm := m.version(n)
		switch {
		case vm == nil && s == StateDestroyed, vm != nil && vm.State == s:
			return nil, errNoChange
		case vm == nil || vm.State == StateDestroyed:
			return nil, fmt.Errorf("%w: key %q version %d is destroyed", ErrVersionUnavailable, name, n)
		}
		vm.State = s
		if s == StateDestroyed {
			m.trim()
			return []raftstore.Op{{Kind: raftstore.OpDelete, Table: tableKeyMat, Key: materialKey(name, n)}}, nil
		}
		return nil, nil
	})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("set version state: %w", err)
	}
	return k.info(m), nil
}

// ScheduleDeletion marks a key for deletion after wait (0: the configured
// default), which must be at least the minimum deletion window. From then
// on the key can do nothing; Maintain deletes it once the date has passed
// unless CancelDeletion is called first. It needs DeletionAllowed.
func (k *KMS) ScheduleDeletion(ctx context.Context, name string, wait time.Duration) (time.Time, error) {
	if wait == 0 {
		wait = k.cfg.DefaultDeletionWindow
	}
	if wait < k.cfg.MinDeletionWindow {
		return time.Time{}, fmt.Errorf("%w: deletion wait must be at least %s", ErrInvalid, k.cfg.MinDeletionWindow)
	}
	return k.setDeletion(ctx, name, wait, true)
}

// CancelDeletion cancels a scheduled deletion.
func (k *KMS) CancelDeletion(ctx context.Context, name string) error {
	_, err := k.setDeletion(ctx, name, 0, false)
	return err
}

func (k *KMS) setDeletion(ctx context.Context, name string, wait time.Duration, on bool) (time.Time, error) {
	if err := checkName(name); err != nil {
		return time.Time{}, err
	}
	if err := k.begin(); err != nil {
		return time.Time{}, err
	}
	defer k.end()
	m, err := k.updateMeta(ctx, name, func(m *keyMeta) ([]raftstore.Op, error) {
		switch {
		case on && !m.DeletionAllowed:
			return nil, fmt.Errorf("%w: key %q", ErrDeletionNotAllowed, name)
		case on && !m.DeleteAfter.IsZero(), !on && m.DeleteAfter.IsZero():
			return nil, errNoChange
		case on:
			m.DeleteAfter = k.clock.Now().UTC().Add(wait)
		default:
			m.DeleteAfter = time.Time{}
		}
		return nil, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("schedule deletion: %w", err)
	}
	return m.DeleteAfter, nil
}

// purge deletes a key whose deletion date has passed, with all its material.
func (k *KMS) purge(ctx context.Context, m *keyMeta, raw []byte) error {
	ops := []raftstore.Op{{Kind: raftstore.OpCAS, Table: tableKeys, Key: []byte(m.Name), Old: raw, Delete: true}}
	for _, v := range m.Versions {
		if v.State != StateDestroyed {
			ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableKeyMat, Key: materialKey(m.Name, v.Version)})
		}
	}
	if _, err := k.b.txn(ctx, ops); err != nil {
		return fmt.Errorf("delete key %q: %w", m.Name, err)
	}
	k.Invalidate(m.Name)
	for _, v := range m.Versions {
		k.usage.Delete(usageKey{m.Name, m.ID, v.Version})
	}
	return nil
}

// KeyExport is the material of one version of an exportable key: 32 raw
// bytes for symmetric types, PKCS#8 DER for the others.
type KeyExport struct {
	Type    KeyType
	Version int
	Key     []byte
}

// Export returns a version's material (n = 0: latest). Only keys created
// exportable, and still so, can be exported.
func (k *KMS) Export(ctx context.Context, name string, n int) (KeyExport, error) {
	if err := checkName(name); err != nil {
		return KeyExport{}, err
	}
	if err := k.begin(); err != nil {
		return KeyExport{}, err
	}
	defer k.end()
	m, _, err := k.readMeta(ctx, name)
	if err != nil {
		return KeyExport{}, err
	}
	if !m.Exportable {
		return KeyExport{}, fmt.Errorf("%w: key %q", ErrNotExportable, name)
	}
	ti, err := m.Type.info()
	if err != nil {
		return KeyExport{}, err
	}
	if err := m.check(ti, ti.purpose, opConsume, n); err != nil {
		return KeyExport{}, err
	}
	if n == 0 {
		n = m.Latest
	}
	raw, err := k.b.get(ctx, tableKeyMat, materialKey(name, n))
	if err != nil {
		return KeyExport{}, err
	}
	defer clear(raw)
	var mat material
	if err := json.Unmarshal(raw, &mat); err != nil {
		return KeyExport{}, fmt.Errorf("%w: material of key %q", ErrCorrupt, name)
	}
	return KeyExport{Type: m.Type, Version: n, Key: mat.Key}, nil
}

// PublicKey returns the public key of a version (n = 0: latest) of a sign key.
func (k *KMS) PublicKey(ctx context.Context, name string, n int) (crypto.PublicKey, error) {
	if err := k.begin(); err != nil {
		return nil, err
	}
	defer k.end()
	_, v, err := k.use(ctx, name, purposeSign, opConsume, n)
	if err != nil {
		return nil, err
	}
	return v.publicKey(), nil
}
