package raftstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Bucket layout of the state file. User tables live under tablePrefix;
// everything else is the store's own.
var (
	bucketMeta   = []byte("_meta")   // appliedKey -> index (8 bytes, big endian); clusterIDKey -> ID
	bucketReq    = []byte("_req")    // request ID -> encoded result
	bucketReqIdx = []byte("_reqidx") // index(8) || request ID -> empty
	appliedKey   = []byte("applied")
	clusterIDKey = []byte("cluster_id")
	tablePrefix  = "t/"
)

// dedupWindow is how many log entries a request ID is remembered for. A
// forwarded request retried within this window is answered from memory and
// not applied again.
const dedupWindow = 100_000

func tableBucket(name string) []byte { return []byte(tablePrefix + name) }

// fsm is the state machine: a bbolt file holding the tables and the index of
// the last applied log entry, both written in the same transaction.
//
// Durability comes from the Raft log, which is fsynced on a quorum before an
// entry commits. The state file is written without fsync, so applying a batch
// costs no disk flush on the write path. It is flushed and marked clean when
// the node closes; a node that finds no clean mark (it crashed) discards the
// file and rebuilds it from the newest snapshot and the log after it, which
// raft replays. A clean restart reads the applied index back from the file
// and replays nothing it holds.
type fsm struct {
	path string

	mu sync.RWMutex // write-held only while Restore swaps the file
	db *bolt.DB

	applied  atomic.Uint64
	skipped  atomic.Uint64 // entries not applied because the file held them
	restores atomic.Uint64 // snapshots installed
	waitMu   sync.Mutex
	advance  chan struct{} // closed and replaced whenever applied moves

	// onRestore, when set, is called after a snapshot replaced the state
	// of a running node. It must not block.
	onRestore func()

	ordered [][]byte // buckets whose pages are filled (fill.go)

	releaseMin int64         // the smallest file whose mapped pages are released (mapped.go)
	scanned    atomic.Int64  // bytes listings read since the last kick
	scanKicks  atomic.Int64  // releases asked for by listings
	kick       chan struct{} // asks the release loop for a release

	// tables are user tables known to be in the state file, so that a
	// write need not open a transaction to check its tables. No table is
	// ever dropped: only install, which replaces the file, forgets them.
	tablesMu sync.RWMutex
	tables   map[string]struct{}
}

var _ raft.BatchingFSM = (*fsm)(nil)

// statePageSize is the page size of new state files (an existing file
// keeps its own). bbolt splits an overflowing page so that the page after
// the split keeps at least two keys: with 4 KiB pages and records of a
// certificate (about 800 bytes, five to a page), appended records leave
// every page but the last two-fifths full. With 16 KiB pages twenty fit,
// and pages are filled as FillPercent asks (fill.go).
const statePageSize = 16 << 10

func openBolt(path string) (*bolt.DB, error) {
	return bolt.Open(path, 0o600, &bolt.Options{
		PageSize:        statePageSize,
		Timeout:         5 * time.Second,
		InitialMmapSize: 64 << 20,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
		NoSync:          true,
	})
}

func cleanMark(path string) string { return path + ".clean" }

// newFSM opens the state file, or starts a new one when the node did not
// close cleanly (see fsm).
func newFSM(path string) (*fsm, error) {
	f := &fsm{path: path, advance: make(chan struct{}), tables: map[string]struct{}{}, releaseMin: releaseMinSize, kick: make(chan struct{}, 1)}
	switch _, err := os.Stat(cleanMark(path)); {
	case err == nil:
		if err := os.Remove(cleanMark(path)); err != nil {
			return nil, fmt.Errorf("state file: %w", err)
		}
	case errors.Is(err, os.ErrNotExist):
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("state file: %w", err)
		}
	default:
		return nil, fmt.Errorf("state file: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	db, err := openBolt(path)
	if err != nil {
		return nil, fmt.Errorf("open state file: %w", err)
	}
	if err := initState(db); err != nil {
		db.Close()
		return nil, err
	}
	f.db = db
	idx, err := readApplied(db)
	if err != nil {
		db.Close()
		return nil, err
	}
	f.applied.Store(idx)
	return f, nil
}

func initState(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketReq, bucketReqIdx} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// readClusterID returns the ID of the cluster the state belongs to, empty
// if it names none (a state from before cluster IDs, or a new cluster whose
// first leader has not recorded one yet).
func readClusterID(db *bolt.DB) (string, error) {
	var id string
	err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			id = string(b.Get(clusterIDKey))
		}
		return nil
	})
	return id, err
}

// clusterID returns the cluster ID in this node's state.
func (f *fsm) clusterID() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	id, _ := readClusterID(f.db)
	return id
}

func readApplied(db *bolt.DB) (uint64, error) {
	var idx uint64
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if b == nil {
			return errors.New("state file has no meta bucket")
		}
		if v := b.Get(appliedKey); len(v) == 8 {
			idx = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return idx, err
}

// close closes the state file. A clean close flushes it and leaves the mark
// that lets the next start trust it.
func (f *fsm) close(clean bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !clean {
		return f.db.Close()
	}
	if err := f.db.Sync(); err != nil {
		f.db.Close()
		return fmt.Errorf("flush state file: %w", err)
	}
	if err := f.db.Close(); err != nil {
		return err
	}
	if err := writeSynced(cleanMark(f.path), bytes.NewReader(nil)); err != nil {
		return err
	}
	return syncDir(filepath.Dir(f.path))
}

// missingTable returns a table of ops that the state does not hold, ""
// if it holds them all.
func (f *fsm) missingTable(ops []Op) string {
	f.tablesMu.RLock()
	known := true
	for i := range ops {
		if _, ok := f.tables[ops[i].Table]; !ok {
			known = false
			break
		}
	}
	f.tablesMu.RUnlock()
	if known {
		return ""
	}
	var name string
	_ = f.view(func(tx *bolt.Tx) error {
		for i := range ops {
			if tx.Bucket(tableBucket(ops[i].Table)) == nil {
				name = ops[i].Table
				return nil
			}
		}
		// Recorded under the view's hold on the file, which install
		// waits for before it replaces the file and forgets the tables.
		f.tablesMu.Lock()
		for i := range ops {
			f.tables[ops[i].Table] = struct{}{}
		}
		f.tablesMu.Unlock()
		return nil
	})
	return name
}

// view runs fn in a read transaction of the current state file.
func (f *fsm) view(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(fn)
}

func (f *fsm) appliedIndex() uint64 { return f.applied.Load() }

func (f *fsm) setApplied(idx uint64) {
	f.applied.Store(idx)
	f.waitMu.Lock()
	close(f.advance)
	f.advance = make(chan struct{})
	f.waitMu.Unlock()
}

// waitApplied blocks until the state holds every entry up to idx.
func (f *fsm) waitApplied(ctx context.Context, idx uint64) error {
	for {
		f.waitMu.Lock()
		ch := f.advance
		f.waitMu.Unlock()
		if f.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for index %d", ErrTimeout, idx)
		}
	}
}

// Apply applies one log entry.
func (f *fsm) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a batch of committed entries in one bbolt transaction,
// together with the new applied index. Entries at or below the index already
// in the file are skipped: raft replays them after a restart because the
// node does not restore a snapshot on start.
func (f *fsm) ApplyBatch(logs []*raft.Log) []interface{} {
	resp := make([]interface{}, len(logs))
	applied := f.applied.Load()
	last := applied
	f.mu.RLock()
	defer f.mu.RUnlock()
	err := f.db.Update(func(tx *bolt.Tx) error {
		f.fillOrdered(tx)
		a := newApplier(tx)
		for i, l := range logs {
			if l.Index <= applied {
				f.skipped.Add(1)
				continue
			}
			if l.Type == raft.LogCommand {
				if len(l.Data) > 0 && l.Data[0] == batchVersion {
					resp[i] = a.applyBatchEntry(l)
				} else {
					resp[i] = a.applyCommand(l.Index, l.Data)
				}
			}
			last = l.Index
		}
		if last == applied {
			return nil
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], last)
		return tx.Bucket(bucketMeta).Put(appliedKey, v[:])
	})
	if err != nil {
		// The state file cannot be written (disk full, I/O error). Going on
		// would let this node's state diverge from its log: stop here.
		panic(fmt.Sprintf("raftstore: state file write failed at index %d: %v", last, err))
	}
	if last != applied {
		f.setApplied(last)
	}
	return resp
}

// Snapshot captures the state in a bbolt read transaction, which Persist
// streams to the sink in the compact form (snapfile.go).
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{fsm: f, tx: tx}, nil
}

type fsmSnapshot struct {
	fsm  *fsm
	once sync.Once
	tx   *bolt.Tx
}

// Persist streams the snapshot, which reads every page of the state file:
// it releases the file's mapped pages as it goes and when it is done
// (mapped.go).
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	err := writeCompact(s.fsm.releasing(sink, s.tx), s.tx)
	s.Release()
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return err
	}
	_, _ = s.fsm.releaseMapped(s.fsm.releaseMin) // only memory is at stake: the next tick tries again
	return nil
}

func (s *fsmSnapshot) Release() { s.once.Do(func() { s.tx.Rollback() }) }

// Restore replaces the state with a snapshot of either form (snapfile.go):
// it is written to a temporary state file, fsynced, checked and renamed
// over the state file.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.path + ".restore"
	if err := writeStateFile(tmp, rc); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}
	check, err := openBolt(tmp)
	if err == nil {
		_, err = readApplied(check)
		check.Close()
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: snapshot is not a state file: %w", err)
	}

	if err := f.install(tmp); err != nil {
		return err
	}
	f.restores.Add(1)
	if f.onRestore != nil {
		f.onRestore()
	}
	return nil
}

// install renames the checked file tmp over the state file and opens it.
func (f *fsm) install(tmp string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("restore: close state file: %w", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := syncDir(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	db, err := openBolt(f.path)
	if err != nil {
		return fmt.Errorf("restore: reopen: %w", err)
	}
	if err := initState(db); err != nil {
		db.Close()
		return fmt.Errorf("restore: %w", err)
	}
	idx, err := readApplied(db)
	if err != nil {
		db.Close()
		return fmt.Errorf("restore: %w", err)
	}
	f.db = db
	f.tablesMu.Lock()
	clear(f.tables)
	f.tablesMu.Unlock()
	f.setApplied(idx)
	return nil
}

func writeSynced(path string, r io.Reader) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
