package kms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// FlushUsage adds this node's use counts to the counts in storage, one
// compare-and-swap per key that was used. Counting in memory keeps storage
// off the path of every operation; the price is that a node that stops
// without flushing loses up to one MaintenanceInterval of counts, so stored
// counts are a lower bound.
func (k *KMS) FlushUsage(ctx context.Context) error {
	if err := k.begin(); err != nil {
		return err
	}
	defer k.end()
	type delta struct {
		u              *usage
		uses, decrypts uint64
	}
	byName := map[string]map[usageKey]delta{}
	k.usage.Range(func(key, val any) bool {
		uk, u := key.(usageKey), val.(*usage)
		d := delta{u, u.uses.Swap(0), u.decrypts.Swap(0)}
		if d.uses|d.decrypts != 0 {
			if byName[uk.name] == nil {
				byName[uk.name] = map[usageKey]delta{}
			}
			byName[uk.name][uk] = d
		}
		return true
	})
	var errs []error
	for name, ds := range byName {
		_, err := k.updateMeta(ctx, name, func(m *keyMeta) ([]raftstore.Op, error) {
			for uk, d := range ds {
				if vm := m.version(uk.version); vm != nil && uk.id == m.ID {
					vm.Uses += d.uses
					vm.Decryptions += d.decrypts
				}
			}
			return nil, nil
		})
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			for _, d := range ds { // keep the counts for the next flush
				d.u.uses.Add(d.uses)
				d.u.decrypts.Add(d.decrypts)
			}
			errs = append(errs, fmt.Errorf("flush usage of key %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// rotationDue reports whether m's latest version is old enough or used
// enough to rotate.
func rotationDue(m *keyMeta, now time.Time) bool {
	latest := m.version(m.Latest)
	if !m.DeleteAfter.IsZero() || latest == nil {
		return false
	}
	if m.AutoRotatePeriod > 0 && now.Sub(latest.Created) >= m.AutoRotatePeriod {
		return true
	}
	limit := m.AutoRotateUses
	if m.Type == TypeAES256GCM96 && (limit == 0 || limit > gcm96AutoRotate) {
		limit = gcm96AutoRotate
	}
	return limit > 0 && latest.Uses >= limit
}

// Maintain does one round of upkeep: it flushes use counts, rotates the
// keys that are due (by age or by use) and deletes the keys whose deletion
// date has passed. Several nodes may run it at once: every change is a
// compare-and-swap that re-checks its condition.
func (k *KMS) Maintain(ctx context.Context) error {
	errs := []error{k.FlushUsage(ctx)}
	names, err := k.ListKeys(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, name := range names {
		errs = append(errs, k.maintainKey(ctx, name))
	}
	return errors.Join(errs...)
}

func (k *KMS) maintainKey(ctx context.Context, name string) error {
	m, purged, err := k.purgeIfDue(ctx, name)
	if err != nil || purged || m == nil {
		return err
	}
	now := k.clock.Now()
	if rotationDue(m, now) {
		_, err := k.rotate(ctx, name, func(m *keyMeta) bool { return rotationDue(m, now) })
		return err
	}
	return nil
}

// purgeIfDue deletes the key if its deletion date has passed; otherwise it
// returns its metadata (nil if it no longer exists).
func (k *KMS) purgeIfDue(ctx context.Context, name string) (*keyMeta, bool, error) {
	if err := k.begin(); err != nil {
		return nil, false, err
	}
	defer k.end()
	m, raw, err := k.readMeta(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if m.DeleteAfter.IsZero() || k.clock.Now().Before(m.DeleteAfter) {
		return m, false, nil
	}
	return nil, true, k.purge(ctx, m, raw)
}

// Run calls Maintain every MaintenanceInterval until ctx ends, skipping
// rounds while sealed. Errors go to report, which may be nil.
func (k *KMS) Run(ctx context.Context, report func(error)) {
	t := time.NewTicker(k.cfg.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if k.b.Sealed() {
			continue
		}
		if err := k.Maintain(ctx); err != nil && report != nil {
			report(err)
		}
	}
}
