package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestAddServerNeverMovesAMember: adding a server under the ID of a member
// at another address, or at a member's address under another ID, is
// refused, and the member keeps its address.
func TestAddServerNeverMovesAMember(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	leader := c.waitLeader(10 * time.Second)
	follower := c.node("node2")
	if leader == follower {
		follower = c.node("node3")
	}
	addrOf := func(id string) string {
		for _, p := range leader.Status().Peers {
			if p.ID == id {
				return p.Addr
			}
		}
		return ""
	}
	before := addrOf("node2")
	for name, try := range map[string]func(ctx context.Context) error{
		"nonvoter with a voter's ID":    func(ctx context.Context) error { return follower.AddNonvoter(ctx, "node2", "127.0.0.1:1") },
		"voter with a voter's ID":       func(ctx context.Context) error { return leader.AddVoter(ctx, "node2", "127.0.0.1:1") },
		"nonvoter at a voter's address": func(ctx context.Context) error { return leader.AddNonvoter(ctx, "node9", before) },
	} {
		if err := try(ctxT(t, 10*time.Second)); !errors.Is(err, ErrMemberExists) {
			t.Errorf("%s: %v, want ErrMemberExists", name, err)
		}
	}
	if after := addrOf("node2"); after != before {
		t.Fatalf("node2 moved from %s to %s", before, after)
	}
}

// TestNonvoterMayNotWrite: a non-voter receives the log and may read, but
// the leader refuses its forwarded writes and membership changes, and
// promotes it only through Promote with a proof that Admit accepts.
func TestNonvoterMayNotWrite(t *testing.T) {
	admit := func(_ context.Context, id string, proof []byte) error {
		if id == "node4" && bytes.Equal(proof, []byte("the answer")) {
			return nil
		}
		return errors.New("wrong answer")
	}
	// One voter, bootstrapped: with Admit set, AddVoter makes no new voter.
	c := newCluster(t, 1, func(cfg *Config) { fastTimeouts(cfg); cfg.Admit = admit })
	leader := c.waitLeader(10 * time.Second)
	mustCreateTable(t, leader, "t")
	if err := leader.Put(ctxT(t, 10*time.Second), "t", []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := leader.AddVoter(ctxT(t, 10*time.Second), "node9", "127.0.0.1:1"); !errors.Is(err, ErrNotPermitted) {
		t.Errorf("AddVoter of a new server with Admit set: %v, want ErrNotPermitted", err)
	}
	c.ids = append(c.ids, "node4")
	c.dirs["node4"] = t.TempDir()
	n4 := c.start("node4", nil)
	if err := leader.AddNonvoter(ctxT(t, 10*time.Second), "node4", c.addrs["node4"]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		v, err := n4.Get(ctxT(t, 5*time.Second), "t", []byte("k"))
		if err != nil {
			return err
		}
		if string(v) != "v" {
			return fmt.Errorf("read %q", v)
		}
		return nil
	})
	ctx := ctxT(t, 20*time.Second)
	if err := n4.Put(ctx, "t", []byte("k"), []byte("planted")); !errors.Is(err, ErrNotPermitted) {
		t.Errorf("write from the non-voter: %v, want ErrNotPermitted", err)
	}
	if err := n4.CreateTable(ctx, "new"); !errors.Is(err, ErrNotPermitted) {
		t.Errorf("new table from the non-voter: %v, want ErrNotPermitted", err)
	}
	if err := n4.CreateTable(ctx, "t"); err != nil {
		t.Errorf("existing table from the non-voter (a no-op): %v", err)
	}
	if err := n4.RemoveServer(ctx, "node1"); !errors.Is(err, ErrNotPermitted) {
		t.Errorf("removal from the non-voter: %v, want ErrNotPermitted", err)
	}
	if err := n4.AddVoter(ctx, "node4", c.addrs["node4"]); !errors.Is(err, ErrNotPermitted) {
		t.Errorf("self-promotion through AddVoter: %v, want ErrNotPermitted", err)
	}
	if err := n4.Promote(ctx, []byte("a guess")); !errors.Is(err, ErrNotPermitted) {
		t.Errorf("promotion with a wrong proof: %v, want ErrNotPermitted", err)
	}
	if s, _ := leader.suffrage("node4"); s != raft.Nonvoter {
		t.Fatalf("node4 is %v after refused requests", s)
	}
	if v, err := leader.Get(ctx, "t", []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("after refused writes: %q %v", v, err)
	}
	if err := n4.Promote(ctx, []byte("the answer")); err != nil {
		t.Fatalf("promotion with the right proof: %v", err)
	}
	if s, _ := leader.suffrage("node4"); s != raft.Voter {
		t.Fatalf("node4 is %v after promotion", s)
	}
	if err := n4.Put(ctx, "t", []byte("k"), []byte("from node4")); err != nil {
		t.Fatalf("write from the promoted node: %v", err)
	}
}

// TestRemovedNodeCannotConnect: once removed, a node's certificate opens
// neither a Raft nor a forwarding connection, and a Raft connection it
// opened before its removal stops serving it.
func TestRemovedNodeCannotConnect(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	leader := c.waitLeader(10 * time.Second)
	mustCreateTable(t, leader, "t")
	var gone *Store
	for _, s := range c.live() {
		if s != leader {
			gone = s
		}
	}
	target := leader
	targetAddr := c.addrs[target.ID()]
	vote := func() error {
		var resp raft.RequestVoteResponse
		return gone.trans.RequestVote(raft.ServerID(target.ID()), raft.ServerAddress(targetAddr), &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(gone.ID()), Addr: []byte(c.addrs[gone.ID()])},
			Term:      1, LastLogIndex: 0, LastLogTerm: 0,
		}, &resp)
	}
	// A member's Raft RPC is served; this also leaves a pooled connection.
	if err := vote(); err != nil {
		t.Fatalf("Raft RPC from a member: %v", err)
	}
	if err := leader.RemoveServer(ctxT(t, 10*time.Second), gone.ID()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * memberRecheck)
	for i := 0; i < 2; i++ { // the pooled connection, then a new one
		if err := vote(); err == nil {
			t.Fatalf("Raft RPC %d from the removed node was served", i+1)
		}
	}
	cmd := &command{Type: cmdTxn, RequestID: newRequestID(), Ops: []Op{{Kind: OpPut, Table: "t", Key: []byte("k"), Value: []byte("v")}}}
	r, _, err := gone.fwd.call(ctxT(t, 5*time.Second), targetAddr, target.ID(), reqWrite, cmd.encode())
	if err == nil && r.Err == nil {
		t.Fatal("forwarded write from the removed node was applied")
	}
	if _, err := target.Get(ctxT(t, 5*time.Second), "t", []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the removed node's write is there: %v", err)
	}
}
