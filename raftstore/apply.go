package raftstore

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// applier applies the commands of one state machine transaction. It keeps
// what the commands of a batch can share, so that applying one allocates
// little: the store's bucket handles, one decoded command whose operations
// are reused, and the buffer that remembered results are written to.
//
// A decoded command's keys and values are slices of the log entry, which
// nothing changes; bbolt copies a key when it is put and keeps a value
// only until the transaction commits.
type applier struct {
	tx           *bolt.Tx
	req          *bolt.Bucket
	reqIdx       *bolt.Bucket
	reqCursor    *bolt.Cursor // for lookups in req
	reqIdxCursor *bolt.Cursor // for forgetting old requests
	cmd          command
	name         []byte         // a table's bucket name, for the lookup
	key          []byte         // a request index key, for the put (bbolt copies keys)
	buckets      []*bolt.Bucket // of each operation of a transaction
	// results holds the encoded results put in this transaction: bbolt
	// keeps a value until the commit, so each result has its own bytes
	// and the buffer is replaced, never written over, when it is full.
	results []byte
	// vals holds the Values of the transactions' results, which are
	// handed out and never reused, so a batch allocates them at once.
	vals [][]byte
}

// reserve makes room for the results of a batch of n commands of one
// operation each, their usual form (more are made room for as needed).
func (a *applier) reserve(n int) {
	if cap(a.results)-len(a.results) < n*resultGuess {
		a.results = make([]byte, 0, n*resultGuess)
	}
	if cap(a.vals)-len(a.vals) < n {
		a.vals = make([][]byte, 0, n)
	}
}

// resultGuess is the length of a successful result of one write.
const resultGuess = 16

// values returns n empty values for a result.
func (a *applier) values(n int) [][]byte {
	if cap(a.vals)-len(a.vals) < n {
		a.vals = make([][]byte, 0, max(n, 2*cap(a.vals)))
	}
	start := len(a.vals)
	a.vals = a.vals[:start+n]
	return a.vals[start : start+n : start+n]
}

func newApplier(tx *bolt.Tx) *applier {
	return &applier{tx: tx, req: tx.Bucket(bucketReq), reqIdx: tx.Bucket(bucketReqIdx)}
}

// table returns the bucket of the user table name, nil if there is none.
func (a *applier) table(name string) *bolt.Bucket {
	a.name = append(append(a.name[:0], tablePrefix...), name...)
	return a.tx.Bucket(a.name)
}

func (a *applier) applyCommand(index uint64, data []byte) applyResult {
	c := &a.cmd
	if err := c.decode(data); err != nil {
		return applyResult{Err: err, Res: TxnResult{FailedOp: -1, Index: index}}
	}
	if len(c.RequestID) > 0 {
		if prev := a.remembered(c.RequestID); prev != nil {
			if r, err := decodeResult(prev); err == nil {
				return r
			}
		}
	}
	var r applyResult
	switch c.Type {
	case cmdCreateTable:
		_, err := a.tx.CreateBucketIfNotExists(tableBucket(c.Ops[0].Table))
		r = applyResult{Err: err, Res: TxnResult{Succeeded: err == nil, FailedOp: -1}}
	case cmdTxn:
		r = a.applyTxn(c.Ops)
	case cmdNoop:
		r = applyResult{Res: TxnResult{Succeeded: true, FailedOp: -1}}
	case cmdClusterID:
		meta := a.tx.Bucket(bucketMeta)
		var err error
		if meta.Get(clusterIDKey) == nil {
			err = meta.Put(clusterIDKey, c.Ops[0].Value)
		}
		r = applyResult{Err: err, Res: TxnResult{Succeeded: err == nil, FailedOp: -1}}
	}
	r.Res.Index = index
	if len(c.RequestID) > 0 {
		if err := a.remember(index, c.RequestID, r); err != nil {
			r.Err = err
		}
	}
	return r
}

// remembered returns the result remembered for the request id, nil if
// there is none. It looks with one cursor for the whole batch, which
// reuses its path where a Get would allocate a new one; a Seek starts from
// the root, so the puts in between do not mislead it.
func (a *applier) remembered(id []byte) []byte {
	if a.reqCursor == nil {
		a.reqCursor = a.req.Cursor()
	}
	if k, v := a.reqCursor.Seek(id); bytes.Equal(k, id) {
		return v
	}
	return nil
}

// remember records the result of a request so that a retry of it is
// answered without applying it again, and forgets requests older than the
// dedup window. Both depend only on log indexes, so every node agrees.
func (a *applier) remember(index uint64, id []byte, r applyResult) error {
	if n := maxResultSize(r); cap(a.results)-len(a.results) < n {
		a.results = make([]byte, 0, max(n, 2*cap(a.results)))
	}
	start := len(a.results)
	a.results = appendResult(a.results, r)
	if err := a.req.Put(id, a.results[start:len(a.results):len(a.results)]); err != nil {
		return err
	}
	a.key = append(binary.BigEndian.AppendUint64(a.key[:0], index), id...)
	if err := a.reqIdx.Put(a.key, nil); err != nil {
		return err
	}
	if index <= dedupWindow {
		return nil
	}
	cutoff := index - dedupWindow
	if a.reqIdxCursor == nil {
		a.reqIdxCursor = a.reqIdx.Cursor()
	}
	c := a.reqIdxCursor
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k[:8]) < cutoff; k, _ = c.First() {
		if err := a.req.Delete(k[8:]); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// overlayScan is the size of transaction up to which an operation finds
// the writes of the operations before it by looking back over them; a
// larger one keeps them in a map.
const overlayScan = 16

// pendingWrite is a write of an earlier operation of a transaction.
type pendingWrite struct {
	v   []byte
	del bool
}

// writes reports whether op writes its key, and what it leaves there.
func (op *Op) writes() (pendingWrite, bool) {
	switch {
	case op.Kind == OpPut || (op.Kind == OpCAS && !op.Delete):
		return pendingWrite{v: op.Value}, true
	case op.Kind == OpDelete || op.Kind == OpCAS:
		return pendingWrite{del: true}, true
	}
	return pendingWrite{}, false
}

// applyTxn evaluates every condition first, against the state as modified by
// the earlier operations of the same transaction, and writes only if all hold.
func (a *applier) applyTxn(ops []Op) applyResult {
	res := TxnResult{FailedOp: -1, Values: a.values(len(ops))}
	if cap(a.buckets) < len(ops) {
		a.buckets = make([]*bolt.Bucket, len(ops))
	}
	buckets := a.buckets[:len(ops)]
	defer clear(buckets)
	var overlay map[string]pendingWrite
	if len(ops) > overlayScan {
		overlay = map[string]pendingWrite{}
	}
	current := func(i int) ([]byte, bool) {
		op := &ops[i]
		if overlay != nil {
			if p, ok := overlay[op.Table+"\x00"+string(op.Key)]; ok {
				return p.v, !p.del
			}
		} else {
			for j := i - 1; j >= 0; j-- {
				if p, ok := ops[j].writes(); ok && ops[j].Table == op.Table && bytes.Equal(ops[j].Key, op.Key) {
					return p.v, !p.del
				}
			}
		}
		v := buckets[i].Get(op.Key)
		return v, v != nil
	}
	for i := range ops {
		op := &ops[i]
		if buckets[i] = a.table(op.Table); buckets[i] == nil {
			return applyResult{Err: fmt.Errorf("%w: %q", ErrUnknownTable, op.Table), Res: TxnResult{FailedOp: i}}
		}
		ok := true
		switch op.Kind {
		case OpGet:
			v, found := current(i)
			res.Values[i] = bytes.Clone(v)
			ok = found
		case OpCAS, OpCompare:
			v, found := current(i)
			switch {
			case op.Old == nil:
				ok = !found
			case op.Prefix:
				ok = found && bytes.HasPrefix(v, op.Old)
			default:
				ok = found && bytes.Equal(v, op.Old)
			}
			if !ok {
				res.Values[i] = bytes.Clone(v)
			}
		}
		if !ok {
			res.FailedOp = i
			return applyResult{Res: res}
		}
		if p, ok := op.writes(); ok && overlay != nil {
			overlay[op.Table+"\x00"+string(op.Key)] = p
		}
	}
	for i := range ops {
		p, writes := ops[i].writes()
		if !writes {
			continue
		}
		var err error
		if p.del {
			err = buckets[i].Delete(ops[i].Key)
		} else {
			err = buckets[i].Put(ops[i].Key, p.v)
		}
		if err != nil {
			return applyResult{Err: err, Res: TxnResult{FailedOp: i}}
		}
	}
	res.Succeeded = true
	return applyResult{Res: res}
}
