//go:build linux

package raftstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// mappedRSS returns the bytes of path's mappings resident in this process
// (the Rss lines of /proc/self/smaps under them).
func mappedRSS(t *testing.T, path string) int64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	in := false
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			in = len(f) == 6 && f[5] == path // a mapping's header line
		case in && len(f) == 3 && f[0] == "Rss:":
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			total += kb << 10
		}
	}
	return total
}

// newMappedFSM opens a state file holding table "m", closed at the end of
// the test, and returns it, its path and the index of its last entry.
func newMappedFSM(t *testing.T) (*fsm, string, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := newFSM(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.close(false) })
	create := &command{Type: cmdCreateTable, RequestID: []byte("t"), Ops: []Op{{Table: "m"}}}
	if r := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: create.encode()}})[0].(applyResult); r.Err != nil {
		t.Fatal(r.Err)
	}
	return f, path, 1
}

// fillState writes n values of size bytes to table "m" of f, from index on.
func fillState(t *testing.T, f *fsm, index *uint64, first, n, size int) {
	t.Helper()
	for i := first; i < first+n; i += 64 {
		c := &command{Type: cmdTxn}
		for j := i; j < min(i+64, first+n); j++ {
			c.Ops = append(c.Ops, Op{Kind: OpPut, Table: "m", Key: fmt.Appendf(nil, "k%08d", j), Value: mappedValue(j, size)})
		}
		*index++
		c.RequestID = fmt.Appendf(nil, "req-%d", *index)
		if r := f.ApplyBatch([]*raft.Log{{Index: *index, Type: raft.LogCommand, Data: c.encode()}})[0].(applyResult); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}

// mappedValue is value i: bytes that do not compress, as certificates'
// keys and signatures do not.
func mappedValue(i, size int) []byte {
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[:], uint64(i))
	v := make([]byte, size)
	rand.NewChaCha8(seed).Read(v)
	return v
}

// readState reads values [0, n) of table "m" and checks them.
func readState(t *testing.T, f *fsm, n, size int) {
	t.Helper()
	if err := checkState(f, n, size); err != nil {
		t.Fatal(err)
	}
}

func checkState(f *fsm, n, size int) error {
	return f.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(tableBucket("m"))
		for i := range n {
			if v := b.Get(fmt.Appendf(nil, "k%08d", i)); !bytes.Equal(v, mappedValue(i, size)) {
				return fmt.Errorf("value %d: %d bytes, not the ones written", i, len(v))
			}
		}
		return nil
	})
}

// TestReleaseMappedPages: after a scan of a 16 MiB state file most of it
// is resident in the process; releasing drops that to almost nothing,
// leaves every value readable, and a smaller file than the threshold is
// left alone. A snapshot releases the pages it read.
func TestReleaseMappedPages(t *testing.T) {
	f, path, index := newMappedFSM(t)
	f.releaseMin = 0
	const n, size = 4096, 4096
	fillState(t, f, &index, 0, n, size)

	readState(t, f, n, size)
	before := mappedRSS(t, path)
	if before < 12<<20 {
		t.Fatalf("after a scan %d bytes of the state file are resident, want most of its 16 MiB", before)
	}
	filesBefore, ok := residentFileBytes()
	if !ok || filesBefore < before {
		t.Fatalf("residentFileBytes = %d, %v; the state file alone has %d resident", filesBefore, ok, before)
	}
	if got, err := f.releaseMapped(1 << 40); err != nil || got != 0 {
		t.Fatalf("releaseMapped under a larger threshold = %d, %v; want 0, nil", got, err)
	}
	if now := mappedRSS(t, path); now < before-(1<<20) {
		t.Fatalf("a file under the threshold was released: resident %d -> %d", before, now)
	}
	got, err := f.releaseMapped(0)
	if err != nil || got < 16<<20 {
		t.Fatalf("releaseMapped = %d, %v; want the file's size, nil", got, err)
	}
	if after := mappedRSS(t, path); after > 1<<20 {
		t.Fatalf("after the release %d bytes are resident (were %d)", after, before)
	}
	if files, _ := residentFileBytes(); files > filesBefore-(12<<20) {
		t.Fatalf("residentFileBytes %d -> %d: the released pages still count", filesBefore, files)
	}
	readState(t, f, n, size)
	if again := mappedRSS(t, path); again < 12<<20 {
		t.Fatalf("a second scan mapped %d bytes; the pages should come back", again)
	}

	// A snapshot releases the pages behind it as it reads the file, and
	// all of them at the end.
	defer func(n int64) { snapshotRelease = n }(snapshotRelease)
	snapshotRelease = 1 << 20
	if _, err := f.releaseMapped(0); err != nil {
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	discard, err := raft.NewDiscardSnapshotStore().Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink := &rssSink{SnapshotSink: discard, t: t, path: path}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if sink.written < 15<<20 || sink.peak == 0 {
		t.Fatalf("the snapshot wrote %d bytes, sampled a peak of %d resident", sink.written, sink.peak)
	}
	if sink.peak > 6<<20 {
		t.Fatalf("while the snapshot was written up to %d bytes of the state file were resident", sink.peak)
	}
	if after := mappedRSS(t, path); after > 1<<20 {
		t.Fatalf("after a snapshot %d bytes are resident", after)
	}
}

// rssSink samples how much of the state file is resident every 256 KiB
// of snapshot written to it.
type rssSink struct {
	raft.SnapshotSink
	t          *testing.T
	path       string
	written    int64
	peak       int64
	sinceCheck int64
}

func (s *rssSink) Write(p []byte) (int, error) {
	s.written += int64(len(p))
	if s.sinceCheck += int64(len(p)); s.sinceCheck >= 256<<10 {
		s.sinceCheck = 0
		s.peak = max(s.peak, mappedRSS(s.t, s.path))
	}
	return s.SnapshotSink.Write(p)
}

// TestReleaseMappedWhileTheFileGrows releases the mapped pages over and
// over while writers grow the file (bbolt then replaces its mapping) and
// readers check every value: no value changes, nothing deadlocks.
func TestReleaseMappedWhileTheFileGrows(t *testing.T) {
	f, _, index := newMappedFSM(t)
	const size = 8192
	fillState(t, f, &index, 0, 1024, size)
	done := make(chan struct{})
	var wg sync.WaitGroup
	// Until done: one goroutine releases, one reads and checks.
	for _, step := range []func() error{
		func() error { _, err := f.releaseMapped(0); return err },
		func() error { return checkState(f, 1024, size) },
	} {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := step(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// Past InitialMmapSize (64 MiB): bbolt maps the file again as it grows.
	fillState(t, f, &index, 1024, 9*1024, size)
	close(done)
	wg.Wait()
	readState(t, f, 10*1024, size)
}

func TestReleaseDue(t *testing.T) {
	for _, c := range []struct {
		since    time.Duration
		resident int64
		known    bool
		want     bool
	}{
		{time.Second, 0, true, false},
		{time.Second, releaseBudget, true, false},
		{time.Second, releaseBudget + 1, true, true},
		{time.Second, releaseBudget + 1, false, false},
		{releaseInterval, 0, true, true},
		{releaseInterval, 0, false, true},
	} {
		if got := releaseDue(c.since, c.resident, c.known); got != c.want {
			t.Errorf("releaseDue(%v, %d, %v) = %v", c.since, c.resident, c.known, got)
		}
	}
}

// TestListingsReleaseMappedPages: a listing that reads the whole of a
// large table asks for a release every scanRelease bytes, and the store
// releases the pages it mapped.
func TestListingsReleaseMappedPages(t *testing.T) {
	defer func(n int64) { scanRelease = n }(scanRelease)
	scanRelease = 1 << 20
	c := newCluster(t, 1, nil)
	s := c.waitLeader(settle)
	s.fsm.releaseMin = 0
	mustCreateTable(t, s, "m")
	const n, size = 2048, 8192
	for i := 0; i < n; i += 32 {
		var ops []Op
		for j := i; j < i+32; j++ {
			ops = append(ops, Op{Kind: OpPut, Table: "m", Key: fmt.Appendf(nil, "k%08d", j), Value: mappedValue(j, size)})
		}
		if res, err := s.Txn(ctxT(t, settle), ops); err != nil || !res.Succeeded {
			t.Fatalf("txn: %+v, %v", res, err)
		}
	}
	path := filepath.Join(c.dirs[s.cfg.NodeID], "state.db")
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	if _, err := s.fsm.releaseMapped(0); err != nil {
		t.Fatal(err)
	}
	kicks := s.fsm.scanKicks.Load()
	var after []byte
	listed := 0
	for {
		page, err := s.List(ctxT(t, settle), "m", ListOptions{After: after, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range page.Items {
			if !bytes.Equal(kv.Value, mappedValue(listed, size)) {
				t.Fatalf("value %d changed", listed)
			}
			listed++
		}
		if page.Next == nil {
			break
		}
		after = page.Next
	}
	if listed != n {
		t.Fatalf("listed %d of %d", listed, n)
	}
	if got := s.fsm.scanKicks.Load() - kicks; got < 14 {
		t.Fatalf("listing %d MiB asked for %d releases, want one a MiB", n*size>>20, got)
	}
	eventually(t, settle, func() error {
		if r := mappedRSS(t, path); r > 4<<20 {
			return fmt.Errorf("%d bytes of the state file resident after the listing", r)
		}
		return nil
	})
}
