package secrets

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/custos-pki/custos/raftstore"
)

// Limits of custom metadata (Vault's).
const (
	MaxCustomKeys        = 64
	MaxCustomKeyLength   = 128
	MaxCustomValueLength = 512
)

// VersionInfo describes one version of a secret.
type VersionInfo struct {
	Version int
	Created time.Time
	// DeletionTime is when the version was, or will be, soft-deleted; zero
	// when it is not.
	DeletionTime time.Time
	// Deleted is set once DeletionTime has passed.
	Deleted   bool
	Destroyed bool
}

// Secret is one version of a secret with its data.
type Secret struct {
	Path string
	// Data is the JSON object written, compacted.
	Data json.RawMessage
	VersionInfo
	CustomMetadata map[string]string
}

// Metadata is everything about a secret but its data.
type Metadata struct {
	Path           string
	Created        time.Time
	Updated        time.Time
	CurrentVersion int // 0 when only metadata was written
	OldestVersion  int // the oldest version kept
	// MaxVersions, DeleteVersionAfter and CASRequired are the secret's own
	// settings; 0 and false defer to the mount's.
	MaxVersions        int
	DeleteVersionAfter time.Duration
	CASRequired        bool
	CustomMetadata     map[string]string
	// Versions runs from OldestVersion to CurrentVersion.
	Versions []VersionInfo
}

// WriteOptions qualify a write.
type WriteOptions struct {
	// CAS, when set, is check-and-set: the write is done only if the
	// current version is *CAS (0: only if the secret has no version yet).
	CAS *int
}

// MetadataUpdate changes a secret's settings; nil fields are left alone.
// CustomMetadata, when not nil, replaces the whole map.
type MetadataUpdate struct {
	MaxVersions        *int
	DeleteVersionAfter *time.Duration
	CASRequired        *bool
	CustomMetadata     map[string]string
}

func (u *MetadataUpdate) check() error {
	if u.MaxVersions != nil || u.DeleteVersionAfter != nil {
		var mv int
		var dva time.Duration
		if u.MaxVersions != nil {
			mv = *u.MaxVersions
		}
		if u.DeleteVersionAfter != nil {
			dva = *u.DeleteVersionAfter
		}
		if err := checkSettings(mv, dva); err != nil {
			return err
		}
	}
	return checkCustom(u.CustomMetadata)
}

func checkCustom(m map[string]string) error {
	if len(m) > MaxCustomKeys {
		return fmt.Errorf("%w: custom metadata holds more than %d keys", ErrInvalid, MaxCustomKeys)
	}
	for k, v := range m {
		switch {
		case k == "" || len(k) > MaxCustomKeyLength:
			return fmt.Errorf("%w: custom metadata keys must be 1 to %d bytes", ErrInvalid, MaxCustomKeyLength)
		case len(v) > MaxCustomValueLength:
			return fmt.Errorf("%w: custom metadata %q: values must be at most %d bytes", ErrInvalid, clip(k), MaxCustomValueLength)
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return fmt.Errorf("%w: custom metadata must be UTF-8", ErrInvalid)
		case strings.IndexFunc(k, unicode.IsControl) >= 0:
			return fmt.Errorf("%w: custom metadata keys must not hold control characters", ErrInvalid)
		}
	}
	return nil
}

// record is a secret's metadata, stored at tableMeta/metaKey.
type record struct {
	ID                 string            `json:"id"` // random: names the data records
	Created            time.Time         `json:"created"`
	Updated            time.Time         `json:"updated"`
	Current            int               `json:"current"`
	MaxVersions        int               `json:"max_versions,omitempty"`
	DeleteVersionAfter time.Duration     `json:"delete_version_after,omitempty"`
	CASRequired        bool              `json:"cas_required,omitempty"`
	Custom             map[string]string `json:"custom,omitempty"`
	// Versions runs from the oldest version kept to Current, without gaps.
	Versions []versionRec `json:"versions,omitempty"`
}

type versionRec struct {
	Version      int       `json:"v"`
	Created      time.Time `json:"created"`
	DeletionTime time.Time `json:"deletion_time,omitzero"`
	Destroyed    bool      `json:"destroyed,omitempty"`
	// Key is the version's data key wrapped by the mount key; nil once
	// the version is destroyed.
	Key []byte `json:"key,omitempty"`
}

func newRecord(now time.Time) *record {
	return &record{ID: randomID(16), Created: now, Updated: now}
}

func metaKey(mountID, path string) []byte { return []byte(mountID + "/" + path) }

// dataKey is mountID/secretID/v, v in ten digits at least (%010d).
func dataKey(mountID, secretID string, v int) []byte {
	if v < 0 { // not a version; as fmt writes it
		return fmt.Appendf(nil, "%s/%s/%010d", mountID, secretID, v)
	}
	var d [20]byte
	n := strconv.AppendInt(d[:0], int64(v), 10)
	b := make([]byte, 0, len(mountID)+len(secretID)+2+max(len(n), 10))
	b = append(append(append(append(b, mountID...), '/'), secretID...), '/')
	for range 10 - len(n) {
		b = append(b, '0')
	}
	return append(b, n...)
}

// version returns version n, or nil when it is not kept.
func (r *record) version(n int) *versionRec {
	if len(r.Versions) == 0 {
		return nil
	}
	i := n - r.Versions[0].Version
	if i < 0 || i >= len(r.Versions) {
		return nil
	}
	return &r.Versions[i]
}

func (r *record) oldest() int {
	if len(r.Versions) == 0 {
		return 0
	}
	return r.Versions[0].Version
}

func (v *versionRec) deleted(now time.Time) bool {
	return !v.DeletionTime.IsZero() && !now.Before(v.DeletionTime)
}

func (v *versionRec) info(now time.Time) VersionInfo {
	return VersionInfo{Version: v.Version, Created: v.Created, DeletionTime: v.DeletionTime, Deleted: v.deleted(now), Destroyed: v.Destroyed}
}

// readable returns version n (0: the current one) if its data can be read.
func (r *record) readable(path string, n int, now time.Time) (*versionRec, error) {
	if r == nil || r.Current == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, path)
	}
	if n == 0 {
		n = r.Current
	}
	v := r.version(n)
	switch {
	case n < 0:
		return nil, fmt.Errorf("%w: version must be positive", ErrInvalid)
	case v == nil:
		return nil, fmt.Errorf("%w: %q version %d", ErrVersionNotFound, path, n)
	case v.Destroyed:
		return nil, fmt.Errorf("%w: %q version %d", ErrVersionDestroyed, path, n)
	case v.deleted(now):
		return nil, fmt.Errorf("%w: %q version %d", ErrVersionDeleted, path, n)
	}
	return v, nil
}

func (r *record) metadata(path string, now time.Time) *Metadata {
	md := &Metadata{
		Path: path, Created: r.Created, Updated: r.Updated, CurrentVersion: r.Current, OldestVersion: r.oldest(),
		MaxVersions: r.MaxVersions, DeleteVersionAfter: r.DeleteVersionAfter, CASRequired: r.CASRequired,
		CustomMetadata: maps.Clone(r.Custom), Versions: make([]VersionInfo, len(r.Versions)),
	}
	for i := range r.Versions {
		md.Versions[i] = r.Versions[i].info(now)
	}
	return md
}

// maxVersions is the secret's setting, else the mount's, else the default.
func (r *record) maxVersions(m *mountRec) int {
	switch {
	case r.MaxVersions > 0:
		return r.MaxVersions
	case m.MaxVersions > 0:
		return m.MaxVersions
	}
	return DefaultMaxVersions
}

// deleteAfter is the shorter of the secret's and the mount's setting.
func (r *record) deleteAfter(m *mountRec) time.Duration {
	a, b := r.DeleteVersionAfter, m.DeleteVersionAfter
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// prune drops the oldest versions beyond max_versions and returns the ops
// deleting their data.
func (r *record) prune(m *mountRec) []raftstore.Op {
	var ops []raftstore.Op
	for len(r.Versions) > r.maxVersions(m) {
		if v := r.Versions[0]; !v.Destroyed {
			ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableData, Key: dataKey(m.ID, r.ID, v.Version)})
		}
		r.Versions = r.Versions[1:]
	}
	return ops
}

// dataOps returns the ops deleting the data of every version kept.
func (r *record) dataOps(m *mountRec) []raftstore.Op {
	var ops []raftstore.Op
	for _, v := range r.Versions {
		if !v.Destroyed {
			ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableData, Key: dataKey(m.ID, r.ID, v.Version)})
		}
	}
	return ops
}

// checkVersions validates a list of versions given by a caller.
func checkVersions(vs []int, required bool) error {
	switch {
	case required && len(vs) == 0:
		return fmt.Errorf("%w: give the versions", ErrInvalid)
	case len(vs) > MaxVersionsLimit:
		return fmt.Errorf("%w: more than %d versions", ErrInvalid, MaxVersionsLimit)
	}
	for _, v := range vs {
		if v < 1 {
			return fmt.Errorf("%w: versions must be positive", ErrInvalid)
		}
	}
	return nil
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func jsonUnmarshal(raw []byte, v any) error { return json.Unmarshal(raw, v) }
