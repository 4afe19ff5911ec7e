package ca

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// DefaultCertRetention is how long an expired certificate stays in the
// inventory before Tidy removes it: Vault's tidy safety_buffer.
const DefaultCertRetention = 72 * time.Hour

// tidyBatch is how many certificates one Tidy transaction removes.
const tidyBatch = 128

// TidyStats counts what one Tidy removed, and the expired certificates it
// had to keep because a current CRL still lists them.
type TidyStats struct {
	Removed int
	Kept    int
}

// Tidy removes from the inventory the certificates that expired more than
// retention ago: the record, its expiry and role index entries, and, for a
// revoked one, its revocation entry, once the issuer's current CRL was made
// after the certificate expired and so no longer lists it (a serial that a
// published CRL still lists stays until a later CRL drops it). It walks
// the expiry index from the oldest entry, so it reads only what it
// removes, and deletes tidyBatch certificates per replicated transaction;
// each record is deleted by compare-and-swap, so a revocation that lands
// meanwhile keeps its certificate for the next run. It acts on the leader
// only. A removed certificate is no longer found by Get, List or OCSP
// (which answers unknown); it had expired, so no relying party accepts it.
func (c *CA) Tidy(ctx context.Context, retention time.Duration) (TidyStats, error) {
	var st TidyStats
	if retention < 0 {
		return st, fmt.Errorf("%w: retention %v must not be negative", ErrInvalid, retention)
	}
	if !c.cfg.IsLeader() {
		return st, nil
	}
	cutoff := c.now().Add(-retention)
	crlMade := map[string]time.Time{} // issuer ID -> thisUpdate of its current CRL; zero: none
	var after []byte
	for {
		var batch []tidyCert
		done := true
		err := c.listAll(ctx, tableIndex, []byte("exp/"), after, true, func(kv raftstore.KV) (bool, error) {
			notAfter, serial, ok := parseExpKey(kv.Key)
			if ok && !notAfter.Before(cutoff) {
				return false, nil
			}
			after = kv.Key
			if ok {
				batch = append(batch, tidyCert{expKey: kv.Key, serial: serial, notAfter: notAfter})
			}
			if len(batch) == tidyBatch {
				done = false
				return false, nil
			}
			return true, nil
		})
		if err != nil {
			return st, fmt.Errorf("ca: tidy: %w", err)
		}
		removed, kept, err := c.tidyBatch(ctx, batch, crlMade)
		st.Removed += removed
		st.Kept += kept
		if err != nil || done {
			return st, err
		}
	}
}

// tidyCert is one expired certificate found in the expiry index.
type tidyCert struct {
	expKey   []byte
	serial   string
	notAfter time.Time
	ops      []raftstore.Op
}

// tidyBatch removes the certificates of batch that may go, in one
// transaction, dropping from it any whose record changed meanwhile.
func (c *CA) tidyBatch(ctx context.Context, batch []tidyCert, crlMade map[string]time.Time) (removed, kept int, err error) {
	var doomed []tidyCert
	for _, tc := range batch {
		// A stale read is enough: the delete compares the record as read,
		// so one revoked since fails the batch and is kept.
		raw, found, err := c.get(ctx, tableCerts, []byte(tc.serial), raftstore.Stale())
		if err != nil {
			return removed, kept, fmt.Errorf("ca: tidy %s: %w", tc.serial, err)
		}
		tc.ops = []raftstore.Op{{Kind: raftstore.OpDelete, Table: tableIndex, Key: tc.expKey}}
		if found {
			rec, err := unmarshalRecord(raw)
			if err != nil {
				return removed, kept, fmt.Errorf("ca: tidy %s: %w", tc.serial, err)
			}
			if !rec.RevokedAt.IsZero() {
				made, ok := crlMade[rec.Issuer]
				if !ok {
					if made, err = c.crlThisUpdate(ctx, rec.Issuer); err != nil {
						return removed, kept, err
					}
					crlMade[rec.Issuer] = made
				}
				if !made.IsZero() && !made.After(rec.NotAfter) {
					kept++
					continue
				}
				tc.ops = append(tc.ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableIndex, Key: revKey(rec.Issuer, tc.serial)})
			}
			if rec.Role != "" {
				tc.ops = append(tc.ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableIndex, Key: roleKey(rec.Role, tc.serial)})
			}
			tc.ops = append(tc.ops, raftstore.Op{Kind: raftstore.OpCAS, Table: tableCerts, Key: []byte(tc.serial), Old: raw, Delete: true})
		}
		doomed = append(doomed, tc)
	}
	for len(doomed) > 0 {
		var ops []raftstore.Op
		owner := []int{} // owner[i]: the certificate of doomed whose op ops[i] is
		for i, tc := range doomed {
			ops = append(ops, tc.ops...)
			for range tc.ops {
				owner = append(owner, i)
			}
		}
		res, err := c.store.Txn(ctx, ops)
		if err != nil {
			return removed, kept, fmt.Errorf("ca: tidy: %w", err)
		}
		if res.Succeeded {
			return removed + len(doomed), kept, nil
		}
		if res.FailedOp < 0 || res.FailedOp >= len(ops) {
			return removed, kept, errors.New("ca: tidy: transaction failed with no failed operation")
		}
		// That record changed (a revocation): keep it for the next run.
		i := owner[res.FailedOp]
		doomed = append(doomed[:i], doomed[i+1:]...)
		kept++
	}
	return removed, kept, nil
}

// crlThisUpdate is when the issuer's current CRL was made; zero when it
// has none, so none lists anything.
func (c *CA) crlThisUpdate(ctx context.Context, issuerID string) (time.Time, error) {
	rec, _, _, err := c.readCRL(ctx, issuerID)
	if err != nil {
		return time.Time{}, fmt.Errorf("ca: tidy: CRL of %s: %w", issuerID, err)
	}
	if rec == nil {
		return time.Time{}, nil
	}
	return rec.ThisUpdate, nil
}

// parseExpKey reads an expiry index key, exp/<unix seconds, 16 hex>/<serial>.
func parseExpKey(k []byte) (time.Time, string, bool) {
	rest, ok := bytes.CutPrefix(k, []byte("exp/"))
	if !ok || len(rest) < 18 || rest[16] != '/' {
		return time.Time{}, "", false
	}
	secs, err := strconv.ParseUint(string(rest[:16]), 16, 64)
	serial := string(rest[17:])
	if _, herr := hex.DecodeString(serial); err != nil || herr != nil || serial == "" || secs > 1<<62 {
		return time.Time{}, "", false
	}
	return time.Unix(int64(secs), 0).UTC(), serial, true
}
