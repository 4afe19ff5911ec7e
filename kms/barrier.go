package kms

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/custos-pki/custos/raftstore"
)

// Layout of a value as the barrier stores it:
//
//	mac (32) || term (4, big endian) || nonce (12) || AES-256-GCM ciphertext || tag (16)
//
// mac = HMAC-SHA256(casKey, lp(table) || lp(key) || plaintext), where lp is a
// 4-byte big-endian length followed by the bytes. The GCM associated data is
// "custos/barrier/v1" || lp(table) || lp(key) || mac, so a value cannot be
// moved to another key and its mac cannot be altered.
const (
	macSize       = sha256.Size
	termSize      = 4
	nonceSize     = 12
	tagSize       = 16
	barrierPrefix = macSize + termSize + nonceSize

	// BarrierOverhead is how many bytes the barrier adds to every value; the
	// largest plaintext value is raftstore.MaxValueSize - BarrierOverhead.
	BarrierOverhead = barrierPrefix + tagSize
)

var errUnknownTerm = errors.New("kms: unknown keyring term")

// lp appends a 4-byte length and b.
func lp(dst []byte, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// macLocked computes the CAS mac; b.mu must be read-locked and unsealed.
func (b *Barrier) macLocked(table string, key, plaintext []byte) []byte {
	m := hmac.New(sha256.New, b.kr.casKey)
	var hdr []byte
	hdr = lp(hdr, []byte(table))
	hdr = lp(hdr, key)
	m.Write(hdr)
	m.Write(plaintext)
	return m.Sum(nil)
}

// barrierAD appends the associated data of a value to dst.
func barrierAD(dst []byte, table string, key, mac []byte) []byte {
	ad := append(dst, "custos/barrier/v1"...)
	ad = lp(ad, []byte(table))
	ad = lp(ad, key)
	return append(ad, mac...)
}

// adPool holds buffers for associated data: the AEAD's interface call
// would move a buffer on the stack to the heap. They hold no secret.
var adPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func getAD() *[]byte { return adPool.Get().(*[]byte) }

func putAD(b *[]byte) {
	if cap(*b) <= 4096 { // keys are small; a huge one is not kept
		adPool.Put(b)
	}
}

// seal encrypts plaintext for (table, key) under the active term, spending
// one of the encryptions this node reserved under it.
func (b *Barrier) seal(ctx context.Context, table string, key, plaintext []byte) ([]byte, error) {
	for range 32 {
		out, term, err := b.sealOnce(table, key, plaintext)
		if err != nil || out != nil {
			return out, err
		}
		if err := b.reserve(ctx, term); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: barrier: no encryptions left under the keyring term", ErrConflict)
}

// sealOnce encrypts under the active term if this node has a reserved
// encryption left; otherwise it returns nil and the term to reserve under.
func (b *Barrier) sealOnce(table string, key, plaintext []byte) ([]byte, uint32, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.sealed {
		return nil, 0, ErrSealed
	}
	if !b.takeUse(b.kr.active) {
		return nil, b.kr.active, nil
	}
	t := b.kr.terms[b.kr.active]
	out := make([]byte, barrierPrefix, barrierPrefix+len(plaintext)+tagSize)
	copy(out, b.macLocked(table, key, plaintext))
	binary.BigEndian.PutUint32(out[macSize:], b.kr.active)
	nonce := out[macSize+termSize : barrierPrefix]
	rand.Read(nonce)
	ad := getAD()
	defer putAD(ad)
	*ad = barrierAD((*ad)[:0], table, key, out[:macSize])
	return t.aead.Seal(out, nonce, plaintext, *ad), b.kr.active, nil
}

// mac returns the CAS mac of plaintext at (table, key).
func (b *Barrier) mac(table string, key, plaintext []byte) ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.sealed {
		return nil, ErrSealed
	}
	return b.macLocked(table, key, plaintext), nil
}

// open decrypts a stored value, reloading the keyring once if the value is
// under a term this node does not know yet.
func (b *Barrier) open(ctx context.Context, table string, key, stored []byte) ([]byte, error) {
	return b.openIn(ctx, table, key, stored, false)
}

// openIn is open; with inPlace, stored is the caller's to overwrite, and
// the plaintext is decrypted into it rather than into a new buffer.
func (b *Barrier) openIn(ctx context.Context, table string, key, stored []byte, inPlace bool) ([]byte, error) {
	pt, err := b.openOnce(table, key, stored, inPlace)
	if errors.Is(err, errUnknownTerm) {
		if err := b.reloadForTerm(ctx, binary.BigEndian.Uint32(stored[macSize:])); err != nil {
			return nil, err
		}
		pt, err = b.openOnce(table, key, stored, inPlace)
	}
	if errors.Is(err, errUnknownTerm) {
		return nil, fmt.Errorf("%w: %s: unknown keyring term", ErrCorrupt, table)
	}
	return pt, err
}

func (b *Barrier) openOnce(table string, key, stored []byte, inPlace bool) ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.sealed {
		return nil, ErrSealed
	}
	if len(stored) < BarrierOverhead {
		return nil, fmt.Errorf("%w: %s: value too short", ErrCorrupt, table)
	}
	t := b.kr.terms[binary.BigEndian.Uint32(stored[macSize:])]
	if t == nil {
		return nil, errUnknownTerm
	}
	ad := getAD()
	defer putAD(ad)
	*ad = barrierAD((*ad)[:0], table, key, stored[:macSize])
	var dst []byte
	if inPlace { // the ciphertext's own buffer; GCM allows this overlap
		dst = stored[barrierPrefix:barrierPrefix]
	}
	pt, err := t.aead.Open(dst, stored[macSize+termSize:barrierPrefix], stored[barrierPrefix:], *ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, table)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt[:len(pt):len(pt)], nil // an append does not run over the tag
}

func checkTable(table string) error {
	if reserved(table) {
		return fmt.Errorf("%w: %q", ErrReservedTable, table)
	}
	return nil
}

// CreateTable creates a table in storage. It needs no key, so it works
// while sealed (step-ca's nosql adapter calls it at every start).
func (b *Barrier) CreateTable(ctx context.Context, name string) error {
	if err := checkTable(name); err != nil {
		return err
	}
	return b.store.CreateTable(ctx, name)
}

// Get returns the plaintext at key. Storage errors, raftstore.ErrNotFound
// among them, pass through unchanged.
func (b *Barrier) Get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) ([]byte, error) {
	if err := checkTable(table); err != nil {
		return nil, err
	}
	return b.get(ctx, table, key, opts...)
}

func (b *Barrier) get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) ([]byte, error) {
	if b.Sealed() {
		return nil, ErrSealed
	}
	v, err := b.store.Get(ctx, table, key, opts...)
	if err != nil {
		return nil, err
	}
	return b.openIn(ctx, table, key, v, true) // v is ours (NewBarrier)
}

// Put encrypts value and writes it at key.
func (b *Barrier) Put(ctx context.Context, table string, key, value []byte) error {
	if err := checkTable(table); err != nil {
		return err
	}
	ct, err := b.seal(ctx, table, key, value)
	if err != nil {
		return err
	}
	return b.store.Put(ctx, table, key, ct)
}

// Delete removes key. Like every write, it is refused while sealed.
func (b *Barrier) Delete(ctx context.Context, table string, key []byte) error {
	if err := checkTable(table); err != nil {
		return err
	}
	if b.Sealed() {
		return ErrSealed
	}
	return b.store.Delete(ctx, table, key)
}

// CompareAndSwap writes new at key if the current PLAINTEXT equals old (old
// nil: only if key is absent), and otherwise returns the current plaintext
// (nil when absent). It compares the stored mac, not the ciphertext.
func (b *Barrier) CompareAndSwap(ctx context.Context, table string, key, old, new []byte) (bool, []byte, error) {
	if err := checkTable(table); err != nil {
		return false, nil, err
	}
	res, err := b.txn(ctx, []raftstore.Op{{Kind: raftstore.OpCAS, Table: table, Key: key, Old: old, Value: new}})
	if err != nil {
		return false, nil, err
	}
	if !res.Succeeded {
		return false, res.Values[0], nil
	}
	return true, nil, nil
}

// Txn applies ops atomically, as raftstore.Store.Txn does, over plaintext:
// OpPut and OpCAS values are encrypted, OpCAS and OpCompare compare
// plaintexts through their macs, and the values in the result are
// decrypted. OpCAS or OpCompare with Prefix set is refused: a plaintext
// prefix cannot be compared.
func (b *Barrier) Txn(ctx context.Context, ops []raftstore.Op) (raftstore.TxnResult, error) {
	for _, op := range ops {
		if err := checkTable(op.Table); err != nil {
			return raftstore.TxnResult{}, err
		}
	}
	return b.txn(ctx, ops)
}

func (b *Barrier) txn(ctx context.Context, ops []raftstore.Op) (raftstore.TxnResult, error) {
	if b.Sealed() {
		return raftstore.TxnResult{}, ErrSealed
	}
	enc := make([]raftstore.Op, len(ops))
	for i, op := range ops {
		e := raftstore.Op{Kind: op.Kind, Table: op.Table, Key: op.Key, Delete: op.Delete}
		var err error
		switch op.Kind {
		case raftstore.OpGet, raftstore.OpDelete:
		case raftstore.OpPut:
			e.Value, err = b.seal(ctx, op.Table, op.Key, op.Value)
		case raftstore.OpCAS:
			if op.Prefix {
				return raftstore.TxnResult{}, fmt.Errorf("%w: op %d: prefix compare is not supported through the barrier", ErrInvalid, i)
			}
			if op.Old != nil {
				e.Prefix = true
				e.Old, err = b.mac(op.Table, op.Key, op.Old)
			}
			if err == nil && !op.Delete {
				e.Value, err = b.seal(ctx, op.Table, op.Key, op.Value)
			}
		case raftstore.OpCompare:
			if op.Prefix || op.Value != nil || op.Delete {
				return raftstore.TxnResult{}, fmt.Errorf("%w: op %d: a compare through the barrier takes a whole plaintext and writes nothing", ErrInvalid, i)
			}
			if op.Old != nil {
				e.Prefix = true
				e.Old, err = b.mac(op.Table, op.Key, op.Old)
			}
		default:
			return raftstore.TxnResult{}, fmt.Errorf("%w: op %d: unknown kind %d", ErrInvalid, i, op.Kind)
		}
		if err != nil {
			return raftstore.TxnResult{}, err
		}
		enc[i] = e
	}
	res, err := b.store.Txn(ctx, enc)
	if err != nil {
		return res, err
	}
	for i, v := range res.Values {
		if v == nil || i >= len(ops) {
			continue
		}
		if res.Values[i], err = b.open(ctx, ops[i].Table, ops[i].Key, v); err != nil {
			return raftstore.TxnResult{}, err
		}
	}
	return res, nil
}

// List returns one page of a table with its values decrypted.
func (b *Barrier) List(ctx context.Context, table string, o raftstore.ListOptions, opts ...raftstore.ReadOption) (raftstore.ListPage, error) {
	if err := checkTable(table); err != nil {
		return raftstore.ListPage{}, err
	}
	return b.list(ctx, table, o, opts...)
}

func (b *Barrier) list(ctx context.Context, table string, o raftstore.ListOptions, opts ...raftstore.ReadOption) (raftstore.ListPage, error) {
	if b.Sealed() {
		return raftstore.ListPage{}, ErrSealed
	}
	page, err := b.store.List(ctx, table, o, opts...)
	if err != nil || o.KeysOnly {
		return page, err
	}
	for i, kv := range page.Items {
		if page.Items[i].Value, err = b.open(ctx, table, kv.Key, kv.Value); err != nil {
			return raftstore.ListPage{}, err
		}
	}
	return page, nil
}
