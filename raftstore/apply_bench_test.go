package raftstore

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkApplyBatch measures the state machine alone: one op is one
// batch entry of 32 commands, each a put of a 1 KiB value under a new key
// with its own request ID, as group commit makes them from 64 writers, and
// the write of the state file that applies it (no fsync: the state file
// takes none). "txn" makes each command a transaction of three operations
// (a compare and two puts, one of them over one of 1,024 existing keys),
// as a secret's write is.
func BenchmarkApplyBatch(b *testing.B) {
	for _, kind := range []string{"put", "txn"} {
		b.Run(kind, func(b *testing.B) { benchApplyBatch(b, kind) })
	}
}

func benchApplyBatch(b *testing.B, kind string) {
	f, err := newFSM(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.close(false)
	index := uint64(1)
	create := &command{Type: cmdCreateTable, RequestID: []byte("create"), Ops: []Op{{Table: "kv"}}}
	f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: create.encode()}})
	const perBatch = 32
	value := make([]byte, 1024)
	entries := make([][]byte, 0, b.N)
	for i := 0; i < b.N; i++ {
		data := []byte{batchVersion, perBatch}
		for j := 0; j < perBatch; j++ {
			n := i*perBatch + j
			key := fmt.Appendf(nil, "data/%012d", n)
			ops := []Op{{Kind: OpPut, Table: "kv", Key: key, Value: value}}
			if kind == "txn" {
				ops = []Op{
					{Kind: OpCompare, Table: "kv", Key: []byte("mount")},
					{Kind: OpPut, Table: "kv", Key: fmt.Appendf(nil, "meta/%04d", n%1024), Value: value[:100]},
					ops[0],
				}
			}
			c := &command{Type: cmdTxn, RequestID: fmt.Appendf(nil, "%016d", n), Time: int64(n), Ops: ops}
			data = appendBytes(data, c.encode())
		}
		entries = append(entries, data)
	}
	b.SetBytes(perBatch * 1024)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		index++
		r := f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: entries[i]}})
		if res := r[0].([]applyResult); res[0].Err != nil || !res[0].Res.Succeeded {
			b.Fatalf("batch %d: %+v", i, res[0])
		}
	}
}
