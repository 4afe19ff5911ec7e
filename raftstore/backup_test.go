package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// putN writes n keys, spread over the live nodes.
func putN(t *testing.T, c *testCluster, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		s := c.live()[i%len(c.live())]
		if err := s.Put(ctxT(t, settle), "kv", fmt.Appendf(nil, "%s%04d", prefix, i), []byte(prefix)); err != nil {
			t.Fatalf("put %d on %s: %v", i, s.ID(), err)
		}
	}
}

// TestRestoreBackupOfAnotherClusterThatWasFurtherAlong restores the backup
// of a cluster whose log is longer than the target's. The state machine
// must take the target's Raft index, not the one inside the backup, or it
// skips every write after the restore.
func TestRestoreBackupOfAnotherClusterThatWasFurtherAlong(t *testing.T) {
	a := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, a.node("node1"), "kv")
	putN(t, a, "a", 300)
	var backup bytes.Buffer
	if _, err := a.node("node3").Backup(ctxT(t, settle), &backup); err != nil {
		t.Fatal(err)
	}
	idA := a.node("node1").ClusterID()

	b := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, b.node("node1"), "kv")
	putN(t, b, "b", 5)
	idB := b.node("node2").ClusterID()
	if idA == "" || idB == "" || idA == idB {
		t.Fatalf("cluster IDs %q and %q", idA, idB)
	}
	leader := b.waitLeader(settle)
	if leader.raft.LastIndex() >= a.node("node1").AppliedIndex() {
		t.Fatalf("cluster B (index %d) is not behind A (%d): nothing is tested", leader.raft.LastIndex(), a.node("node1").AppliedIndex())
	}

	err := leader.Restore(ctxT(t, 30*time.Second), bytes.NewReader(backup.Bytes()), false)
	if !errors.Is(err, ErrOtherCluster) || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("restore of another cluster's backup without force: %v", err)
	}
	if _, err := leader.Get(ctxT(t, settle), "kv", []byte("b0000")); err != nil {
		t.Fatalf("a refused restore changed the state: %v", err)
	}
	if err := leader.Restore(ctxT(t, 30*time.Second), bytes.NewReader(backup.Bytes()), true); err != nil {
		t.Fatalf("forced restore: %v", err)
	}

	// Every node takes writes and reads them back, at once.
	for i, s := range b.live() {
		key := fmt.Appendf(nil, "after-%d", i)
		if err := s.Put(ctxT(t, settle), "kv", key, []byte(s.ID())); err != nil {
			t.Fatalf("write on %s after the restore: %v", s.ID(), err)
		}
	}
	for _, s := range b.live() {
		for i := range b.live() {
			v, err := s.Get(ctxT(t, settle), "kv", fmt.Appendf(nil, "after-%d", i))
			if err != nil || string(v) != b.live()[i].ID() {
				t.Fatalf("%s reads after-%d = %q, %v", s.ID(), i, v, err)
			}
		}
		if v, err := s.Get(ctxT(t, settle), "kv", []byte("a0299")); err != nil || string(v) != "a" {
			t.Fatalf("%s: the backup's data: %q, %v", s.ID(), v, err)
		}
		if _, err := s.Get(ctxT(t, settle), "kv", []byte("b0000")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: B's own data survived the restore: %v", s.ID(), err)
		}
		if got := s.ClusterID(); got != idA {
			t.Fatalf("%s: cluster ID %q after the restore, want the backup's %q", s.ID(), got, idA)
		}
	}

	// The restored cluster survives a clean restart of a follower.
	var follower string
	for _, s := range b.live() {
		if !s.IsLeader() {
			follower = s.ID()
		}
	}
	if err := b.node(follower).Close(); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	delete(b.nodes, follower)
	b.mu.Unlock()
	s := b.start(follower, nil)
	if err := s.Put(ctxT(t, settle), "kv", []byte("after-restart"), []byte("x")); err != nil {
		t.Fatalf("write on %s after its restart: %v", follower, err)
	}
	if v, err := s.Get(ctxT(t, settle), "kv", []byte("after-0")); err != nil || len(v) == 0 {
		t.Fatalf("%s after its restart: %q, %v", follower, v, err)
	}
}

// blockingWriter holds the first Write until release is closed.
type blockingWriter struct {
	started chan struct{}
	release chan struct{}
	buf     bytes.Buffer
	first   bool
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if !w.first {
		w.first = true
		close(w.started)
		<-w.release
	}
	return w.buf.Write(p)
}

// TestBackupToASlowReaderHoldsNoTransaction streams a backup to a reader
// that stalls while writes go on. A bbolt read transaction held for the
// whole stream would keep every page the writes free from being reused, so
// the state file would grow by what they write.
func TestBackupToASlowReaderHoldsNoTransaction(t *testing.T) {
	c := newCluster(t, 1, fastTimeouts)
	s := c.node("node1")
	mustCreateTable(t, s, "kv")
	val := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 64<<10) }
	for k := 0; k < 16; k++ {
		if err := s.Put(ctxT(t, settle), "kv", fmt.Appendf(nil, "k%02d", k), val(0)); err != nil {
			t.Fatal(err)
		}
	}
	size := func() int64 {
		var n int64
		_ = s.fsm.view(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
		return n
	}
	w := &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.Backup(ctxT(t, 60*time.Second), w)
		done <- err
	}()
	select {
	case <-w.started:
	case err := <-done:
		t.Fatalf("backup ended before it wrote: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("backup did not start writing")
	}
	before := size()
	const rounds = 12 // 12 × 16 × 64 KiB = 12 MiB of overwrites
	for r := 1; r <= rounds; r++ {
		for k := 0; k < 16; k++ {
			if err := s.Put(ctxT(t, settle), "kv", fmt.Appendf(nil, "k%02d", k), val(r)); err != nil {
				t.Fatalf("write while a backup streams: %v", err)
			}
		}
	}
	grown := size() - before
	close(w.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if grown > 4<<20 {
		t.Fatalf("the state grew by %d KiB while a slow backup streamed: its pages were not reused", grown>>10)
	}

	// The backup is the state as of its start.
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, w.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(tableBucket("kv")).Get([]byte("k07")); !bytes.Equal(v, val(0)) {
			return fmt.Errorf("k07 in the backup holds %d bytes of %v", len(v), v[:1])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(s.cfg.DataDir, backupTempPattern))
	if len(left) != 0 {
		t.Fatalf("backup left %v behind", left)
	}
}
