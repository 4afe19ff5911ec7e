package raftstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Table names follow internal/names's rule (fuzzed there) at MaxTableName
// characters.
func TestValidTable(t *testing.T) {
	for _, s := range []string{"kv", "auth.tokens", "a_b-c.d", strings.Repeat("a", MaxTableName)} {
		if !validTable(s) {
			t.Errorf("validTable(%q) = false", s)
		}
	}
	for _, s := range []string{"", "_meta", "-x", ".x", "Kv", "k v", "t/kv", strings.Repeat("a", MaxTableName+1)} {
		if validTable(s) {
			t.Errorf("validTable(%q) = true", s)
		}
	}
}

// TestTxnSeesItsOwnWrites applies transactions whose operations read and
// compare keys that earlier operations of the same transaction wrote, in
// both ways the state machine tracks those writes (a look back over a
// small transaction, a map for a large one): padding a transaction past
// overlayScan with reads of other keys changes none of its results.
func TestTxnSeesItsOwnWrites(t *testing.T) {
	f, err := newFSM(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close(false)
	index := uint64(0)
	apply := func(c *command) applyResult {
		index++
		c.RequestID = fmt.Appendf(nil, "req-%d", index)
		return f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: c.encode()}})[0].(applyResult)
	}
	for _, tbl := range []string{"a", "b"} {
		if r := apply(&command{Type: cmdCreateTable, Ops: []Op{{Table: tbl}}}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	k, v := func(s string) []byte { return []byte(s) }, func(s string) []byte { return []byte(s) }
	cases := []struct {
		name       string
		ops        []Op
		succeeded  bool
		failedOp   int
		wantValues map[int]string // index -> value ("" with ok: empty; absent key: nil)
	}{
		{"put then get", []Op{{Kind: OpPut, Table: "a", Key: k("x"), Value: v("1")}, {Kind: OpGet, Table: "a", Key: k("x")}},
			true, -1, map[int]string{1: "1"}},
		{"same key in another table is another key", []Op{{Kind: OpPut, Table: "a", Key: k("y"), Value: v("1")}, {Kind: OpCAS, Table: "b", Key: k("y"), Value: v("2")}},
			true, -1, nil},
		{"the latest write counts", []Op{{Kind: OpPut, Table: "a", Key: k("z"), Value: v("1")}, {Kind: OpPut, Table: "a", Key: k("z"), Value: v("2")},
			{Kind: OpCAS, Table: "a", Key: k("z"), Old: v("2"), Value: v("3")}, {Kind: OpGet, Table: "a", Key: k("z")}},
			true, -1, map[int]string{3: "3"}},
		{"a delete hides the stored value", []Op{{Kind: OpDelete, Table: "a", Key: k("x")}, {Kind: OpCompare, Table: "a", Key: k("x")}},
			true, -1, nil},
		{"a CAS delete, then a get fails", []Op{{Kind: OpPut, Table: "a", Key: k("y"), Value: v("1")},
			{Kind: OpCAS, Table: "a", Key: k("y"), Old: v("1"), Delete: true}, {Kind: OpGet, Table: "a", Key: k("y")}},
			false, 2, nil},
		{"a failed compare reports the pending value", []Op{{Kind: OpPut, Table: "b", Key: k("p"), Value: v("abc")}, {Kind: OpCompare, Table: "b", Key: k("p"), Old: v("x"), Prefix: true}},
			false, 1, map[int]string{1: "abc"}},
		{"an empty value exists", []Op{{Kind: OpPut, Table: "b", Key: k("e"), Value: []byte{}}, {Kind: OpCompare, Table: "b", Key: k("e"), Old: []byte{}},
			{Kind: OpGet, Table: "b", Key: k("e")}},
			true, -1, map[int]string{2: ""}},
	}
	for _, pad := range []int{0, overlayScan} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/pad=%d", tc.name, pad), func(t *testing.T) {
				ops := []Op{}
				for i := 0; i < pad; i++ {
					ops = append(ops, Op{Kind: OpCompare, Table: "b", Key: fmt.Appendf(nil, "absent-%d", i)})
				}
				ops = append(ops, tc.ops...)
				r := apply(&command{Type: cmdTxn, Ops: ops})
				if r.Err != nil {
					t.Fatal(r.Err)
				}
				failed := tc.failedOp
				if failed >= 0 {
					failed += pad
				}
				if r.Res.Succeeded != tc.succeeded || r.Res.FailedOp != failed {
					t.Fatalf("succeeded %v, failed op %d; want %v, %d", r.Res.Succeeded, r.Res.FailedOp, tc.succeeded, failed)
				}
				for i, got := range r.Res.Values {
					want, ok := tc.wantValues[i-pad]
					if !ok {
						if got != nil {
							t.Fatalf("value %d: %q, want none", i, got)
						}
						continue
					}
					if got == nil || !bytes.Equal(got, []byte(want)) {
						t.Fatalf("value %d: %q, want %q", i, got, want)
					}
				}
				// Undo, so that the padded run starts from the same state.
				for _, op := range tc.ops {
					if r := apply(&command{Type: cmdTxn, Ops: []Op{{Kind: OpDelete, Table: op.Table, Key: op.Key}}}); r.Err != nil {
						t.Fatal(r.Err)
					}
				}
			})
		}
	}
}

// TestRetryInOneBatchIsAppliedOnce puts a command and its retry (the same
// request ID) in one batch entry, as a follower's retry after a lost
// answer can land, and after them a command and a retry in the next entry:
// each retry gets the first result and writes nothing.
func TestRetryInOneBatchIsAppliedOnce(t *testing.T) {
	f, err := newFSM(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close(false)
	entry := func(cmds ...*command) []byte {
		data := []byte{batchVersion, byte(len(cmds))}
		for _, c := range cmds {
			data = appendBytes(data, c.encode())
		}
		return data
	}
	create := &command{Type: cmdCreateTable, RequestID: []byte("create"), Ops: []Op{{Table: "kv"}}}
	cas := func(id, old, new string) *command {
		op := Op{Kind: OpCAS, Table: "kv", Key: []byte("k"), Value: []byte(new)}
		if old != "" {
			op.Old = []byte(old)
		}
		return &command{Type: cmdTxn, RequestID: []byte(id), Ops: []Op{op}}
	}
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: entry(create, cas("a", "", "1"), cas("a", "", "1"), cas("b", "1", "2"))},
		{Index: 2, Type: raft.LogCommand, Data: entry(cas("b", "1", "2"), cas("c", "2", "3"), cas("a", "", "1"))},
	}
	resp := f.ApplyBatch(logs)
	want := [][]struct {
		ok    bool
		index uint64
	}{
		{{true, 1}, {true, 1}, {true, 1}, {true, 1}},
		{{true, 1}, {true, 2}, {true, 1}},
	}
	for i, r := range resp {
		rs := r.([]applyResult)
		for j, w := range want[i] {
			if rs[j].Err != nil || rs[j].Res.Succeeded != w.ok || rs[j].Res.Index != w.index {
				t.Fatalf("entry %d, command %d: %+v, want succeeded %v at index %d", i, j, rs[j], w.ok, w.index)
			}
		}
	}
	var v []byte
	_ = f.view(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(tableBucket("kv")).Get([]byte("k")))
		return nil
	})
	if string(v) != "3" {
		t.Fatalf("k = %q, want 3", v)
	}
}

// TestOldRequestsAreForgotten checks the dedup window: a command applied
// at index i forgets the requests of entries below i-dedupWindow, in
// both tables, and keeps the rest.
func TestOldRequestsAreForgotten(t *testing.T) {
	f, err := newFSM(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close(false)
	noop := func(id string) []byte {
		return (&command{Type: cmdNoop, RequestID: []byte(id)}).encode()
	}
	entry := func(ids ...string) []byte {
		data := []byte{batchVersion, byte(len(ids))}
		for _, id := range ids {
			data = appendBytes(data, noop(id))
		}
		return data
	}
	f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: noop("old1")},
		{Index: 3, Type: raft.LogCommand, Data: entry("old2", "old3")},
		{Index: 10, Type: raft.LogCommand, Data: noop("keep")},
	})
	f.ApplyBatch([]*raft.Log{{Index: dedupWindow + 5, Type: raft.LogCommand, Data: entry("new1", "new2")}})
	var req, idx []string
	_ = f.view(func(tx *bolt.Tx) error {
		_ = tx.Bucket(bucketReq).ForEach(func(k, _ []byte) error { req = append(req, string(k)); return nil })
		return tx.Bucket(bucketReqIdx).ForEach(func(k, _ []byte) error {
			idx = append(idx, fmt.Sprintf("%d/%s", binary.BigEndian.Uint64(k[:8]), k[8:]))
			return nil
		})
	})
	if got, want := fmt.Sprint(req), "[keep new1 new2]"; got != want {
		t.Errorf("remembered requests %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(idx), fmt.Sprintf("[10/keep %d/new1 %d/new2]", dedupWindow+5, dedupWindow+5); got != want {
		t.Errorf("request index %s, want %s", got, want)
	}
}
