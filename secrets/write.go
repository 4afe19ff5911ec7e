package secrets

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// maxAttempts bounds how often a write is tried again after another writer
// changed the secret first.
const maxAttempts = 16

// change edits a secret's record (nil when the secret does not exist) and
// returns the record to store (nil: delete it) with more ops for the same
// transaction.
type change func(m *mountRec, rec *record, now time.Time) (*record, []raftstore.Op, error)

// update applies fn to the secret at path in one transaction that checks
// the mount is live and swaps the metadata record, trying again from a
// fresh read when another writer changed the record first. Under a guard
// (WithGuard) the first try reads from this node's state and commits with
// the guard's compares and the mount's.
func (s *Store) update(ctx context.Context, mount, path string, fn change) (*mountRec, *record, error) {
	if err := CheckPath(path); err != nil {
		return nil, nil, err
	}
	defer s.lock(mount, path)()
	g := guardOf(ctx)
	confirmed := g == nil
	for attempt := 0; ; attempt++ {
		d, err := s.prepare(ctx, mount, path, fn, attempt, g != nil)
		if errors.Is(err, errDataGone) && attempt < maxAttempts-1 {
			continue // the record changed since it was read
		}
		if err != nil && !confirmed {
			// Decided from state that may be behind: confirm the
			// guard, then decide again on current state.
			if err := g.Confirm(ctx); err != nil {
				return nil, nil, err
			}
			confirmed = true
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		meta := raftstore.Op{Kind: raftstore.OpCAS, Table: tableMeta, Key: metaKey(d.m.ID, path), Old: d.raw, Delete: d.next == nil}
		if d.next != nil {
			if meta.Value, err = jsonMarshal(d.next); err != nil {
				return nil, nil, err
			}
		}
		var guard []raftstore.Op
		if g != nil {
			guard = g.Ops()
		}
		ops := make([]raftstore.Op, 0, len(guard)+3+len(d.ops))
		ops = append(ops, guard...)
		if g != nil {
			ops = append(ops, raftstore.Op{Kind: raftstore.OpCompare, Table: tableMounts, Key: []byte(mount), Old: d.mraw})
		}
		ops = append(append(ops, liveOp(d.m), meta), d.ops...)
		res, err := s.st.Txn(ctx, ops)
		if err != nil {
			return nil, nil, fmt.Errorf("%q: %w", path, err)
		}
		if res.Succeeded {
			return d.m, d.next, nil
		}
		if res.FailedOp < len(guard) {
			// The token or a policy changed since the decision: decide
			// again on current state, which answers a revoked token.
			if err := g.Confirm(ctx); err != nil {
				return nil, nil, err
			}
			confirmed = true
			if attempt < maxAttempts-1 {
				continue
			}
		}
		if err := backoff(ctx, attempt); err != nil {
			return nil, nil, fmt.Errorf("%q: %w", path, err)
		}
	}
}

// draft is a change to a secret, ready to commit.
type draft struct {
	m    *mountRec
	mraw []byte  // the mount as stored
	raw  []byte  // the secret's metadata as stored; nil when absent
	next *record // nil: delete the secret
	ops  []raftstore.Op
}

// prepare reads the mount and the secret and applies fn. The mount is read
// from this node's state on a guarded first try, else linearizably
// (readMount).
func (s *Store) prepare(ctx context.Context, mount, path string, fn change, attempt int, guarded bool) (draft, error) {
	var (
		d   draft
		err error
	)
	if guarded && attempt == 0 {
		d.m, d.mraw, err = s.readMountWith(ctx, mount, staleRead...)
	} else {
		d.m, d.mraw, err = s.readMount(ctx, mount)
	}
	if err != nil {
		return d, err
	}
	var rec *record
	if rec, d.raw, err = s.readRecord(ctx, d.m, path); err != nil {
		return d, err
	}
	d.next, d.ops, err = fn(d.m, rec, s.now())
	return d, err
}

// liveOp aborts a transaction once the mount is being deleted.
func liveOp(m *mountRec) raftstore.Op {
	return raftstore.Op{Kind: raftstore.OpGet, Table: tableLive, Key: []byte(m.ID)}
}

// backoff waits a random while, growing with attempt, before another try;
// after the last attempt it returns ErrBusy.
func backoff(ctx context.Context, attempt int) error {
	if attempt >= maxAttempts-1 {
		return fmt.Errorf("%w: gave up after %d attempts", ErrBusy, maxAttempts)
	}
	d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 7)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// readRecord returns the record of the secret at path, and its stored
// form, or nil and nil when there is none.
//
// Reads after the mount's are stale reads of this node's state: the
// linearizable read of the mount has brought that state up to date with
// every write acknowledged before the call began, so the call as a whole
// stays linearizable, for one read-index round instead of three.
func (s *Store) readRecord(ctx context.Context, m *mountRec, path string) (*record, []byte, error) {
	return s.readRecordWith(ctx, m, path, func(raw []byte) (*record, error) {
		rec := new(record)
		return rec, jsonUnmarshal(raw, rec)
	})
}

// readRecordShared is readRecord for readers that do not change the
// record: it may be shared with other calls, through the decode cache.
func (s *Store) readRecordShared(ctx context.Context, m *mountRec, path string) (*record, error) {
	rec, _, err := s.readRecordWith(ctx, m, path, s.records.Decode)
	return rec, err
}

func (s *Store) readRecordWith(ctx context.Context, m *mountRec, path string, decode func([]byte) (*record, error)) (*record, []byte, error) {
	raw, err := s.st.Get(ctx, tableMeta, metaKey(m.ID, path), staleRead...)
	if errors.Is(err, raftstore.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	rec, err := decode(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("secrets: metadata of %q does not decode: %w", path, err)
	}
	return rec, raw, nil
}

// Put writes data, a JSON object, as the secret's next version.
func (s *Store) Put(ctx context.Context, mount, path string, data []byte, o WriteOptions) (VersionInfo, error) {
	data, err := CheckData(data)
	if err != nil {
		return VersionInfo{}, err
	}
	var out VersionInfo
	_, _, err = s.update(ctx, mount, path, func(m *mountRec, rec *record, now time.Time) (*record, []raftstore.Op, error) {
		return s.addVersion(ctx, m, path, rec, now, data, o, &out)
	})
	return out, err
}

// addVersion adds a version holding data to rec (a new record when nil).
func (s *Store) addVersion(ctx context.Context, m *mountRec, path string, rec *record, now time.Time, data []byte, o WriteOptions, out *VersionInfo) (*record, []raftstore.Op, error) {
	if rec == nil {
		rec = newRecord(now)
	}
	switch {
	case o.CAS == nil && (m.CASRequired || rec.CASRequired):
		return nil, nil, fmt.Errorf("%w: %q: give cas, the current version (%d)", ErrCASRequired, path, rec.Current)
	case o.CAS != nil && *o.CAS != rec.Current:
		return nil, nil, fmt.Errorf("%w: %q: cas %d, current version %d", ErrCASMismatch, path, *o.CAS, rec.Current)
	case rec.Current == maxVersion:
		return nil, nil, fmt.Errorf("%w: %q has reached the last version number", ErrInvalid, path)
	}
	n := rec.Current + 1
	wrapped, sealed, err := s.seal(ctx, m, path, rec, n, data)
	if err != nil {
		return nil, nil, err
	}
	v := versionRec{Version: n, Created: now, Key: wrapped}
	if d := rec.deleteAfter(m); d > 0 {
		v.DeletionTime = now.Add(d)
	}
	rec.Versions = append(rec.Versions, v)
	rec.Current, rec.Updated = n, now
	*out = v.info(now)
	ops := []raftstore.Op{{Kind: raftstore.OpPut, Table: tableData, Key: dataKey(m.ID, rec.ID, n), Value: sealed}}
	return rec, append(ops, rec.prune(m)...), nil
}

// maxVersion is the largest version number (data keys hold ten digits).
const maxVersion = 1<<31 - 1

// Patch applies patch, an RFC 7386 JSON merge patch, to the current version
// and writes the result as the next version. The current version must be
// readable: neither deleted nor destroyed.
func (s *Store) Patch(ctx context.Context, mount, path string, patch []byte, o WriteOptions) (VersionInfo, error) {
	if _, err := CheckData(patch); err != nil {
		return VersionInfo{}, err
	}
	var out VersionInfo
	_, _, err := s.update(ctx, mount, path, func(m *mountRec, rec *record, now time.Time) (*record, []raftstore.Op, error) {
		if o.CAS != nil && rec != nil && *o.CAS != rec.Current {
			return nil, nil, fmt.Errorf("%w: %q: cas %d, current version %d", ErrCASMismatch, path, *o.CAS, rec.Current)
		}
		v, err := rec.readable(path, 0, now)
		if err != nil {
			return nil, nil, err
		}
		cur, err := s.readData(ctx, m, path, rec, v)
		if err != nil {
			return nil, nil, err
		}
		merged, err := mergePatch(cur, patch)
		clear(cur)
		if err != nil {
			return nil, nil, err
		}
		return s.addVersion(ctx, m, path, rec, now, merged, o, &out)
	})
	return out, err
}

// editVersions applies fn to each of versions (none: the current version)
// that is kept, after checking that each was written.
func (s *Store) editVersions(ctx context.Context, mount, path string, versions []int, required bool,
	fn func(m *mountRec, rec *record, v *versionRec, now time.Time) []raftstore.Op) error {
	if err := checkVersions(versions, required); err != nil {
		return err
	}
	_, _, err := s.update(ctx, mount, path, func(m *mountRec, rec *record, now time.Time) (*record, []raftstore.Op, error) {
		if rec == nil || rec.Current == 0 {
			return nil, nil, fmt.Errorf("%w: %q", ErrNotFound, path)
		}
		vs := versions
		if len(vs) == 0 {
			vs = []int{rec.Current}
		}
		var ops []raftstore.Op
		for _, n := range vs {
			if n > rec.Current {
				return nil, nil, fmt.Errorf("%w: %q version %d", ErrVersionNotFound, path, n)
			}
			if v := rec.version(n); v != nil && !v.Destroyed {
				ops = append(ops, fn(m, rec, v, now)...)
			}
		}
		rec.Updated = now
		return rec, ops, nil
	})
	return err
}

// Delete soft-deletes versions (none: the current version): they cannot
// be read until undeleted. Destroyed and pruned versions are left alone.
func (s *Store) Delete(ctx context.Context, mount, path string, versions ...int) error {
	return s.editVersions(ctx, mount, path, versions, false, func(_ *mountRec, _ *record, v *versionRec, now time.Time) []raftstore.Op {
		if !v.deleted(now) {
			v.DeletionTime = now
		}
		return nil
	})
}

// Undelete restores soft-deleted versions, and cancels a scheduled
// deletion (delete_version_after) of the others.
func (s *Store) Undelete(ctx context.Context, mount, path string, versions ...int) error {
	return s.editVersions(ctx, mount, path, versions, true, func(_ *mountRec, _ *record, v *versionRec, _ time.Time) []raftstore.Op {
		v.DeletionTime = time.Time{}
		return nil
	})
}

// Destroy deletes the data of versions for good; their metadata stays,
// marked destroyed.
func (s *Store) Destroy(ctx context.Context, mount, path string, versions ...int) error {
	return s.editVersions(ctx, mount, path, versions, true, func(m *mountRec, rec *record, v *versionRec, _ time.Time) []raftstore.Op {
		clear(v.Key)
		v.Destroyed, v.Key = true, nil
		return []raftstore.Op{{Kind: raftstore.OpDelete, Table: tableData, Key: dataKey(m.ID, rec.ID, v.Version)}}
	})
}

// PutMetadata changes a secret's settings and custom metadata, creating a
// secret without versions if there is none. Lowering max_versions prunes
// the oldest versions at once.
func (s *Store) PutMetadata(ctx context.Context, mount, path string, u MetadataUpdate) (*Metadata, error) {
	if err := u.check(); err != nil {
		return nil, err
	}
	_, rec, err := s.update(ctx, mount, path, func(m *mountRec, rec *record, now time.Time) (*record, []raftstore.Op, error) {
		if rec == nil {
			rec = newRecord(now)
		}
		if u.MaxVersions != nil {
			rec.MaxVersions = *u.MaxVersions
		}
		if u.DeleteVersionAfter != nil {
			rec.DeleteVersionAfter = *u.DeleteVersionAfter
		}
		if u.CASRequired != nil {
			rec.CASRequired = *u.CASRequired
		}
		if u.CustomMetadata != nil {
			rec.Custom = maps.Clone(u.CustomMetadata)
		}
		rec.Updated = now
		return rec, rec.prune(m), nil
	})
	if err != nil {
		return nil, err
	}
	return rec.metadata(path, s.now()), nil
}

// DeleteMetadata deletes a secret: every version and its metadata.
func (s *Store) DeleteMetadata(ctx context.Context, mount, path string) error {
	_, _, err := s.update(ctx, mount, path, func(m *mountRec, rec *record, _ time.Time) (*record, []raftstore.Op, error) {
		if rec == nil {
			return nil, nil, fmt.Errorf("%w: %q", ErrNotFound, path)
		}
		return nil, rec.dataOps(m), nil
	})
	return err
}

// Move moves a secret, with all its versions and metadata, from one path
// to another of the same mount in one transaction. It fails with ErrExists
// if a secret is at the destination.
func (s *Store) Move(ctx context.Context, mount, from, to string) error {
	for _, p := range []string{from, to} {
		if err := CheckPath(p); err != nil {
			return err
		}
	}
	if from == to {
		return fmt.Errorf("%w: source and destination are the same path", ErrInvalid)
	}
	if g := guardOf(ctx); g != nil {
		if err := g.Confirm(ctx); err != nil {
			return err
		}
	}
	defer s.lock(mount, from, to)()
	for attempt := 0; ; attempt++ {
		done, err := s.moveOnce(ctx, mount, from, to)
		if err != nil || done {
			return err
		}
		if err := backoff(ctx, attempt); err != nil {
			return fmt.Errorf("move %q: %w", from, err)
		}
	}
}

func (s *Store) moveOnce(ctx context.Context, mount, from, to string) (bool, error) {
	m, _, err := s.readMount(ctx, mount)
	if err != nil {
		return false, err
	}
	rec, raw, err := s.readRecord(ctx, m, from)
	if err != nil {
		return false, err
	}
	if rec == nil {
		return false, fmt.Errorf("%w: %q", ErrNotFound, from)
	}
	if dst, _, err := s.readRecord(ctx, m, to); err != nil || dst != nil {
		return false, errors.Join(err, existsErr(dst, to))
	}
	next := *rec
	next.Versions = make([]versionRec, len(rec.Versions))
	for i, v := range rec.Versions {
		if v.Key != nil {
			if v.Key, err = s.rewrap(ctx, m, from, to, rec, &v); err != nil {
				return false, err
			}
		}
		next.Versions[i] = v
	}
	next.Updated = s.now()
	val, err := jsonMarshal(&next)
	if err != nil {
		return false, err
	}
	res, err := s.st.Txn(ctx, []raftstore.Op{
		liveOp(m),
		{Kind: raftstore.OpCAS, Table: tableMeta, Key: metaKey(m.ID, from), Old: raw, Delete: true},
		{Kind: raftstore.OpCAS, Table: tableMeta, Key: metaKey(m.ID, to), Value: val},
	})
	if err != nil {
		return false, fmt.Errorf("move %q: %w", from, err)
	}
	if !res.Succeeded && res.FailedOp == 2 {
		return false, existsErr(&next, to)
	}
	return res.Succeeded, nil
}

func existsErr(dst *record, to string) error {
	if dst == nil {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrExists, to)
}
