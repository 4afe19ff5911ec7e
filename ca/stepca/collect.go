package stepca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// Step's ACME tables Collect reads (their names are unexported in step).
const (
	bucketOrders     = "acme_orders"
	bucketAuthzs     = "acme_authzs"
	bucketChallenges = "acme_challenges"
	bucketOrderIndex = "acme_account_orders_index"
	bucketNonces     = "nonces"
)

// CollectStats counts what one Collect deleted.
type CollectStats struct {
	Orders         int
	Authorizations int
	Challenges     int
	Nonces         int // left by step's own nonce store, which custos does not use
}

// Collect deletes the ACME orders and authorizations that expired more than
// olderThan ago, their challenges, and challenges no authorization holds
// that were made more than olderThan ago; step-ca never does
// (smallstep/certificates#159, #473). Accounts and certificates are kept:
// revocation looks certificates up by serial. An order leaves its account's
// order index (OrderIndexTable, and step's old index record with
// compare-and-swap) with it. Run it on the leader, now and then (it reads
// the tables whole).
func (s *Server) Collect(ctx context.Context, olderThan time.Duration) (CollectStats, error) {
	var st CollectStats
	cutoff := s.cfg.Clock.Now().Add(-olderThan)
	tOrders, tAuthzs, tChallenges := TablePrefix+bucketOrders, TablePrefix+bucketAuthzs, TablePrefix+bucketChallenges

	byAccount := map[string][]string{} // account ID -> expired order IDs
	err := listAll(ctx, s.cfg.Storage, tOrders, func(kv raftstore.KV) error {
		var o struct {
			AccountID string    `json:"accountID"`
			ExpiresAt time.Time `json:"expiresAt"`
		}
		if json.Unmarshal(kv.Value, &o) == nil && !o.ExpiresAt.IsZero() && o.ExpiresAt.Before(cutoff) {
			byAccount[o.AccountID] = append(byAccount[o.AccountID], string(kv.Key))
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	for acc, ids := range byAccount {
		if err := s.dropOrders(ctx, acc, ids); err != nil {
			return st, err
		}
		st.Orders += len(ids)
	}

	var dead []raftstore.Op
	held := map[string]bool{} // challenge IDs of the authorizations kept
	err = listAll(ctx, s.cfg.Storage, tAuthzs, func(kv raftstore.KV) error {
		var a struct {
			ChallengeIDs []string  `json:"challengeIDs"`
			ExpiresAt    time.Time `json:"expiresAt"`
		}
		if json.Unmarshal(kv.Value, &a) != nil {
			return nil
		}
		expired := !a.ExpiresAt.IsZero() && a.ExpiresAt.Before(cutoff)
		if expired {
			dead = append(dead, raftstore.Op{Kind: raftstore.OpDelete, Table: tAuthzs, Key: kv.Key})
			st.Authorizations++
		}
		for _, id := range a.ChallengeIDs {
			held[id] = held[id] || !expired
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	err = listAll(ctx, s.cfg.Storage, tChallenges, func(kv raftstore.KV) error {
		var c struct {
			CreatedAt time.Time `json:"createdAt"`
		}
		if held[string(kv.Key)] || json.Unmarshal(kv.Value, &c) != nil || !c.CreatedAt.Before(cutoff) {
			return nil
		}
		dead = append(dead, raftstore.Op{Kind: raftstore.OpDelete, Table: tChallenges, Key: kv.Key})
		st.Challenges++
		return nil
	})
	if err != nil {
		return st, err
	}
	err = listAll(ctx, s.cfg.Storage, TablePrefix+bucketNonces, func(kv raftstore.KV) error {
		dead = append(dead, raftstore.Op{Kind: raftstore.OpDelete, Table: TablePrefix + bucketNonces, Key: kv.Key})
		st.Nonces++
		return nil
	})
	if err != nil {
		return st, err
	}
	return st, s.applyChunks(ctx, dead)
}

// dropOrders removes orders from their account's order index and deletes
// them.
func (s *Server) dropOrders(ctx context.Context, accountID string, ids []string) error {
	if err := s.dropLegacyIndex(ctx, accountID, ids); err != nil {
		return err
	}
	ops := make([]raftstore.Op, 0, 2*len(ids))
	for _, id := range ids {
		ops = append(ops,
			raftstore.Op{Kind: raftstore.OpDelete, Table: OrderIndexTable, Key: []byte(accountID + "/" + id)},
			raftstore.Op{Kind: raftstore.OpDelete, Table: TablePrefix + bucketOrders, Key: []byte(id)})
	}
	return s.applyChunks(ctx, ops)
}

// dropLegacyIndex removes ids from step's order index record of the
// account, which custos no longer writes but step's order list may still
// shrink: a compare-and-swap, read again if it changed.
func (s *Server) dropLegacyIndex(ctx context.Context, accountID string, ids []string) error {
	table, key := TablePrefix+bucketOrderIndex, []byte(accountID)
	drop := map[string]bool{}
	for _, id := range ids {
		drop[id] = true
	}
	for range maxUpdateAttempts {
		old, err := s.cfg.Storage.Get(ctx, table, key)
		switch {
		case errors.Is(err, raftstore.ErrNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("stepca: collect: order index: %w", err)
		}
		var idx []string
		if err := json.Unmarshal(old, &idx); err != nil {
			return fmt.Errorf("stepca: collect: order index of %s: %w", accountID, err)
		}
		keep := idx[:0:0]
		for _, id := range idx {
			if !drop[id] {
				keep = append(keep, id)
			}
		}
		if len(keep) == len(idx) {
			return nil
		}
		// Step writes no index for an account without pending orders.
		op := raftstore.Op{Kind: raftstore.OpCAS, Table: table, Key: key, Old: old, Delete: len(keep) == 0}
		if len(keep) > 0 {
			if op.Value, err = json.Marshal(keep); err != nil {
				return err
			}
		}
		res, err := s.cfg.Storage.Txn(ctx, []raftstore.Op{op})
		if err != nil {
			return fmt.Errorf("stepca: collect: order index: %w", err)
		}
		if res.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("stepca: collect: order index of %s kept changing", accountID)
}

// applyChunks applies ops in transactions of at most 512 operations.
func (s *Server) applyChunks(ctx context.Context, ops []raftstore.Op) error {
	for len(ops) > 0 {
		n := min(len(ops), 512)
		if _, err := s.cfg.Storage.Txn(ctx, ops[:n]); err != nil {
			return fmt.Errorf("stepca: collect: %w", err)
		}
		ops = ops[n:]
	}
	return nil
}
