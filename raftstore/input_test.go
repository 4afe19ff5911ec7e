package raftstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// changesNothing checks that no command from a client reaches the log while
// fn runs. The applied index itself may move: a new leader, elected when a
// loaded machine misses a heartbeat, applies a no-op of its own.
func changesNothing(t *testing.T, s *Store, fn func() error, want error) {
	t.Helper()
	before := s.AppliedIndex()
	err := fn()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
	time.Sleep(50 * time.Millisecond)
	if i, ok := clientCommandAfter(t, s, before); ok {
		t.Fatalf("the rejected request reached the log at index %d", i)
	}
}

// clientCommandAfter reports the first entry after index from that holds a
// client's command, not the store's own no-op or cluster ID.
func clientCommandAfter(t *testing.T, s *Store, from uint64) (uint64, bool) {
	t.Helper()
	last, err := s.logStore.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	for i := from + 1; i <= last; i++ {
		var l raft.Log
		if err := s.logStore.GetLog(i, &l); err != nil {
			continue // compacted, or a hole left by a restore
		}
		if l.Type != raft.LogCommand {
			continue
		}
		if c, err := decodeCommand(l.Data); err == nil && (c.Type == cmdNoop || c.Type == cmdClusterID) {
			continue
		}
		return i, true
	}
	return 0, false
}

func TestBadInputIsRejectedAndWritesNothing(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	var follower *Store
	for _, s := range c.live() {
		if s != leader {
			follower = s
		}
	}
	ctx := ctxT(t, settle)
	big := bytes.Repeat([]byte{'x'}, MaxValueSize+1)
	for _, s := range []*Store{leader, follower} {
		t.Run(s.ID(), func(t *testing.T) {
			cases := []struct {
				name string
				fn   func() error
				want error
			}{
				{"value over 1 MiB", func() error { return s.Put(ctx, "kv", []byte("k"), big) }, ErrValueTooLarge},
				{"unknown table", func() error { return s.Put(ctx, "nosuch", []byte("k"), []byte("v")) }, ErrUnknownTable},
				{"invalid table name", func() error { return s.Put(ctx, "_meta", []byte("k"), []byte("v")) }, ErrInvalidTable},
				{"empty key", func() error { return s.Put(ctx, "kv", nil, []byte("v")) }, ErrInvalidKey},
				{"too many ops", func() error {
					ops := make([]Op, MaxTxnOps+1)
					for i := range ops {
						ops[i] = Op{Kind: OpPut, Table: "kv", Key: []byte("k")}
					}
					_, err := s.Txn(ctx, ops)
					return err
				}, ErrTooManyOps},
				{"unknown op", func() error {
					_, err := s.Txn(ctx, []Op{{Kind: 99, Table: "kv", Key: []byte("k")}})
					return err
				}, ErrMalformed},
				{"create invalid table", func() error { return s.CreateTable(ctx, "Bad Name") }, ErrInvalidTable},
				{"compare with a value", func() error {
					_, err := s.Txn(ctx, []Op{{Kind: OpCompare, Table: "kv", Key: []byte("k"), Value: []byte("v")}})
					return err
				}, ErrInvalidArgument},
				{"compare that deletes", func() error {
					_, err := s.Txn(ctx, []Op{{Kind: OpCompare, Table: "kv", Key: []byte("k"), Old: []byte("v"), Delete: true}})
					return err
				}, ErrInvalidArgument},
				{"prefix compare without a prefix", func() error {
					_, err := s.Txn(ctx, []Op{{Kind: OpCompare, Table: "kv", Key: []byte("k"), Prefix: true}})
					return err
				}, ErrInvalidArgument},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { changesNothing(t, s, tc.fn, tc.want) })
			}
		})
	}
	// An unknown table in the middle of a transaction aborts all of it.
	_, err := follower.Txn(ctx, []Op{
		{Kind: OpPut, Table: "kv", Key: []byte("first"), Value: []byte("1")},
		{Kind: OpPut, Table: "nosuch", Key: []byte("second"), Value: []byte("2")},
	})
	if !errors.Is(err, ErrUnknownTable) {
		t.Fatalf("txn with an unknown table: %v", err)
	}
	if _, err := leader.Get(ctx, "kv", []byte("first")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the aborted transaction wrote its first op: %v", err)
	}
}

func TestMalformedForwardedCommand(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	var follower *Store
	for _, s := range c.live() {
		if s != leader {
			follower = s
		}
	}
	before := leader.AppliedIndex()
	valid := (&command{Type: cmdTxn, Ops: []Op{{Kind: OpPut, Table: "kv", Key: []byte("k"), Value: []byte("v")}}}).encode()
	bodies := map[string][]byte{
		"garbage":          []byte("\x00\x01garbage"),
		"bad version":      append([]byte{9}, valid[1:]...),
		"truncated":        valid[:len(valid)-2],
		"trailing bytes":   append(bytes.Clone(valid), 0),
		"huge op count":    {commandVersion, byte(cmdTxn), 0, 0, 0xff, 0xff, 0x03},
		"unknown cmd type": append([]byte{commandVersion, 77}, valid[2:]...),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			r, _, err := follower.fwd.call(ctxT(t, settle), leader.Addr(), leader.ID(), reqWrite, body)
			if err != nil {
				t.Fatal(err)
			}
			if !errors.Is(r.Err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", r.Err)
			}
		})
	}
	t.Run("oversized frame", func(t *testing.T) {
		conn, err := follower.mux.dialPeer(ctxT(t, settle), leader.Addr(), leader.ID(), connForward)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		w := bufio.NewWriter(conn)
		w.Write([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}) // a uvarint far over maxFrame
		w.Flush()
		resp, err := readFrame(bufio.NewReader(conn))
		if err != nil {
			t.Fatal(err)
		}
		r, err := decodeResult(resp.body)
		if err != nil || !errors.Is(r.Err, ErrMalformed) {
			t.Fatalf("got %v / %v, want ErrMalformed", r.Err, err)
		}
	})
	time.Sleep(50 * time.Millisecond)
	if i, ok := clientCommandAfter(t, leader, before); ok {
		t.Fatalf("a malformed command reached the log at index %d", i)
	}
	if _, err := leader.Get(ctxT(t, settle), "kv", []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a malformed command wrote: %v", err)
	}
}

func TestPeerWithCertificateForAnotherNodeIsRefused(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	var victim string
	for _, id := range c.ids {
		if id != leader.ID() {
			victim = id
		}
	}
	// The victim restarts presenting a certificate for another node's ID
	// while listening at its own address.
	c.kill(victim)
	other := "node9"
	_, err := Open(func() Config {
		cfg := c.config(victim)
		cfg.TLS.Certificate = c.ca.NodeCert(t, other)
		return cfg
	}())
	if err == nil || !strings.Contains(err.Error(), "not for node ID") {
		t.Fatalf("a node started with another node's certificate: %v", err)
	}
	// Bypass the local check: an impostor that claims ID node9 serves on
	// the victim's address. The leader must refuse to talk to it.
	imp := c.start(victim, func(cfg *Config) {
		cfg.NodeID = other
		cfg.TLS.Certificate = c.ca.NodeCert(t, other)
	})
	_, err = leader.mux.dialPeer(ctxT(t, settle), imp.Addr(), victim, connRaft)
	if !errors.Is(err, ErrPeerIdentity) {
		t.Fatalf("dialing an impostor: %v, want ErrPeerIdentity", err)
	}
	// The impostor is not a member, so the leader closes its connection.
	r, _, err := imp.fwd.call(ctxT(t, settle), leader.Addr(), leader.ID(), reqWrite,
		(&command{Type: cmdTxn, Ops: []Op{{Kind: OpPut, Table: "kv", Key: []byte("k"), Value: []byte("v")}}}).encode())
	if err == nil {
		t.Fatalf("a non-member's forwarding connection was served: %v", r.Err)
	}
	// A node of another cluster (another CA) cannot even connect.
	stranger := newCluster(t, 1, fastTimeouts)
	if _, err := stranger.node("node1").mux.dialPeer(ctxT(t, settle), leader.Addr(), leader.ID(), connForward); err == nil {
		t.Fatal("a node of another cluster completed a handshake")
	}
	if _, err := leader.Get(ctxT(t, settle), "kv", []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused peer wrote: %v", err)
	}
}

func TestTransactionsAndCompareAndSwap(t *testing.T) {
	c := newCluster(t, 1, fastTimeouts)
	s := c.node("node1")
	mustCreateTable(t, s, "kv")
	ctx := ctxT(t, settle)

	// Insert only if absent.
	if ok, _, err := s.CompareAndSwap(ctx, "kv", []byte("a"), nil, []byte("1")); err != nil || !ok {
		t.Fatalf("insert: %v %v", ok, err)
	}
	ok, cur, err := s.CompareAndSwap(ctx, "kv", []byte("a"), nil, []byte("2"))
	if err != nil || ok || string(cur) != "1" {
		t.Fatalf("second insert: %v %q %v", ok, cur, err)
	}
	// Byte-exact values: empty stays distinct from absent.
	if err := s.Put(ctx, "kv", []byte("empty"), []byte{}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "kv", []byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("empty value: %q %v", v, err)
	}
	if ok, _, _ := s.CompareAndSwap(ctx, "kv", []byte("empty"), nil, []byte("x")); ok {
		t.Fatal("an empty value compared as absent")
	}
	// Prefix compare.
	if err := s.Put(ctx, "kv", []byte("p"), []byte("tag:payload")); err != nil {
		t.Fatal(err)
	}
	res, err := s.Txn(ctx, []Op{{Kind: OpCAS, Table: "kv", Key: []byte("p"), Old: []byte("tag:"), Prefix: true, Value: []byte("tag:new")}})
	if err != nil || !res.Succeeded {
		t.Fatalf("prefix CAS: %+v %v", res, err)
	}
	// Get-or-abort: a missing key aborts the whole transaction.
	res, err = s.Txn(ctx, []Op{
		{Kind: OpPut, Table: "kv", Key: []byte("b"), Value: []byte("1")},
		{Kind: OpGet, Table: "kv", Key: []byte("missing")},
	})
	if err != nil || res.Succeeded || res.FailedOp != 1 {
		t.Fatalf("get-or-abort: %+v %v", res, err)
	}
	if _, err := s.Get(ctx, "kv", []byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("aborted txn wrote: %v", err)
	}
	// Later ops see earlier ones; gets return values.
	res, err = s.Txn(ctx, []Op{
		{Kind: OpPut, Table: "kv", Key: []byte("c"), Value: []byte("3")},
		{Kind: OpCAS, Table: "kv", Key: []byte("c"), Old: []byte("3"), Value: []byte("4")},
		{Kind: OpGet, Table: "kv", Key: []byte("c")},
		{Kind: OpCAS, Table: "kv", Key: []byte("a"), Old: []byte("1"), Delete: true},
	})
	if err != nil || !res.Succeeded || string(res.Values[2]) != "4" {
		t.Fatalf("txn: %+v %v", res, err)
	}
	if _, err := s.Get(ctx, "kv", []byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CAS delete: %v", err)
	}
}

// OpCompare checks a value, or its absence, and writes nothing; guard
// compares placed first tell their failure by FailedOp.
func TestCompareGuardsATransaction(t *testing.T) {
	c := newCluster(t, 1, fastTimeouts)
	s := c.node("node1")
	mustCreateTable(t, s, "kv")
	ctx := ctxT(t, 20*time.Second)
	if err := s.Put(ctx, "kv", []byte("tok"), []byte("valid")); err != nil {
		t.Fatal(err)
	}
	guard := []Op{
		{Kind: OpCompare, Table: "kv", Key: []byte("tok"), Old: []byte("valid")},
		{Kind: OpCompare, Table: "kv", Key: []byte("policy")}, // absent
	}
	write := func(g []Op, cas []byte) TxnResult {
		t.Helper()
		res, err := s.Txn(ctx, append(append([]Op{}, g...), Op{Kind: OpCAS, Table: "kv", Key: []byte("x"), Old: cas, Value: []byte("written")}))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := write(guard, nil); !res.Succeeded || res.FailedOp != -1 {
		t.Fatalf("guard holds: %+v", res)
	}
	if v, err := s.Get(ctx, "kv", []byte("tok")); err != nil || string(v) != "valid" {
		t.Fatalf("a compare wrote: %q %v", v, err)
	}
	// The caller's own compare fails after the guard's.
	if res := write(guard, []byte("other")); res.Succeeded || res.FailedOp != len(guard) {
		t.Fatalf("own CAS fails: %+v", res)
	}
	// A changed record fails the guard, reports the current value, and
	// nothing is written.
	if err := s.Put(ctx, "kv", []byte("tok"), []byte("revoked")); err != nil {
		t.Fatal(err)
	}
	if res := write(guard, []byte("written")); res.Succeeded || res.FailedOp != 0 || string(res.Values[0]) != "revoked" {
		t.Fatalf("changed record: %+v", res)
	}
	// A record that appeared fails an absence compare.
	if err := s.Put(ctx, "kv", []byte("policy"), []byte{}); err != nil {
		t.Fatal(err)
	}
	guard[0].Old = []byte("revoked")
	if res := write(guard, []byte("written")); res.Succeeded || res.FailedOp != 1 || res.Values[1] == nil {
		t.Fatalf("record appeared: %+v", res)
	}
	// A prefix compare needs the value to exist and to start so.
	res, err := s.Txn(ctx, []Op{{Kind: OpCompare, Table: "kv", Key: []byte("tok"), Old: []byte("rev"), Prefix: true}})
	if err != nil || !res.Succeeded {
		t.Fatalf("prefix compare: %+v %v", res, err)
	}
	if v, _ := s.Get(ctx, "kv", []byte("x")); string(v) != "written" {
		t.Fatalf("x = %q after failed guards", v)
	}
}

func TestListPagination(t *testing.T) {
	c := newCluster(t, 1, fastTimeouts)
	s := c.node("node1")
	mustCreateTable(t, s, "kv")
	ctx := ctxT(t, 20*time.Second)
	var ops []Op
	for i := 0; i < 25; i++ {
		ops = append(ops, Op{Kind: OpPut, Table: "kv", Key: fmt.Appendf(nil, "app/%02d", i), Value: []byte{byte(i)}})
	}
	ops = append(ops, Op{Kind: OpPut, Table: "kv", Key: []byte("apq"), Value: []byte("other")})
	if _, err := s.Txn(ctx, ops); err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	var after []byte
	pages := 0
	for {
		page, err := s.List(ctx, "kv", ListOptions{Prefix: []byte("app/"), After: after, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, kv := range page.Items {
			got = append(got, kv.Key)
		}
		if page.Next == nil {
			break
		}
		after = page.Next
	}
	if len(got) != 25 || pages != 3 {
		t.Fatalf("%d keys in %d pages, want 25 in 3", len(got), pages)
	}
	for i, k := range got {
		if string(k) != fmt.Sprintf("app/%02d", i) {
			t.Fatalf("key %d is %s", i, k)
		}
	}
	page, err := s.List(ctx, "kv", ListOptions{Prefix: []byte("app/"), KeysOnly: true, Limit: 25})
	if err != nil || len(page.Items) != 25 || page.Items[0].Value != nil || page.Next != nil {
		t.Fatalf("keys-only page: %d items, next %q, %v", len(page.Items), page.Next, err)
	}
}

func TestStatusAndMembership(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	leader := c.waitLeader(settle)
	st := leader.Status()
	if st.State != "Leader" || st.LeaderID != leader.ID() || len(st.Peers) != 3 {
		t.Fatalf("status: %+v", st)
	}
	for _, p := range st.Peers {
		if !p.Voter || !p.Healthy || p.LastContact.IsZero() {
			t.Fatalf("peer %+v", p)
		}
	}
	// Graceful close of the leader hands leadership to a follower.
	c.mu.Lock()
	delete(c.nodes, leader.ID())
	c.mu.Unlock()
	closed := time.Now()
	if err := leader.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	next := c.waitLeader(settle)
	t.Logf("leadership handed to %s in %v", next.ID(), time.Since(closed).Round(time.Millisecond))

	// Remove the old leader through the remaining follower (forwarded).
	var follower *Store
	for _, s := range c.live() {
		if s != next {
			follower = s
		}
	}
	if err := follower.RemoveServer(ctxT(t, settle), leader.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, settle, func() error {
		if n := len(next.Status().Peers); n != 2 {
			return fmt.Errorf("%d peers", n)
		}
		return nil
	})
	mustCreateTable(t, follower, "kv")
}
