package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// A follower sends every forwarded request over one connection to the
// leader, however many are in flight, and the leader puts forwarded writes
// in its group-commit batches as it does its own.
func TestForwardedWritesShareOneConnectionAndJoinBatches(t *testing.T) {
	c := newCluster(t, 3, nil)
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	f := c.followers(leader)[0]
	const writers, each = 64, 10
	dials, batches := f.fwd.dials.Load(), leader.batch.batches.Load()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < each; i++ {
				if err := f.Put(ctxT(t, settle), "kv", fmt.Appendf(nil, "w%d-%d", w, i), []byte("v")); err != nil {
					t.Errorf("forwarded write: %v", err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	if !leader.IsLeader() {
		t.Skip("the leader changed during the test")
	}
	d, b := f.fwd.dials.Load()-dials, leader.batch.batches.Load()-batches
	t.Logf("%d forwarded writes: %d connections dialed, %d batches", writers*each, d, b)
	if d > 1 {
		t.Errorf("%d concurrent writers made the follower dial %d connections to the leader; want at most one", writers, d)
	}
	if b == 0 || b > writers*each/4 {
		t.Errorf("%d forwarded writes took %d batches; want at least 4 writes a batch", writers*each, b)
	}
}

// A request that times out on a connection that has answered nothing since
// it was sent closes the connection: the peer, or the path to it, may be
// gone, and the requests after it must not wait on it too.
func TestSilentForwardConnectionIsDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(io.Discard, c) // reads every request, answers none
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fc := newFwdConn(c, "peer", time.Minute)
	gone := make(chan struct{})
	go fc.readLoop(func() { close(gone) })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, sent, err := fc.roundTrip(ctx, reqReadIndex, nil)
	if !errors.Is(err, ErrTimeout) || !sent {
		t.Fatalf("got sent=%v, %v; want a sent request that timed out", sent, err)
	}
	select {
	case <-gone:
	case <-time.After(settle):
		t.Fatal("the silent connection is still open")
	}
	if _, sent, err := fc.roundTrip(context.Background(), reqReadIndex, nil); err == nil || sent {
		t.Fatalf("a request on the dropped connection: sent=%v, %v", sent, err)
	}
}
