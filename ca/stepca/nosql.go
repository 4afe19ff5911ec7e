package stepca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/smallstep/nosql/database"
)

// TablePrefix starts the name of every table step-ca's data is kept in.
const TablePrefix = "step."

// ErrRolledBack is returned by (*DB).Update when a CmpOrRollback entry did
// not match: nothing of the transaction was written.
var ErrRolledBack = errors.New("stepca: compare failed, transaction rolled back")

// maxUpdateAttempts bounds the retries of an Update whose compare-and-swap
// entries saw a concurrent write between planning and applying.
const maxUpdateAttempts = 16

// DB is step-ca's nosql.DB over kms.Storage (the barrier, so every value is
// encrypted at rest). Its semantics are those of step's bbolt driver:
//   - values are byte-exact, and an absent key is database.ErrNotFound;
//   - CmpAndSwap with a nil old value inserts only if the key is absent, and
//     CmpAndSwap to a nil new value deletes the key;
//   - Update is ONE atomic storage transaction: a Get of an absent key aborts
//     it (database.ErrNotFound), a CmpOrRollback that does not match aborts
//     it (ErrRolledBack), and a CmpAndSwap that does not match is reported in
//     its entry (Swapped false, Result the current value) while the rest
//     applies, as bbolt does;
//   - CreateTable is idempotent, so it can run at every start on every node.
//
// Step's bucket names map to storage tables by TableName.
type DB struct {
	store   kms.Storage
	timeout time.Duration
}

var _ database.DB = (*DB)(nil)

// NewDB returns step-ca's database over store. Every call gets timeout as
// its deadline (nosql's interface carries no context); 0 means 30s.
func NewDB(store kms.Storage, timeout time.Duration) (*DB, error) {
	if store == nil {
		return nil, errors.New("stepca: NewDB: nil storage")
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &DB{store: store, timeout: timeout}, nil
}

// TableName maps one of step's bucket names to a storage table name: the
// prefix "step." and the name in lower case. Names that would not be valid
// storage table names are refused.
func TableName(bucket []byte) (string, error) {
	name := TablePrefix + strings.ToLower(string(bucket))
	if len(bucket) == 0 || len(name) > raftstore.MaxTableName {
		return "", fmt.Errorf("%w: step bucket %q", raftstore.ErrInvalidTable, bucket)
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '.' && c != '-' {
			return "", fmt.Errorf("%w: step bucket %q", raftstore.ErrInvalidTable, bucket)
		}
	}
	return name, nil
}

func (d *DB) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.timeout)
}

// notFound wraps database.ErrNotFound, and the storage error when there is
// one, so that both nosql.IsErrNotFound and errors.Is see them.
func notFound(table string, key []byte, err error) error {
	if err == nil {
		return fmt.Errorf("stepca: %s/%s: %w", table, key, database.ErrNotFound)
	}
	return fmt.Errorf("stepca: %s/%s: %w: %w", table, key, database.ErrNotFound, err)
}

// Open does nothing: the storage is open before the DB is made.
func (d *DB) Open(string, ...database.Option) error { return nil }

// Close does nothing: the storage outlives the DB.
func (d *DB) Close() error { return nil }

// CreateTable creates the table for bucket if it does not exist.
func (d *DB) CreateTable(bucket []byte) error {
	t, err := TableName(bucket)
	if err != nil {
		return err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	if err := d.store.CreateTable(ctx, t); err != nil {
		return fmt.Errorf("stepca: create table %s: %w", t, err)
	}
	return nil
}

// DeleteTable is not supported: storage tables are never dropped.
func (d *DB) DeleteTable([]byte) error { return database.ErrOpNotSupported }

// Get returns the value at bucket/key, or an error wrapping
// database.ErrNotFound when the key (or the table) does not exist.
func (d *DB) Get(bucket, key []byte) ([]byte, error) {
	t, err := TableName(bucket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	v, err := d.store.Get(ctx, t, key)
	switch {
	case errors.Is(err, raftstore.ErrNotFound), errors.Is(err, raftstore.ErrUnknownTable):
		return nil, notFound(t, key, err)
	case err != nil:
		return nil, fmt.Errorf("stepca: get %s: %w", t, err)
	}
	return v, nil
}

// Set writes value at bucket/key.
func (d *DB) Set(bucket, key, value []byte) error {
	return d.Update(&database.Tx{Operations: []*database.TxEntry{{Bucket: bucket, Key: key, Value: value, Cmd: database.Set}}})
}

// Del removes bucket/key; removing an absent key is not an error.
func (d *DB) Del(bucket, key []byte) error {
	return d.Update(&database.Tx{Operations: []*database.TxEntry{{Bucket: bucket, Key: key, Cmd: database.Delete}}})
}

// CmpAndSwap writes newValue at bucket/key if the current value equals
// oldValue (nil: only if the key is absent); a nil newValue deletes the key.
// It returns the value now stored and whether it swapped; when it did not,
// the value is the current one (nil when absent).
func (d *DB) CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	t, err := TableName(bucket)
	if err != nil {
		return nil, false, err
	}
	op := raftstore.Op{Kind: raftstore.OpCAS, Table: t, Key: key, Old: oldValue, Value: newValue, Delete: newValue == nil}
	ctx, cancel := d.ctx()
	defer cancel()
	res, err := d.store.Txn(ctx, []raftstore.Op{op})
	if err != nil {
		return nil, false, fmt.Errorf("stepca: compare-and-swap %s: %w", t, err)
	}
	if !res.Succeeded {
		return res.Values[0], false, nil
	}
	return newValue, true, nil
}

// List returns every entry of bucket, in key order.
func (d *DB) List(bucket []byte) ([]*database.Entry, error) {
	t, err := TableName(bucket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	var out []*database.Entry
	err = listAll(ctx, d.store, t, func(kv raftstore.KV) error {
		out = append(out, &database.Entry{Bucket: bucket, Key: kv.Key, Value: kv.Value})
		return nil
	})
	if errors.Is(err, raftstore.ErrUnknownTable) {
		return nil, notFound(t, nil, err)
	}
	return out, err
}

// listAll calls fn for every entry of table, a page at a time.
func listAll(ctx context.Context, store kms.Storage, table string, fn func(raftstore.KV) error) error {
	var after []byte
	for {
		page, err := store.List(ctx, table, raftstore.ListOptions{After: after})
		if err != nil {
			return fmt.Errorf("stepca: list %s: %w", table, err)
		}
		for _, kv := range page.Items {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if page.Next == nil {
			return nil
		}
		after = page.Next
	}
}

// Update applies tx as one atomic storage transaction (see DB). Its
// CreateTable entries run first, each on its own: storage cannot create a
// table inside a transaction.
func (d *DB) Update(tx *database.Tx) error {
	if tx == nil || len(tx.Operations) == 0 {
		return nil
	}
	ctx, cancel := d.ctx()
	defer cancel()
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		p, err := d.plan(ctx, tx)
		if err != nil {
			return err
		}
		if len(p.ops) == 0 {
			return nil
		}
		res, err := d.store.Txn(ctx, p.ops)
		if err != nil {
			return fmt.Errorf("stepca: update: %w", err)
		}
		if res.Succeeded {
			p.finish(res)
			return nil
		}
		e := p.entries[res.FailedOp]
		switch e.Cmd {
		case database.Get:
			return notFound(p.ops[res.FailedOp].Table, e.Key, nil)
		case database.CmpOrRollback:
			return fmt.Errorf("%w: %s/%s", ErrRolledBack, p.ops[res.FailedOp].Table, e.Key)
		}
		// A CmpAndSwap decided on a value that changed since: plan again.
	}
	return fmt.Errorf("stepca: update: values kept changing under %d attempts", maxUpdateAttempts)
}

// plan is the storage transaction for one attempt at a nosql transaction.
type plan struct {
	ops     []raftstore.Op
	entries []*database.TxEntry // entries[i] made ops[i]
	swapped []bool              // for CmpAndSwap entries: the decision taken
	current [][]byte            // for CmpAndSwap entries: the value compared
}

// plan maps tx onto storage operations. A CmpAndSwap must not abort the
// transaction when it does not match, and a storage compare would; so its
// outcome is decided here, on the current value (seen through the earlier
// entries of tx), and the transaction carries a compare that this value is
// still current: the swap itself when it matches, or a guard that rewrites
// the value unchanged (or deletes an absent key) when it does not.
func (d *DB) plan(ctx context.Context, tx *database.Tx) (*plan, error) {
	p := &plan{}
	overlay := map[string][]byte{} // values written by earlier entries; nil: deleted
	for _, e := range tx.Operations {
		switch e.Cmd {
		case database.CreateTable:
			if err := d.CreateTable(e.Bucket); err != nil {
				return nil, err
			}
			continue
		case database.DeleteTable:
			return nil, database.ErrOpNotSupported
		}
		t, err := TableName(e.Bucket)
		if err != nil {
			return nil, err
		}
		slot := t + "\x00" + string(e.Key)
		op := raftstore.Op{Table: t, Key: e.Key}
		var swapped bool
		var cur []byte
		switch e.Cmd {
		case database.Get:
			op.Kind = raftstore.OpGet
		case database.Set:
			op.Kind, op.Value = raftstore.OpPut, e.Value
			overlay[slot] = nonNil(e.Value)
		case database.Delete:
			op.Kind = raftstore.OpDelete
			overlay[slot] = nil
		case database.CmpOrRollback:
			op.Kind, op.Old, op.Value, op.Delete = raftstore.OpCAS, e.Value, e.Value, e.Value == nil
		case database.CmpAndSwap:
			if v, seen := overlay[slot]; seen {
				cur = v
			} else if cur, err = d.store.Get(ctx, t, e.Key); errors.Is(err, raftstore.ErrNotFound) {
				cur = nil
			} else if err != nil {
				return nil, fmt.Errorf("stepca: update: read %s: %w", t, err)
			}
			op.Kind, op.Old = raftstore.OpCAS, cur
			if swapped = equalValue(cur, e.CmpValue); swapped {
				op.Value, op.Delete = e.Value, e.Value == nil
				overlay[slot] = e.Value
			} else {
				op.Value, op.Delete = cur, cur == nil
			}
		default:
			return nil, fmt.Errorf("stepca: update: %w: %s", database.ErrOpNotSupported, e.Cmd)
		}
		p.ops = append(p.ops, op)
		p.entries = append(p.entries, e)
		p.swapped = append(p.swapped, swapped)
		p.current = append(p.current, cur)
	}
	return p, nil
}

// finish fills the results of a transaction that applied.
func (p *plan) finish(res raftstore.TxnResult) {
	for i, e := range p.entries {
		switch e.Cmd {
		case database.Get:
			e.Result = res.Values[i]
		case database.CmpAndSwap:
			e.Swapped = p.swapped[i]
			if e.Swapped {
				e.Result = e.Value
			} else {
				e.Result = p.current[i]
			}
		}
	}
}

// equalValue compares a current value (nil: absent) with an expected one
// (nil: expected absent).
func equalValue(cur, want []byte) bool {
	if cur == nil || want == nil {
		return cur == nil && want == nil
	}
	return bytes.Equal(cur, want)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
