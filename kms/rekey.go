package kms

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/custos-pki/custos/kms/internal/shamir"
	"github.com/custos-pki/custos/raftstore"
)

// Rekey replaces the unseal key (new shares, or a new key file) and keeps
// the root key. It needs this node unsealed and proof of the current unseal
// key. The old shares stop working on every node at once.
func (b *Barrier) Rekey(ctx context.Context, cur UnsealKey, next SealConfig) (*InitResult, error) {
	if err := next.Validate(); err != nil {
		return nil, err
	}
	if b.Sealed() {
		return nil, ErrSealed
	}
	rec, raw, oldKey, root, err := b.proveUnsealKey(ctx, cur)
	if err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	clear(oldKey)
	defer clear(root)
	nrec := *rec
	var newKey []byte
	if next.KeyFile != "" {
		nrec.Type, nrec.Shares, nrec.Threshold = SealKeyFile, 0, 0
		if newKey, err = readKeyFile(next.KeyFile); err != nil {
			return nil, fmt.Errorf("rekey: %w", err)
		}
	} else {
		nrec.Type, nrec.Shares, nrec.Threshold = SealShamir, next.Shares, next.Threshold
		newKey = randomKey()
	}
	defer clear(newKey)
	if nrec.RootKey, err = wrap(newKey, root, adRoot(rec.RootGen)); err != nil {
		return nil, err
	}
	newRaw, _ := json.Marshal(&nrec)
	swapped, _, err := b.store.CompareAndSwap(ctx, tableCore, recSeal, raw, newRaw)
	if err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	if !swapped {
		return nil, fmt.Errorf("%w: rekey: the seal changed meanwhile", ErrConflict)
	}
	out := &InitResult{}
	if nrec.Type == SealShamir {
		if out.Shares, err = shamir.Split(newKey, next.Shares, next.Threshold); err != nil {
			return nil, fmt.Errorf("rekey: split: %w", err)
		}
	}
	return out, nil
}

// RotateRootKey replaces the root key, keeping the unseal key and the
// keyring's terms: the keyring is re-encrypted under the new root key. It
// needs this node unsealed and proof of the unseal key. Other unsealed nodes
// follow on their next keyring reload, through an upgrade record (the new
// root key encrypted under the previous one); a node more than one rotation
// behind seals itself and must be unsealed again.
func (b *Barrier) RotateRootKey(ctx context.Context, cur UnsealKey) error {
	if b.Sealed() {
		return ErrSealed
	}
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	rec, raw, key, root, err := b.proveUnsealKey(ctx, cur)
	if err != nil {
		return fmt.Errorf("rotate root key: %w", err)
	}
	defer clear(key)
	defer clear(root)
	newRoot := randomKey()
	defer clear(newRoot)
	newGen := rec.RootGen + 1
	ops, kr, err := b.keyringOps(ctx, root, rec.RootGen, newRoot, newGen)
	if err != nil {
		return fmt.Errorf("rotate root key: %w", err)
	}
	nrec := *rec
	nrec.RootGen = newGen
	if nrec.RootKey, err = wrap(key, newRoot, adRoot(newGen)); err != nil {
		kr.zero()
		return err
	}
	sealRaw, _ := json.Marshal(&nrec)
	up, err := wrap(root, newRoot, adUpgrade(newGen))
	if err != nil {
		kr.zero()
		return err
	}
	upRaw, _ := json.Marshal(upgradeRecord{RootGen: newGen, RootKey: up})
	ops = append(ops,
		raftstore.Op{Kind: raftstore.OpCAS, Table: tableCore, Key: recSeal, Old: raw, Value: sealRaw},
		raftstore.Op{Kind: raftstore.OpPut, Table: tableCore, Key: recRootUpgrade, Value: upRaw},
	)
	res, err := b.store.Txn(ctx, ops)
	if err != nil {
		kr.zero()
		return fmt.Errorf("rotate root key: %w", err)
	}
	if !res.Succeeded {
		kr.zero()
		return fmt.Errorf("%w: rotate root key: the seal or keyring changed meanwhile", ErrConflict)
	}
	return b.install(kr, newRoot, newGen)
}

// proveUnsealKey recovers the unseal key from cur and opens the root key
// with it. It returns the seal record, its stored bytes, the unseal key and
// the root key.
func (b *Barrier) proveUnsealKey(ctx context.Context, cur UnsealKey) (*sealRecord, []byte, []byte, []byte, error) {
	rec, raw, err := b.readSeal(ctx)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var key []byte
	switch rec.Type {
	case SealKeyFile:
		if key, err = readKeyFile(cur.KeyFile); err != nil {
			return nil, nil, nil, nil, err
		}
	default:
		if len(cur.Shares) < rec.Threshold {
			return nil, nil, nil, nil, fmt.Errorf("%w: need %d unseal key shares, got %d", ErrInvalid, rec.Threshold, len(cur.Shares))
		}
		if key, err = shamir.Combine(cur.Shares); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("%w: combine shares: %v", ErrInvalid, err)
		}
	}
	root, err := unwrap(key, rec.RootKey, adRoot(rec.RootGen))
	if err != nil {
		clear(key)
		return nil, nil, nil, nil, ErrBadUnsealKey
	}
	return rec, raw, key, root, nil
}
