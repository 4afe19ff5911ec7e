package kms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// Limits of RotationConfig.
const (
	// MinRotationEncryptions keeps an automatic rotation from running so
	// often that the keyring (one stored record) grows without bound.
	MinRotationEncryptions = 1 << 20
	// MaxRotationEncryptions is well below the 2^32 messages that NIST SP
	// 800-38D allows one AES-GCM key with random 96-bit nonces.
	MaxRotationEncryptions = 1 << 31
	// MinRotationInterval is the shortest age-based rotation period.
	MinRotationInterval = 24 * time.Hour

	// maxLeaseBlock is the most encryptions one node reserves at a time.
	maxLeaseBlock = 1 << 16
)

// RotationConfig says when the barrier's keyring rotates by itself. It is
// stored in the cluster, so every node follows the same one.
type RotationConfig struct {
	// MaxEncryptions is how many values one term encrypts before the keyring
	// rotates.
	MaxEncryptions uint64 `json:"max_encryptions"`
	// Interval is the age at which the active term is replaced; 0 turns
	// rotation by age off.
	Interval time.Duration `json:"interval"`
}

// DefaultRotationConfig rotates after 2^30 encryptions or 30 days.
func DefaultRotationConfig() RotationConfig {
	return RotationConfig{MaxEncryptions: 1 << 30, Interval: 30 * 24 * time.Hour}
}

// Validate checks the fields against their limits.
func (c RotationConfig) Validate() error {
	switch {
	case c.MaxEncryptions < MinRotationEncryptions || c.MaxEncryptions > MaxRotationEncryptions:
		return fmt.Errorf("%w: rotation config: MaxEncryptions must be %d to %d, got %d", ErrInvalid, MinRotationEncryptions, uint64(MaxRotationEncryptions), c.MaxEncryptions)
	case c.Interval != 0 && c.Interval < MinRotationInterval:
		return fmt.Errorf("%w: rotation config: Interval must be 0 (off) or at least %v, got %v", ErrInvalid, MinRotationInterval, c.Interval)
	}
	return nil
}

// KeyringStatus describes the barrier keyring's active term.
type KeyringStatus struct {
	Term      uint32
	Installed time.Time
	// Encryptions is how many encryptions the cluster's nodes have reserved
	// under Term: an upper bound of those made (see package doc).
	Encryptions uint64
	Terms       int // terms in the keyring, the active one included
	Rotation    RotationConfig
}

// usageRecord is stored in the clear in tableCore: the encryptions the
// nodes have reserved under each term.
type usageRecord struct {
	Terms map[uint32]uint64 `json:"terms"`
}

// lease is this node's reserved, unused encryptions under one term.
type lease struct {
	term uint32
	left atomic.Int64
}

func leaseBlock(limit uint64) uint64 { return min(max(limit/16, 1), maxLeaseBlock) }

// takeUse spends one reserved encryption under term, if any is left.
func (b *Barrier) takeUse(term uint32) bool {
	l := b.lease.Load()
	return l != nil && l.term == term && l.left.Add(-1) >= 0
}

func (b *Barrier) activeTerm() (uint32, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.sealed {
		return 0, ErrSealed
	}
	return b.kr.active, nil
}

// reserve refills this node's lease of encryptions under term, in one
// compare-and-swap that adds the block to the cluster's count. When the
// term has used up its count it rotates the keyring instead; the caller
// then tries again under the new term.
func (b *Barrier) reserve(ctx context.Context, term uint32) error {
	b.leaseMu.Lock()
	defer b.leaseMu.Unlock()
	if l := b.lease.Load(); l != nil && l.term == term && l.left.Load() > 0 {
		return nil
	}
	// Count against the term the cluster uses, not a stale one.
	if err := b.ReloadKeyring(ctx); err != nil {
		return err
	}
	if cur, err := b.activeTerm(); err != nil || cur != term {
		return err
	}
	cfg, err := b.RotationConfig(ctx)
	if err != nil {
		return err
	}
	for range 5 {
		raw, u, err := b.readUsage(ctx)
		if err != nil {
			return err
		}
		used := u.Terms[term]
		if used >= cfg.MaxEncryptions {
			_, _, err := b.rotateKeyring(ctx, func(kr *keyring) bool { return kr.active == term })
			return err
		}
		grant := min(leaseBlock(cfg.MaxEncryptions), cfg.MaxEncryptions-used)
		u.Terms[term] = used + grant
		newRaw, err := json.Marshal(u)
		if err != nil {
			return err
		}
		swapped, _, err := b.store.CompareAndSwap(ctx, tableCore, recUsage, raw, newRaw)
		if err != nil {
			return fmt.Errorf("reserve keyring encryptions: %w", err)
		}
		if swapped {
			l := &lease{term: term}
			l.left.Store(int64(grant))
			b.lease.Store(l)
			return nil
		}
	}
	return fmt.Errorf("%w: reserve keyring encryptions: the count kept changing", ErrConflict)
}

// readUsage returns the stored usage record (raw is nil when there is none).
func (b *Barrier) readUsage(ctx context.Context) ([]byte, *usageRecord, error) {
	u := &usageRecord{Terms: map[uint32]uint64{}}
	raw, err := b.store.Get(ctx, tableCore, recUsage)
	if errors.Is(err, raftstore.ErrNotFound) {
		return nil, u, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read keyring usage: %w", err)
	}
	if err := json.Unmarshal(raw, u); err != nil {
		return nil, nil, fmt.Errorf("%w: keyring usage record", ErrCorrupt)
	}
	if u.Terms == nil {
		u.Terms = map[uint32]uint64{}
	}
	return raw, u, nil
}

// RotationConfig returns the cluster's rotation configuration, or the
// default when none was set.
func (b *Barrier) RotationConfig(ctx context.Context) (RotationConfig, error) {
	raw, err := b.store.Get(ctx, tableCore, recRotation)
	if errors.Is(err, raftstore.ErrNotFound) {
		return DefaultRotationConfig(), nil
	}
	if err != nil {
		return RotationConfig{}, fmt.Errorf("read rotation config: %w", err)
	}
	var c RotationConfig
	if err := json.Unmarshal(raw, &c); err != nil || c.MaxEncryptions == 0 {
		return RotationConfig{}, fmt.Errorf("%w: rotation config record", ErrCorrupt)
	}
	return c, nil
}

// SetRotationConfig stores c for every node; it needs this node unsealed.
func (b *Barrier) SetRotationConfig(ctx context.Context, c RotationConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if b.Sealed() {
		return ErrSealed
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := b.store.Put(ctx, tableCore, recRotation, raw); err != nil {
		return fmt.Errorf("store rotation config: %w", err)
	}
	return nil
}

// KeyStatus reloads the keyring and describes its active term.
func (b *Barrier) KeyStatus(ctx context.Context) (KeyringStatus, error) {
	if err := b.ReloadKeyring(ctx); err != nil {
		return KeyringStatus{}, err
	}
	cfg, err := b.RotationConfig(ctx)
	if err != nil {
		return KeyringStatus{}, err
	}
	_, u, err := b.readUsage(ctx)
	if err != nil {
		return KeyringStatus{}, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.sealed {
		return KeyringStatus{}, ErrSealed
	}
	return KeyringStatus{
		Term: b.kr.active, Installed: b.kr.terms[b.kr.active].created,
		Encryptions: u.Terms[b.kr.active], Terms: len(b.kr.terms), Rotation: cfg,
	}, nil
}

// RotateIfDue rotates the keyring when its active term is older than the
// configured interval or has used up its encryptions. Several nodes may
// call it at once: the rotation is a compare-and-swap that re-checks the
// condition on the stored keyring, so the keyring rotates once.
func (b *Barrier) RotateIfDue(ctx context.Context) (uint32, bool, error) {
	cfg, err := b.RotationConfig(ctx)
	if err != nil {
		return 0, false, err
	}
	_, u, err := b.readUsage(ctx)
	if err != nil {
		return 0, false, err
	}
	now := b.clock.Now()
	return b.rotateKeyring(ctx, func(kr *keyring) bool {
		t := kr.terms[kr.active]
		return cfg.Interval > 0 && now.Sub(t.created) >= cfg.Interval || u.Terms[kr.active] >= cfg.MaxEncryptions
	})
}
