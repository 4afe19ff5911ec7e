package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestOrderedTablesFillTheirPages writes the same keys, in increasing
// order, to a table named in OrderedTables and to one that is not: the
// first takes far fewer pages.
func TestOrderedTablesFillTheirPages(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) {
		fastTimeouts(cfg)
		cfg.OrderedTables = []string{"ordered"}
	})
	s := c.node("node1")
	mustCreateTable(t, s, "ordered")
	mustCreateTable(t, s, "plain")
	value := bytes.Repeat([]byte("v"), 100)
	for batch := range 40 {
		for _, table := range []string{"ordered", "plain"} {
			ops := make([]Op, 0, 50)
			for i := range 50 {
				ops = append(ops, Op{Kind: OpPut, Table: table, Key: fmt.Appendf(nil, "%08d", batch*50+i), Value: value})
			}
			if _, err := s.Txn(ctxT(t, settle), ops); err != nil {
				t.Fatal(err)
			}
		}
	}
	pages := map[string]int{}
	if err := s.fsm.view(func(tx *bolt.Tx) error {
		for _, table := range []string{"ordered", "plain"} {
			st := tx.Bucket(tableBucket(table)).Stats()
			pages[table] = st.LeafAlloc + st.BranchAlloc
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("pages: %v", pages)
	if pages["ordered"]*10 > pages["plain"]*7 {
		t.Fatalf("an ordered table takes %d bytes of pages, a plain one %d", pages["ordered"], pages["plain"])
	}
	if err := (&Config{NodeID: "n", DataDir: "d", BindAddr: "a", HeartbeatTimeout: 1, ElectionTimeout: 1, LeaderLeaseTimeout: 1,
		MaxAppendEntries: 1, ApplyTimeout: 1, OrderedTables: []string{"no spaces"}}).Validate(); !errors.Is(err, ErrInvalidTable) {
		t.Fatalf("an invalid table name in OrderedTables: %v", err)
	}
}
