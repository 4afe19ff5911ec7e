package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// storedCRL is the current CRL of one issuer, at tableCRL/issuer ID.
type storedCRL struct {
	Number     uint64    `json:"number"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	DER        []byte    `json:"der"`
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
	return rec.DER, nil
}

func (c *CA) due(rec *storedCRL) bool {
	return !c.now().Before(rec.ThisUpdate.Add(rec.NextUpdate.Sub(rec.ThisUpdate) / 2))
}

// readCRL returns the stored CRL (nil if none) with its raw value, and the
// stale marker (nil if the CRL is current).
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
// the stored one. The write is a compare-and-swap on the stored CRL and on
// the stale marker, so the number strictly increases whoever writes, and a
// revocation that lands while the CRL is made forces another round.
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
		var number uint64 = 1
		if rec != nil {
			number = rec.Number + 1
		}
		der, newRec, err := c.makeCRL(ctx, iss, number)
		if err != nil {
			return nil, err
		}
		newRaw, _ := json.Marshal(newRec)
		res, err := c.store.Txn(ctx, []raftstore.Op{
			{Kind: raftstore.OpCAS, Table: tableCRL, Key: []byte(issuerID), Old: raw, Value: newRaw},
			{Kind: raftstore.OpCAS, Table: tableCRL, Key: dirtyKey(issuerID), Old: stale, Delete: true},
		})
		if err != nil {
			return nil, fmt.Errorf("ca: store CRL: %w", err)
		}
		if res.Succeeded {
			return der, nil
		}
	}
	return nil, fmt.Errorf("%w: the CRL of %s kept changing", ErrConflict, issuerID)
}

// makeCRL signs a CRL of every revoked, unexpired certificate of iss and
// checks its signature.
func (c *CA) makeCRL(ctx context.Context, iss *issuer, number uint64) ([]byte, *storedCRL, error) {
	now := c.now()
	tmpl := &x509.RevocationList{
		Number:     new(big.Int).SetUint64(number),
		ThisUpdate: now,
		NextUpdate: now.Add(c.cfg.CRLValidity),
	}
	err := c.listAll(ctx, tableIndex, revPrefix(iss.id), nil, false, func(kv raftstore.KV) (bool, error) {
		var e revEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return false, fmt.Errorf("ca: revocation entry %s: %w", kv.Key, err)
		}
		if !now.Before(e.NotAfter) {
			return true, nil
		}
		serial, ok := new(big.Int).SetString(string(kv.Key[len(revPrefix(iss.id)):]), 16)
		if !ok {
			return false, fmt.Errorf("ca: revocation entry %s: bad serial", kv.Key)
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: serial, RevocationTime: e.RevokedAt, ReasonCode: e.Reason,
		})
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	signer, err := c.kms.Signer(ctx, iss.key, iss.keyVersion)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, iss.cert, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err == nil {
		err = crl.CheckSignatureFrom(iss.cert)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign CRL: the signature does not verify: %w", err)
	}
	return der, &storedCRL{Number: number, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate, DER: der}, nil
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
