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
// (madvise MADV_DONTNEED) once the file is at least releaseMinSize: every
// releaseInterval, sooner when the process's resident file pages pass
// releaseBudget, every scanRelease bytes that listings read, and as a
// snapshot reads the file, every snapshotRelease bytes and at the end. The
// pages stay in the page cache: the next read of one maps it again with a
// minor fault, no disk read. RSS then counts the pages used since the last
// release, not every page ever read. The Raft log's file is left alone: it
// is bounded by the log's compaction and is not read by scans.
const (
	releaseInterval = 10 * time.Second
	releaseCheck    = time.Second
	releaseBudget   = 384 << 20
	releaseMinSize  = 128 << 20
)

// releaseMapped drops the process's mapping of the state file's pages when
// the file holds at least min bytes, and returns how many bytes it
// released. The caller must not hold a transaction of the file itself: a
// remap waiting for it would block this one's.
func (f *fsm) releaseMapped(min int64) (released int64, err error) {
	err = f.view(func(tx *bolt.Tx) error {
		released, err = dropMappedIn(tx, min)
		return err
	})
	return released, err
}

// dropMappedIn drops the mapping of tx's file when it holds at least min
// bytes, and returns how many bytes it released. bbolt replaces its
// mapping (when the file grows) only while no transaction is open, so the
// range is the file's mapping for as long as tx is.
func dropMappedIn(tx *bolt.Tx, min int64) (int64, error) {
	size := tx.Size()
	if size < min || size <= 0 {
		return 0, nil
	}
	if err := dropMapped(tx.DB().Info().Data, size); err != nil {
		return 0, err
	}
	return size, nil
}

// snapshotRelease is how many bytes of snapshot a scan of the state file
// writes between two releases of the file's mapped pages: without them a
// snapshot of a 3 GB file mapped all of it.
var snapshotRelease int64 = 32 << 20

// releasing returns w, which takes a snapshot of tx, made to release the
// state file's mapped pages every snapshotRelease bytes, if the file is
// large enough.
func (f *fsm) releasing(w io.Writer, tx *bolt.Tx) io.Writer {
	return &releasingWriter{w: w, release: func() { _, _ = dropMappedIn(tx, f.releaseMin) }}
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

// scanRelease is how many bytes of records listings read between two
// releases of the state file's mapped pages: a listing, tidy or CRL over a
// million certificates reads a gigabyte of the file in seconds.
var scanRelease int64 = 32 << 20

// noteScanned counts n bytes of records a listing read and asks the
// release loop for a release every scanRelease bytes.
func (f *fsm) noteScanned(n int64) {
	if f.scanned.Add(n) < scanRelease {
		return
	}
	f.scanned.Add(-scanRelease)
	f.scanKicks.Add(1)
	select {
	case f.kick <- struct{}{}:
	default: // one is pending
	}
}

// releaseMappedLoop releases the state file's mapped pages until the
// store closes: every releaseInterval, and as soon as the process's
// resident file pages (checked every releaseCheck) pass releaseBudget, so
// that writes all over a large file (random keys) cannot map more than a
// second's worth between two releases, and every scanRelease bytes that
// listings read (noteScanned).
func (s *Store) releaseMappedLoop() {
	defer s.wg.Done()
	t := time.NewTicker(releaseCheck)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-s.closing:
			return
		case <-s.fsm.kick:
		case now := <-t.C:
			resident, known := residentFileBytes()
			if !releaseDue(now.Sub(last), resident, known) {
				continue
			}
		}
		last = time.Now()
		if _, err := s.fsm.releaseMapped(s.fsm.releaseMin); err != nil {
			s.logger.Warn("releasing the state file's mapped pages failed", "error", err)
		}
	}
}

// releaseDue reports whether to release the state file's mapped pages,
// since long after the last release, with resident bytes of file pages
// in the process (if known).
func releaseDue(since time.Duration, resident int64, known bool) bool {
	return since >= releaseInterval || known && resident > releaseBudget
}
