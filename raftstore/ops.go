package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// CreateTable creates a table if it does not exist. Safe to call at every
// start on every node.
func (s *Store) CreateTable(ctx context.Context, name string) error {
	if !validTable(name) {
		return fmt.Errorf("%w: %q", ErrInvalidTable, name)
	}
	_, err := s.propose(ctx, &command{Type: cmdCreateTable, Ops: []Op{{Table: name}}})
	return err
}

// Put writes value at key.
func (s *Store) Put(ctx context.Context, table string, key, value []byte) error {
	_, err := s.Txn(ctx, []Op{{Kind: OpPut, Table: table, Key: key, Value: value}})
	return err
}

// Delete removes key; removing an absent key is not an error.
func (s *Store) Delete(ctx context.Context, table string, key []byte) error {
	_, err := s.Txn(ctx, []Op{{Kind: OpDelete, Table: table, Key: key}})
	return err
}

// CompareAndSwap writes new at key if the current value equals old (old nil:
// only if key is absent). It reports whether it swapped and, if not, the
// current value (nil when absent).
func (s *Store) CompareAndSwap(ctx context.Context, table string, key, old, new []byte) (bool, []byte, error) {
	res, err := s.Txn(ctx, []Op{{Kind: OpCAS, Table: table, Key: key, Old: old, Value: new}})
	if err != nil {
		return false, nil, err
	}
	if !res.Succeeded {
		return false, res.Values[0], nil
	}
	return true, nil, nil
}

// Txn applies ops atomically: all conditions are checked first and, if one
// fails, nothing is written and the result says which.
func (s *Store) Txn(ctx context.Context, ops []Op) (TxnResult, error) {
	for i := range ops {
		if ops[i].Kind == OpPut && ops[i].Value == nil {
			ops[i].Value = []byte{}
		}
		if ops[i].Kind == OpCAS && !ops[i].Delete && ops[i].Value == nil {
			ops[i].Value = []byte{}
		}
	}
	c := &command{Type: cmdTxn, Ops: ops}
	if err := c.validate(); err != nil {
		return TxnResult{}, err
	}
	if err := s.checkTables(ctx, ops); err != nil {
		return TxnResult{}, err
	}
	return s.propose(ctx, c)
}

// checkTables rejects an unknown table before anything reaches the log. A
// table missing here may exist on a leader this node lags behind, so a miss
// is confirmed with a linearizable look before it is reported.
func (s *Store) checkTables(ctx context.Context, ops []Op) error {
	if s.fsm.missingTable(ops) == "" {
		return nil
	}
	if err := s.linearize(ctx); err != nil {
		return err
	}
	if name := s.fsm.missingTable(ops); name != "" {
		return fmt.Errorf("%w: %q", ErrUnknownTable, name)
	}
	return nil
}

func (s *Store) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.ApplyTimeout)
}

// propose replicates c, which its caller has validated, through the leader,
// wherever it is. Every command carries a request ID, so a retry after a
// lost answer is applied once.
func (s *Store) propose(ctx context.Context, c *command) (TxnResult, error) {
	defer wrote(ctx)
	c.RequestID = newRequestID()
	r, err := s.onLeader(ctx, leaderOp{kind: reqWrite, cmd: c, changes: true})
	if err != nil {
		return TxnResult{}, err
	}
	return r.Res, r.Err
}

// leaderOp is an operation that runs on the leader: local when this node
// leads, else sent to the leader as a request of kind with body. A write
// names its command instead: it is applied locally or, encoded the first
// time it is sent, sent as the body.
type leaderOp struct {
	kind  byte
	body  []byte
	cmd   *command
	local func(context.Context) (applyResult, error)
	// changes is set for an operation that changes the state: once a try
	// may have reached the leader, running out of time is an unknown
	// outcome, not a plain timeout.
	changes bool
}

// onLeader runs op on the leader, wherever it is, retrying while there is
// no leader, the leader moves, or a connection fails, until ctx (or the
// apply timeout) ends. A result's error from the leader that a retry could
// not change is returned in the result.
func (s *Store) onLeader(ctx context.Context, op leaderOp) (applyResult, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	sent := false
	for {
		var (
			r   applyResult
			err error
		)
		if s.raft.State() == raft.Leader {
			if op.cmd != nil {
				r, err = s.applyLocal(ctx, op.cmd)
			} else {
				r, err = op.local(ctx)
			}
			sent = sent || !errors.Is(err, ErrNotLeader)
		} else if id, addr := s.Leader(); addr != "" {
			if op.body == nil && op.cmd != nil {
				op.body = op.cmd.encode()
			}
			var maybe bool
			r, maybe, err = s.fwd.call(ctx, addr, id, op.kind, op.body)
			sent = sent || maybe
			if err == nil && retryable(r.Err) {
				err, r = r.Err, applyResult{}
			}
		} else {
			err = ErrNoLeader
		}
		if err == nil {
			return r, nil
		}
		if !retryable(err) {
			return applyResult{}, err
		}
		if werr := s.pause(ctx); werr != nil {
			if sent && op.changes {
				return applyResult{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
			}
			return applyResult{}, fmt.Errorf("%w: %v", werr, err)
		}
	}
}

// retryable reports whether a failed attempt may succeed on another try
// (against a new leader, or once one is elected).
func retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader), errors.Is(err, ErrUnknownOutcome),
		errors.Is(err, ErrTimeout), errors.Is(err, ErrPeerIdentity):
		return true
	}
	for _, e := range errorCodes[1:] {
		if errors.Is(err, e) {
			return false
		}
	}
	return true // connection errors
}

func (s *Store) pause(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ErrTimeout
	case <-s.closing:
		return ErrClosed
	case <-time.After(20 * time.Millisecond):
		return nil
	}
}

// applyLocal proposes c on this node, which must be the leader, in the next
// group-commit batch, and waits until it is applied here.
func (s *Store) applyLocal(ctx context.Context, c *command) (applyResult, error) {
	if s.raft.State() != raft.Leader {
		return applyResult{}, ErrNotLeader
	}
	c.Time = s.cfg.Now().UnixNano()
	return s.batch.submit(ctx, c)
}

// await waits for a Raft future until ctx ends or the store closes. Raft
// never answers a future that is still queued when it shuts down, so
// waiting on Error alone can block for ever; the goroutine left waiting on
// such a future is the price of not blocking the caller.
func (s *Store) await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ErrTimeout
	case <-s.closing:
		return ErrClosed
	}
}

func checkRead(table string, key []byte) error {
	if !validTable(table) {
		return fmt.Errorf("%w: %q", ErrInvalidTable, table)
	}
	if key != nil && (len(key) == 0 || len(key) > MaxKeySize) {
		return fmt.Errorf("%w: key must be 1 to %d bytes", ErrInvalidKey, MaxKeySize)
	}
	return nil
}

func (s *Store) read(ctx context.Context, table string, opts []ReadOption, fn func(b *bolt.Bucket) error) error {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	if !o.stale {
		if err := s.linearizeIn(ctx); err != nil {
			return err
		}
	}
	return s.fsm.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(tableBucket(table))
		if b == nil {
			return fmt.Errorf("%w: %q", ErrUnknownTable, table)
		}
		return fn(b)
	})
}

// Get returns the value at key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, table string, key []byte, opts ...ReadOption) ([]byte, error) {
	if key == nil {
		key = []byte{}
	}
	if err := checkRead(table, key); err != nil {
		return nil, err
	}
	var v []byte
	err := s.read(ctx, table, opts, func(b *bolt.Bucket) error {
		if v = b.Get(key); v == nil {
			return ErrNotFound
		}
		v = bytes.Clone(v)
		return nil
	})
	return v, err
}

// List returns one page of the keys with o.Prefix, in key order.
func (s *Store) List(ctx context.Context, table string, o ListOptions, opts ...ReadOption) (ListPage, error) {
	if err := checkRead(table, nil); err != nil {
		return ListPage{}, err
	}
	limit := o.Limit
	if limit <= 0 || limit > DefaultListLimit {
		limit = DefaultListLimit
	}
	var page ListPage
	var scanned int64
	defer func() { s.fsm.noteScanned(scanned) }()
	err := s.read(ctx, table, opts, func(b *bolt.Bucket) error {
		c := b.Cursor()
		start := o.Prefix
		if o.After != nil && bytes.Compare(o.After, start) >= 0 {
			start = o.After
		}
		k, v := c.Seek(start)
		if o.After != nil && bytes.Equal(k, o.After) {
			k, v = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, o.Prefix); k, v = c.Next() {
			scanned += int64(len(k) + len(v))
			if len(page.Items) == limit {
				page.Next = bytes.Clone(page.Items[limit-1].Key)
				return nil
			}
			kv := KV{Key: bytes.Clone(k)}
			if !o.KeysOnly {
				kv.Value = bytes.Clone(v)
			}
			page.Items = append(page.Items, kv)
		}
		return nil
	})
	return page, err
}
