package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// storedCRL is the head of the current CRL of one issuer, at
// tableCRL/issuer ID. A small CRL is inline (DER); a large one is in
// Chunks values of at most crlChunkSize bytes at chunkKey(issuer, Number,
// Gen, i), written before the head that names them, so that no CRL is
// bounded by the store's value size.
type storedCRL struct {
	Number     uint64    `json:"number"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	DER        []byte    `json:"der,omitempty"`
	Gen        string    `json:"gen,omitempty"`
	Chunks     int       `json:"chunks,omitempty"`
	Size       int       `json:"size,omitempty"`
	SHA256     []byte    `json:"sha256,omitempty"`
}

// dirtyKey marks an issuer's CRL stale: Revoke writes a new nonce there,
// and a CRL is stored only if the nonce it started from is still there.
func dirtyKey(issuerID string) []byte { return []byte("dirty/" + issuerID) }

// CRL returns the current CRL of the active intermediate, in DER.
func (c *CA) CRL(ctx context.Context) ([]byte, error) {
	set, err := c.issuers(ctx)
	if err != nil {
		return nil, err
	}
	return c.crl(ctx, set.active.id)
}

// IssuerCRL returns the current CRL of one intermediate, active or
// retired, by its ID.
func (c *CA) IssuerCRL(ctx context.Context, issuerID string) ([]byte, error) {
	if !validIssuerID(issuerID) {
		return nil, fmt.Errorf("%w: issuer %q", ErrNotFound, issuerID)
	}
	return c.crl(ctx, issuerID)
}

// crl serves the stored CRL. The leader first remakes it when it is
// missing, stale or past half its validity; followers serve what is stored.
func (c *CA) crl(ctx context.Context, issuerID string) ([]byte, error) {
	for range 3 {
		rec, _, stale, err := c.readCRL(ctx, issuerID)
		if err != nil {
			return nil, err
		}
		if c.cfg.IsLeader() && (rec == nil || stale != nil || c.due(rec)) {
			der, err := c.refreshCRL(ctx, issuerID)
			if err == nil {
				return der, nil
			}
			if rec == nil {
				return nil, err
			}
			c.log.Warn("ca: CRL not remade; serving the stored one", "issuer", issuerID, "error", err)
		}
		if rec == nil {
			return nil, fmt.Errorf("%w: no CRL yet for issuer %s", ErrNotFound, issuerID)
		}
		der, err := c.crlDER(ctx, issuerID, rec)
		if errors.Is(err, errCRLMoved) {
			continue // replaced while it was read: read the new head
		}
		return der, err
	}
	return nil, fmt.Errorf("%w: the CRL of %s kept changing while it was read", ErrConflict, issuerID)
}

func (c *CA) due(rec *storedCRL) bool {
	return !c.now().Before(rec.ThisUpdate.Add(rec.NextUpdate.Sub(rec.ThisUpdate) / 2))
}

// readCRL returns the stored CRL head (nil if none) with its raw value,
// and the stale marker (nil if the CRL is current).
func (c *CA) readCRL(ctx context.Context, issuerID string) (rec *storedCRL, raw, stale []byte, err error) {
	raw, found, err := c.get(ctx, tableCRL, []byte(issuerID))
	if err != nil {
		return nil, nil, nil, err
	}
	if found {
		rec = new(storedCRL)
		if err := json.Unmarshal(raw, rec); err != nil {
			return nil, nil, nil, fmt.Errorf("ca: stored CRL of %s: %w", issuerID, err)
		}
	}
	stale, _, err = c.get(ctx, tableCRL, dirtyKey(issuerID))
	if err != nil {
		return nil, nil, nil, err
	}
	return rec, raw, stale, nil
}

// refreshCRL makes and stores a new CRL for an issuer, numbered one above
// the stored one, unless a CRL made while this call waited for another
// one already covers every revocation. The head is written by
// compare-and-swap, so the number strictly increases whoever writes. A
// revocation that lands while the CRL is made leaves its issuer marked
// stale: the new CRL is stored anyway and the next one includes it.
func (c *CA) refreshCRL(ctx context.Context, issuerID string) ([]byte, error) {
	c.crlMu.Lock()
	defer c.crlMu.Unlock()
	set, err := c.issuers(ctx)
	if err != nil {
		return nil, err
	}
	iss := set.byID(issuerID)
	if iss == nil {
		c.setCache(nil)
		if set, err = c.issuers(ctx); err != nil {
			return nil, err
		}
		if iss = set.byID(issuerID); iss == nil {
			return nil, fmt.Errorf("%w: issuer %q", ErrNotFound, issuerID)
		}
	}
	for range 8 {
		rec, raw, stale, err := c.readCRL(ctx, issuerID)
		if err != nil {
			return nil, err
		}
		if rec != nil && stale == nil && !c.due(rec) {
			der, err := c.crlDER(ctx, issuerID, rec)
			if !errors.Is(err, errCRLMoved) {
				return der, err
			}
			continue
		}
		var number uint64 = 1
		if rec != nil {
			number = rec.Number + 1
		}
		der, newRec, err := c.makeCRL(ctx, iss, number)
		if err != nil {
			return nil, err
		}
		if err := c.writeChunks(ctx, issuerID, newRec, der); err != nil {
			return nil, err
		}
		newRaw, _ := json.Marshal(newRec)
		head := raftstore.Op{Kind: raftstore.OpCAS, Table: tableCRL, Key: []byte(issuerID), Old: raw, Value: newRaw}
		res, err := c.store.Txn(ctx, []raftstore.Op{
			head, {Kind: raftstore.OpCAS, Table: tableCRL, Key: dirtyKey(issuerID), Old: stale, Delete: true},
		})
		if err == nil && !res.Succeeded && res.FailedOp == 1 { // revoked meanwhile: store this one, stay stale
			res, err = c.store.Txn(ctx, []raftstore.Op{head})
		}
		if err != nil {
			return nil, fmt.Errorf("ca: store CRL: %w", err)
		}
		if !res.Succeeded {
			c.dropChunks(ctx, issuerID, newRec)
			continue
		}
		c.keepCRL(issuerID, newRec, der)
		c.pruneChunks(ctx, issuerID, number)
		return der, nil
	}
	return nil, fmt.Errorf("%w: the CRL of %s kept changing", ErrConflict, issuerID)
}

// makeCRL signs a CRL of every revoked, unexpired certificate of iss and
// checks its signature. The entries are read a page at a time and encoded
// as they come.
func (c *CA) makeCRL(ctx context.Context, iss *issuer, number uint64) ([]byte, *storedCRL, error) {
	now := c.now()
	t := crlTemplate{issuer: iss.cert, number: number, thisUpdate: now, nextUpdate: now.Add(c.cfg.CRLValidity)}
	sig, err := signatureFor(iss.cert.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	entries := newCRLEntries()
	prefix := revPrefix(iss.id)
	err = c.scan(ctx, tableIndex, prefix, func(kv raftstore.KV) error {
		var e revEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return fmt.Errorf("ca: revocation entry %s: %w", kv.Key, err)
		}
		if !now.Before(e.NotAfter) {
			return nil
		}
		return entries.add(kv.Key[len(prefix):], e.RevokedAt, e.Reason)
	})
	if err != nil {
		return nil, nil, err
	}
	tbs, err := t.tbs(sig, entries)
	entries = nil
	if err != nil {
		return nil, nil, err
	}
	signer, err := c.kms.Signer(ctx, iss.key, iss.keyVersion)
	if err != nil {
		return nil, nil, err
	}
	der, err := signCRL(tbs, sig, iss.cert, signer)
	if err != nil {
		return nil, nil, err
	}
	return der, &storedCRL{Number: number, ThisUpdate: t.thisUpdate, NextUpdate: t.nextUpdate}, nil
}

// scan calls fn for every entry of table under prefix, in key order. The
// first page is read linearizably and the rest from this node's state,
// which is then at least as new: one quorum check per scan, not per page.
func (c *CA) scan(ctx context.Context, table string, prefix []byte, fn func(raftstore.KV) error) error {
	o := raftstore.ListOptions{Prefix: prefix, Limit: raftstore.DefaultListLimit}
	var opts []raftstore.ReadOption
	for {
		page, err := c.store.List(ctx, table, o, opts...)
		if err != nil {
			return err
		}
		for _, kv := range page.Items {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if page.Next == nil {
			return nil
		}
		o.After, opts = page.Next, []raftstore.ReadOption{raftstore.Stale()}
	}
}

// Maintain does the CA's periodic work; the node calls it every minute or
// so on every node, and it acts on the leader only: it remakes the CRLs
// that are stale or past half their validity, and forgets retired
// intermediates that have expired (everything they signed has expired too).
func (c *CA) Maintain(ctx context.Context) error {
	if !c.cfg.IsLeader() {
		return nil
	}
	c.setCache(nil) // see rotations made elsewhere at once
	set, err := c.issuers(ctx)
	if errors.Is(err, ErrNotInitialized) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	now := c.now()
	for _, iss := range set.all {
		if iss.retired && !now.Before(iss.cert.NotAfter) {
			continue
		}
		rec, _, stale, err := c.readCRL(ctx, iss.id)
		if err == nil && (rec == nil || stale != nil || c.due(rec)) {
			_, err = c.refreshCRL(ctx, iss.id)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("ca: CRL of %s: %w", iss.id, err))
		}
	}
	if err := c.pruneIssuers(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pruneIssuers drops expired retired intermediates from the state.
func (c *CA) pruneIssuers(ctx context.Context) error {
	_, err := c.updateState(ctx, func(st *state) error {
		now := c.now()
		kept := st.Issuers[:0:0]
		for _, rec := range st.Issuers {
			cert, err := x509.ParseCertificate(rec.Chain[0])
			if err != nil || rec.Retired.IsZero() || now.Before(cert.NotAfter) {
				kept = append(kept, rec)
			}
		}
		if len(kept) == len(st.Issuers) {
			return errNoChange
		}
		st.Issuers = kept
		return nil
	})
	return err
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
