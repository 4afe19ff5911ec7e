package raftstore

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// followers returns the live nodes other than the leader.
func (c *testCluster) followers(leader *Store) []*Store {
	var out []*Store
	for _, s := range c.live() {
		if s != leader {
			out = append(out, s)
		}
	}
	return out
}

// Concurrent linearizable reads on a follower share read-index requests to
// the leader instead of sending one each.
func TestFollowerReadsShareReadIndexRequests(t *testing.T) {
	c := newCluster(t, 3, nil)
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	if err := leader.Put(ctxT(t, settle), "kv", []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	f := c.followers(leader)[0]
	const readers, each = 64, 20
	before := f.fwd.readIndexCalls.Load()
	var wg sync.WaitGroup
	var fails atomic.Int64
	start := make(chan struct{})
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < each; i++ {
				v, err := f.Get(ctxT(t, settle), "kv", []byte("k"))
				if err != nil || string(v) != "v" {
					t.Errorf("read on follower: %q, %v", v, err)
					fails.Add(1)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if fails.Load() > 0 {
		return
	}
	calls := f.fwd.readIndexCalls.Load() - before
	t.Logf("%d linearizable reads on a follower sent %d read-index requests", readers*each, calls)
	if calls == 0 && f.IsLeader() {
		t.Skip("the follower became the leader")
	}
	if calls == 0 || calls > readers*each/4 {
		t.Fatalf("%d reads sent %d read-index requests; want at least one and at most a quarter as many", readers*each, calls)
	}
}

// A linearizable read on a follower sees every write acknowledged before it
// started, through any node, under concurrent readers and writers, and
// reads keep working while the leader is killed and another elected.
func TestFollowerReadsSeeAcknowledgedWritesAcrossLeaderChange(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	old := c.waitLeader(settle)
	nodes := c.followers(old) // the clients live on the nodes that survive
	const writers, readers = 16, 32
	key := func(w int) []byte { return []byte("w" + strconv.Itoa(w)) }
	for w := 0; w < writers; w++ {
		if err := old.Put(ctxT(t, settle), "kv", key(w), []byte("0")); err != nil {
			t.Fatal(err)
		}
		for _, s := range nodes {
			if _, err := s.Get(ctxT(t, settle), "kv", key(w)); err != nil {
				t.Fatal(err)
			}
		}
	}

	// acked[w] is a value of key w that a client saw acknowledged or read;
	// values only grow, by compare-and-swap from one to the next.
	var (
		acked   [writers]atomic.Int64
		stop    atomic.Bool
		wg      sync.WaitGroup
		reads   atomic.Int64
		writes  atomic.Int64
		bad     atomic.Int64
		raiseTo = func(a *atomic.Int64, v int64) {
			for {
				cur := a.Load()
				if v <= cur || a.CompareAndSwap(cur, v) {
					return
				}
			}
		}
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := nodes[w%len(nodes)]
			cur := int64(0)
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				ok, now, err := s.CompareAndSwap(ctx, "kv", key(w), []byte(strconv.FormatInt(cur, 10)), []byte(strconv.FormatInt(cur+1, 10)))
				if err != nil { // outcome unknown: learn the value with a read
					now, err = s.Get(ctx, "kv", key(w))
				}
				cancel()
				switch {
				case err != nil:
					continue
				case ok:
					cur++
					writes.Add(1)
				default:
					if cur, err = strconv.ParseInt(string(now), 10, 64); err != nil {
						t.Errorf("key %d holds %q", w, now)
						return
					}
				}
				raiseTo(&acked[w], cur)
			}
		}(w)
	}
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			s := nodes[r%len(nodes)]
			for !stop.Load() {
				w := rand.IntN(writers)
				floor := acked[w].Load()
				ctx, cancel := context.WithTimeout(context.Background(), settle)
				v, err := s.Get(ctx, "kv", key(w))
				cancel()
				if err != nil {
					t.Errorf("read of key %d on %s: %v", w, s.ID(), err)
					bad.Add(1)
					return
				}
				got, err := strconv.ParseInt(string(v), 10, 64)
				if err != nil || got < floor {
					t.Errorf("read of key %d on %s returned %q after %d was acknowledged", w, s.ID(), v, floor)
					bad.Add(1)
					return
				}
				reads.Add(1)
			}
		}(r)
	}

	// Each phase lasts until enough operations completed, not for a time.
	waitFor := func(phase string, minReads, minWrites int64) {
		r0, w0 := reads.Load(), writes.Load()
		eventually(t, 2*settle, func() error {
			if bad.Load() > 0 {
				t.Fatalf("%s: a read failed", phase)
			}
			if reads.Load()-r0 < minReads || writes.Load()-w0 < minWrites {
				return errNotYet
			}
			return nil
		})
		t.Logf("%s: %d reads, %d writes", phase, reads.Load()-r0, writes.Load()-w0)
	}
	waitFor("before the leader change", 500, 100)
	c.kill(old.ID())
	leader := c.waitLeader(settle)
	if leader == old {
		t.Fatal("the killed node still leads")
	}
	waitFor("after the leader change", 500, 100)
	stop.Store(true)
	wg.Wait()
}

// rounds runs at most max rounds at once, and every caller gets the answer
// of a round that started after it called: callers that come while max
// rounds run share the next one.
func TestRoundsInFlight(t *testing.T) {
	var (
		started, running, most atomic.Int64
		release                = make(chan struct{})
	)
	closing := make(chan struct{})
	defer close(closing)
	r := newRounds(closing, 2, func() (uint64, error) {
		n := started.Add(1)
		if cur := running.Add(1); cur > most.Load() {
			most.Store(cur)
		}
		<-release
		running.Add(-1)
		return uint64(n), nil
	})
	const callers = 40
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			before := started.Load()
			idx, err := r.join(context.Background())
			if err != nil || idx <= uint64(before) {
				bad.Add(1)
			}
		}()
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	for served := false; !served; {
		select {
		case release <- struct{}{}:
		case <-all:
			served = true
		}
	}
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d callers got the answer of a round that started before they called", n)
	}
	if m := most.Load(); m > 2 {
		t.Fatalf("%d rounds ran at once; want at most 2", m)
	}
	if s := started.Load(); s >= callers {
		t.Fatalf("%d callers ran %d rounds; want them to share", callers, s)
	}
	t.Logf("%d callers, %d rounds, at most %d at once", callers, started.Load(), most.Load())
}
