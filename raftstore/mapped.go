package raftstore

import (
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The state file is mapped into the node's memory by bbolt, and every page
// a read touches stays mapped: resident memory (RSS) counts it, as do the
// kernel's out-of-memory scores, though the page is clean file cache. A
// snapshot, a certificate tidy or a listing reads the whole file, so a
// node with a 3 GB state file showed 2.4 GB of RSS of such pages after
// them, against 134 MB of its own memory.
//
// The store therefore drops its mapping of the state file's pages
// (madvise MADV_DONTNEED) every releaseInterval once the file is at least
// releaseMinSize, and as a snapshot reads it, every snapshotRelease bytes
// and at the end. The pages stay in the page cache: the next read of one
// maps it again with a minor fault, no disk read. RSS then counts the
// pages used since the last release, not every page ever read. The Raft
// log's file is left alone: it is bounded by the log's compaction and is
// not read by scans.
const (
	releaseInterval = 10 * time.Second
	releaseMinSize  = 128 << 20
)

// releaseMapped drops the process's mapping of the state file's pages when
// the file holds at least min bytes, and returns how many bytes it
// released. It runs inside a read transaction: bbolt replaces its mapping
// (when the file grows) only while no transaction is open, so the range
// is the file's mapping for as long as the call lasts. The caller must not
// hold a transaction of the file itself: a remap waiting for it would
// block this one.
func (f *fsm) releaseMapped(min int64) (released int64, err error) {
	err = f.view(func(tx *bolt.Tx) error {
		size := tx.Size()
		if size < min || size <= 0 {
			return nil
		}
		if err := dropMapped(f.db.Info().Data, size); err != nil {
			return err
		}
		released = size
		return nil
	})
	return released, err
}

// snapshotRelease is how many bytes of snapshot a scan of the state file
// writes between two releases of the file's mapped pages: without them a
// snapshot of a 3 GB file mapped all of it.
var snapshotRelease int64 = 32 << 20

// releasing returns w, which takes a snapshot of tx, made to release the
// state file's mapped pages every snapshotRelease bytes, if the file is
// large enough. tx holds the mapping in place while w is written.
func (f *fsm) releasing(w io.Writer, tx *bolt.Tx) io.Writer {
	size := tx.Size()
	if size < f.releaseMin || size <= 0 {
		return w
	}
	data := tx.DB().Info().Data
	return &releasingWriter{w: w, release: func() { _ = dropMapped(data, size) }}
}

type releasingWriter struct {
	w       io.Writer
	n       int64 // bytes since the last release
	release func()
}

func (r *releasingWriter) Write(p []byte) (int, error) {
	if r.n += int64(len(p)); r.n >= snapshotRelease {
		r.n = 0
		r.release()
	}
	return r.w.Write(p)
}

// releaseMappedLoop releases the state file's mapped pages every
// releaseInterval until the store closes.
func (s *Store) releaseMappedLoop() {
	defer s.wg.Done()
	t := time.NewTicker(releaseInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			if _, err := s.fsm.releaseMapped(s.fsm.releaseMin); err != nil {
				s.logger.Warn("releasing the state file's mapped pages failed", "error", err)
			}
		}
	}
}
