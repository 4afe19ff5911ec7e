package raftstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWriteOnAnyNodeReadOnEvery(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node2"), "kv")
	for _, w := range c.live() {
		key := []byte("written-on-" + w.ID())
		if err := w.Put(ctxT(t, settle), "kv", key, []byte(w.ID())); err != nil {
			t.Fatalf("put on %s: %v", w.ID(), err)
		}
		for _, r := range c.live() {
			got, err := r.Get(ctxT(t, settle), "kv", key)
			if err != nil || string(got) != w.ID() {
				t.Fatalf("read on %s of a write on %s: %q, %v", r.ID(), w.ID(), got, err)
			}
		}
	}
}

func counterValue(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func encCounter(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// incr adds one to the counter at key with compare-and-swap, retrying on a
// failed compare. Each call to the store has a deadline of its own: how
// many compares fail depends on how the writers happen to be scheduled, so
// a deadline over the whole loop would be a bet on the machine's speed.
func incr(s *Store, key []byte) error {
	call := func(fn func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), settle)
		defer cancel()
		return fn(ctx)
	}
	var cur []byte
	err := call(func(ctx context.Context) (err error) {
		cur, err = s.Get(ctx, "kv", key)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		cur, err = nil, nil
	}
	if err != nil {
		return err
	}
	for {
		var ok bool
		var now []byte
		err := call(func(ctx context.Context) (err error) {
			ok, now, err = s.CompareAndSwap(ctx, "kv", key, cur, encCounter(counterValue(cur)+1))
			return err
		})
		if err != nil || ok {
			return err
		}
		cur = now
	}
}

func TestConcurrentCompareAndSwapFromAllNodes(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	key := []byte("counter")
	const perWorker = 25
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	workers := 0
	for _, s := range c.live() {
		for w := 0; w < 4; w++ {
			workers++
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perWorker; i++ {
					if err := incr(s, key); err != nil {
						errs <- fmt.Errorf("%s: %w", s.ID(), err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, s := range c.live() {
		v, err := s.Get(ctxT(t, settle), "kv", key)
		if err != nil {
			t.Fatal(err)
		}
		if got := counterValue(v); got != uint64(workers*perWorker) {
			t.Fatalf("%s: counter is %d, want %d", s.ID(), got, workers*perWorker)
		}
	}
}

func TestLeaderKilledUnderLoad(t *testing.T) {
	c := newCluster(t, 3, nil) // production timeouts: failover is what is measured
	mustCreateTable(t, c.node("node1"), "kv")
	old := c.waitLeader(settle)

	var (
		acked   sync.Map
		stop    atomic.Bool
		wg      sync.WaitGroup
		counter atomic.Int64
	)
	for _, s := range c.live() {
		if s == old {
			continue // its clients die with it
		}
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					k := fmt.Sprintf("k%06d", counter.Add(1))
					ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
					err := s.Put(ctx, "kv", []byte(k), []byte(k))
					cancel()
					if err == nil {
						acked.Store(k, true)
					}
				}
			}()
		}
	}
	time.Sleep(500 * time.Millisecond)
	killed := time.Now()
	c.kill(old.ID())
	// How fast a leader comes is logged, not asserted: on a loaded machine
	// an election takes what the scheduler gives it.
	leader := c.waitLeader(settle)
	t.Logf("new leader %s after %v", leader.ID(), time.Since(killed).Round(time.Millisecond))
	if leader.ID() == old.ID() {
		t.Fatal("the killed node is still the leader")
	}
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	n := 0
	acked.Range(func(k, _ any) bool {
		n++
		for _, s := range c.live() {
			v, err := s.Get(ctxT(t, settle), "kv", []byte(k.(string)))
			if err != nil || string(v) != k.(string) {
				t.Errorf("acknowledged write %s missing on %s: %v", k, s.ID(), err)
				return false
			}
		}
		return true
	})
	if n == 0 {
		t.Fatal("no write was acknowledged")
	}
	t.Logf("%d acknowledged writes, all present", n)

	// The killed node comes back and catches up.
	back := c.start(old.ID(), nil)
	eventually(t, settle, func() error {
		if back.AppliedIndex() < leader.AppliedIndex() {
			return errNotYet
		}
		return nil
	})
}

func TestIsolatedLeaderCannotCommitOrRead(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	old := c.waitLeader(settle)
	if err := old.Put(ctxT(t, settle), "kv", []byte("k"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for _, id := range c.ids {
		if id != old.ID() {
			rest = append(rest, id)
		}
	}
	c.net.partition([]string{old.ID()}, rest)

	err := old.Put(ctxT(t, 2*time.Second), "kv", []byte("k"), []byte("isolated"))
	if err == nil {
		t.Fatal("an isolated leader committed a write")
	}
	if _, err := old.Get(ctxT(t, 2*time.Second), "kv", []byte("k")); err == nil {
		t.Fatal("an isolated leader answered a linearizable read")
	}
	// A stale read is still served, from its own state.
	if v, err := old.Get(ctxT(t, time.Second), "kv", []byte("k"), Stale()); err != nil || string(v) != "before" {
		t.Fatalf("stale read: %q, %v", v, err)
	}

	// The majority goes on.
	other := c.node(rest[0])
	eventually(t, settle, func() error {
		return other.Put(ctxT(t, 2*time.Second), "kv", []byte("k"), []byte("majority"))
	})
	c.net.heal()
	eventually(t, settle, func() error {
		v, err := old.Get(ctxT(t, 2*time.Second), "kv", []byte("k"))
		if err != nil {
			return err
		}
		if string(v) != "majority" {
			return fmt.Errorf("old leader reads %q", v)
		}
		return nil
	})
}

func TestFollowerCatchesUpThroughSnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		fastTimeouts(cfg)
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 16
		cfg.SnapshotInterval = time.Hour // snapshots are taken by hand below
	})
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	var follower string
	for _, id := range c.ids {
		if id != leader.ID() {
			follower = id
			break
		}
	}
	c.kill(follower)
	for i := 0; i < 300; i++ {
		if err := leader.Put(ctxT(t, settle), "kv", fmt.Appendf(nil, "k%03d", i), fmt.Appendf(nil, "v%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Leadership may have moved during the writes on a loaded machine:
	// every node that can lead compacts its log, so whichever leads must
	// send the follower a snapshot.
	first := ^uint64(0)
	for _, s := range c.live() {
		if err := s.raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
		fi, err := s.logStore.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		first = min(first, fi)
	}
	back := c.start(follower, nil)
	if back.AppliedIndex() >= first {
		t.Fatalf("follower already holds index %d, the log starts at %d: nothing to test", back.AppliedIndex(), first)
	}
	eventually(t, settle, func() error {
		if back.fsm.restores.Load() == 0 {
			return errors.New("no snapshot installed")
		}
		return nil
	})
	// What the leader sent, and the follower keeps, is a compact snapshot.
	metas, err := back.snapshots.List()
	if err != nil || len(metas) != 1 {
		t.Fatalf("the follower keeps %d snapshots (%v), want 1", len(metas), err)
	}
	_, rc, err := back.snapshots.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, len(snapMagic)+1)
	_, err = io.ReadFull(rc, head)
	rc.Close()
	if err != nil || !isCompact(head) {
		t.Fatalf("the installed snapshot opens with %q (%v)", head, err)
	}
	for i := 0; i < 300; i += 37 {
		v, err := back.Get(ctxT(t, settle), "kv", fmt.Appendf(nil, "k%03d", i), Stale())
		if err != nil || string(v) != fmt.Sprintf("v%03d", i) {
			t.Fatalf("k%03d on the caught-up follower: %q, %v", i, v, err)
		}
	}
}

func TestRestartAllKeepsStateAndAppliesNothingTwice(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	want := map[string]string{}
	for i := 0; i < 50; i++ {
		s := c.live()[i%3]
		k, v := fmt.Sprintf("k%02d", i), fmt.Sprintf("v%02d", i)
		if err := s.Put(ctxT(t, settle), "kv", []byte(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	for i := 0; i < 20; i++ {
		if err := incr(c.live()[i%3], []byte("counter")); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.waitLeader(settle)
	eventually(t, settle, func() error {
		for _, s := range c.live() {
			if s.AppliedIndex() != leader.AppliedIndex() {
				return errNotYet
			}
		}
		return nil
	})
	applied := map[string]uint64{}
	for _, s := range c.live() {
		s.Close()
		applied[s.ID()] = s.AppliedIndex()
	}
	c.mu.Lock()
	c.nodes = map[string]*Store{}
	c.mu.Unlock()

	// The nodes come back cut off from each other, so that no new leader
	// moves their state on before it is read.
	c.net.partition(c.ids[:1], c.ids[1:])
	c.net.partition(c.ids[1:2], c.ids[2:])
	for _, id := range c.ids {
		s := c.start(id, nil)
		if got := s.AppliedIndex(); got != applied[id] {
			t.Fatalf("%s reopened at index %d, it had applied %d", id, got, applied[id])
		}
	}
	c.net.heal()
	c.waitLeader(settle)
	for _, s := range c.live() {
		page, err := s.List(ctxT(t, settle), "kv", ListOptions{Prefix: []byte("k")})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != len(want) {
			t.Fatalf("%s holds %d keys, want %d", s.ID(), len(page.Items), len(want))
		}
		for _, kv := range page.Items {
			if want[string(kv.Key)] != string(kv.Value) {
				t.Fatalf("%s: %s = %q", s.ID(), kv.Key, kv.Value)
			}
		}
		v, err := s.Get(ctxT(t, settle), "kv", []byte("counter"))
		if err != nil || counterValue(v) != 20 {
			t.Fatalf("%s: counter %d, %v", s.ID(), counterValue(v), err)
		}
		// Raft handed the old entries over again (no snapshot was taken);
		// the state machine skipped them instead of applying them twice.
		if s.fsm.skipped.Load() == 0 {
			t.Fatalf("%s: no replayed entry was seen, so nothing was tested", s.ID())
		}
	}
}

func TestBackupAndRestore(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	if err := leader.Put(ctxT(t, settle), "kv", []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := c.node("node2").Backup(ctxT(t, settle), &backup); err != nil {
		t.Fatal(err)
	}
	if err := leader.Put(ctxT(t, settle), "kv", []byte("a"), []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := leader.Put(ctxT(t, settle), "kv", []byte("b"), []byte("after")); err != nil {
		t.Fatal(err)
	}
	// A table made after the backup, written through every node (which
	// then know it exists), is gone after the restore.
	mustCreateTable(t, leader, "later")
	for _, s := range c.live() {
		if err := s.Put(ctxT(t, settle), "later", []byte("k"), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.Restore(ctxT(t, settle), bytes.NewReader(backup.Bytes()), false); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.live() {
		eventually(t, settle, func() error {
			v, err := s.Get(ctxT(t, 2*time.Second), "kv", []byte("a"))
			if err != nil || string(v) != "1" {
				return fmt.Errorf("%s: a = %q, %v", s.ID(), v, err)
			}
			if _, err := s.Get(ctxT(t, 2*time.Second), "kv", []byte("b")); !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%s: b after restore: %v", s.ID(), err)
			}
			if name := s.fsm.missingTable([]Op{{Table: "later"}}); name != "later" {
				return fmt.Errorf("%s: table later after restore: missing %q", s.ID(), name)
			}
			if err := s.Put(ctxT(t, 2*time.Second), "later", []byte("k"), []byte("v")); !errors.Is(err, ErrUnknownTable) {
				return fmt.Errorf("%s: put to table later after restore: %v", s.ID(), err)
			}
			return nil
		})
	}
	if err := leader.Restore(ctxT(t, settle), bytes.NewReader([]byte("not a backup")), true); err == nil {
		t.Fatal("restored garbage")
	}
}

func TestCrashOfAllNodesRebuildsStateFromSnapshotAndLog(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		fastTimeouts(cfg)
		cfg.SnapshotInterval = time.Hour
		cfg.TrailingLogs = 8
	})
	mustCreateTable(t, c.node("node1"), "kv")
	put := func(from, to int) {
		for i := from; i < to; i++ {
			if err := c.live()[i%3].Put(ctxT(t, settle), "kv", fmt.Appendf(nil, "k%03d", i), fmt.Appendf(nil, "v%03d", i)); err != nil {
				t.Fatalf("put %d on %s: %v", i, c.live()[i%3].ID(), err)
			}
		}
	}
	put(0, 60)
	for _, s := range c.live() {
		if err := s.raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	put(60, 100) // after the snapshot: only in the log
	leader := c.waitLeader(settle)
	eventually(t, settle, func() error {
		for _, s := range c.live() {
			if s.AppliedIndex() != leader.AppliedIndex() {
				return errNotYet
			}
		}
		return nil
	})
	for _, id := range c.ids {
		c.kill(id)
	}
	for _, id := range c.ids {
		s := c.start(id, nil)
		if s.fsm.restores.Load() != 1 {
			t.Fatalf("%s: the state was not rebuilt from its snapshot after a crash", id)
		}
	}
	c.waitLeader(settle)
	for _, s := range c.live() {
		page, err := s.List(ctxT(t, settle), "kv", ListOptions{KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != 100 {
			t.Fatalf("%s holds %d keys after the crash, want 100", s.ID(), len(page.Items))
		}
	}
}

// TestReadsOnAKilledLeaderReturn kills leaders under a load of
// linearizable reads. Raft never answers a leadership check still queued
// when it shuts down: a read must not wait on it past its deadline.
func TestReadsOnAKilledLeaderReturn(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	for round := 0; round < 3; round++ {
		leader := c.waitLeader(settle)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for r := 0; r < 32; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, _ = leader.Get(ctx, "kv", []byte("k"))
					cancel()
				}
			}()
		}
		time.Sleep(200 * time.Millisecond)
		id := leader.ID()
		c.kill(id)
		close(stop)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second): // the reads' deadline is 2 s
			t.Fatalf("round %d: reads on the killed leader %s still wait", round, id)
		}
		c.start(id, nil)
	}
}
