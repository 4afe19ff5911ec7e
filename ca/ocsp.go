package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/custos-pki/custos/raftstore"
	"golang.org/x/crypto/ocsp"
)

// OCSP answers a DER OCSP request (RFC 6960) with a DER response signed by
// the intermediate that issued the certificate: good, revoked, or unknown
// for a serial this CA never recorded. Requests that do not parse get the
// malformedRequest response and requests for an issuer that is not this
// CA's (or before Init) get unauthorized, both with a nil error. A non-nil
// error comes with the internalError response (or tryLater while sealed or
// cut off from the leader), to be sent as is.
//
// Responses are cached on each node and served again until half their
// validity has passed, unless a revocation has happened since: see the
// package documentation for what that costs and how stale an answer can be.
func (c *CA) OCSP(ctx context.Context, reqDER []byte) ([]byte, error) {
	req, err := ocsp.ParseRequest(reqDER)
	if err != nil {
		return ocsp.MalformedRequestErrorResponse, nil
	}
	set, err := c.issuers(ctx)
	if errors.Is(err, ErrNotInitialized) {
		return ocsp.UnauthorizedErrorResponse, nil
	}
	if err != nil {
		return ocspFailure(err), err
	}
	iss := set.matchOCSP(req)
	if iss == nil {
		return ocsp.UnauthorizedErrorResponse, nil
	}
	if req.SerialNumber == nil || req.SerialNumber.Sign() <= 0 || req.SerialNumber.BitLen() > 20*8 {
		return ocsp.MalformedRequestErrorResponse, nil
	}
	resp, err := c.ocspResponse(ctx, iss, req.HashAlgorithm, req.SerialNumber)
	if err != nil {
		return ocspFailure(err), err
	}
	return resp, nil
}

// ocspFailure is the OCSP error response for err: tryLater when the node
// cannot answer now (sealed, no leader), internalError otherwise.
func ocspFailure(err error) []byte {
	if isUnavailable(err) {
		return ocsp.TryLaterErrorResponse
	}
	return ocsp.InternalErrorErrorResponse
}

// ocspKey names one cached response: the CertID of the request.
type ocspKey struct {
	issuer string
	hash   crypto.Hash
	serial string
}

// certState is what an OCSP response says about a certificate.
type certState struct {
	status    int // ocsp.Good, ocsp.Revoked or ocsp.Unknown
	revokedAt time.Time
	reason    int
}

// ocspEntry is one cached response. mu is held while it is made, so a
// burst of requests for one certificate costs one signature.
type ocspEntry struct {
	mu         sync.Mutex
	resp       []byte
	keyVersion int
	thisUpdate time.Time
	refreshAt  time.Time // half the validity
	epoch      string    // the issuer's revocation epoch it was checked at
	state      certState
}

// ocspCache holds a node's responses, at most Config.OCSPCacheSize.
type ocspCache struct {
	mu      sync.Mutex
	entries map[ocspKey]*ocspEntry

	syncMu   sync.Mutex
	syncedAt time.Time // by the CA's clock; zero: never
}

// entry returns the cache entry for k, making room for it if needed.
func (o *ocspCache) entry(k ocspKey, max int) *ocspEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.entries[k]; e != nil {
		return e
	}
	if o.entries == nil {
		o.entries = make(map[ocspKey]*ocspEntry)
	}
	for old := range o.entries { // full: drop an arbitrary entry
		if len(o.entries) < max {
			break
		}
		delete(o.entries, old)
	}
	e := new(ocspEntry)
	o.entries[k] = e
	return e
}

func (o *ocspCache) size() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}

// epochKey holds a random value that every revocation of the issuer's
// certificates replaces, in the transaction that revokes.
func epochKey(issuerID string) []byte { return []byte("epoch/" + issuerID) }

// ocspResponse returns the cached response for the certificate, or makes
// one. Only stale reads of this node's state are made here, after syncOCSP
// has made sure that state is recent enough.
func (c *CA) ocspResponse(ctx context.Context, iss *issuer, h crypto.Hash, serial *big.Int) ([]byte, error) {
	if err := c.syncOCSP(ctx, iss.id); err != nil {
		return nil, err
	}
	// The epoch is read before the certificate: a revocation between the
	// two reads leaves an entry that the next request checks again.
	epoch, _, err := c.get(ctx, tableCRL, epochKey(iss.id), raftstore.Stale())
	if err != nil {
		return nil, err
	}
	k := ocspKey{issuer: iss.id, hash: h, serial: serialString(serial)}
	e := c.ocsp.entry(k, c.cfg.OCSPCacheSize)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.now()
	fresh := e.resp != nil && e.keyVersion == iss.keyVersion && now.Before(e.refreshAt) && !now.Before(e.thisUpdate)
	if fresh && e.epoch == string(epoch) {
		return e.resp, nil
	}
	st, err := c.certState(ctx, iss, k.serial)
	if err != nil {
		return nil, err
	}
	if fresh && st == e.state { // a revocation of another certificate
		e.epoch = string(epoch)
		return e.resp, nil
	}
	tmpl := ocsp.Response{
		Status: st.status, SerialNumber: serial, IssuerHash: h,
		ThisUpdate: now, NextUpdate: now.Add(c.cfg.OCSPValidity),
		RevokedAt: st.revokedAt, RevocationReason: st.reason,
	}
	signer, err := c.kms.Signer(ctx, iss.key, iss.keyVersion)
	if err != nil {
		return nil, err
	}
	resp, err := ocsp.CreateResponse(iss.cert, iss.cert, tmpl, signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign OCSP response: %w", err)
	}
	if _, err := ocsp.ParseResponse(resp, iss.cert); err != nil {
		return nil, fmt.Errorf("ca: sign OCSP response: the signature does not verify: %w", err)
	}
	e.resp, e.keyVersion, e.thisUpdate, e.refreshAt = resp, iss.keyVersion, now, now.Add(c.cfg.OCSPValidity/2)
	e.epoch, e.state = string(epoch), st
	return resp, nil
}

// certState reads a certificate's status from this node's state.
func (c *CA) certState(ctx context.Context, iss *issuer, serial string) (certState, error) {
	cert, found, err := c.getCert(ctx, serial, raftstore.Stale())
	if err != nil {
		return certState{}, err
	}
	st := certState{status: ocsp.Unknown}
	if found && cert.Issuer == iss.id {
		st.status = ocsp.Good
		if cert.Status == StatusRevoked {
			st = certState{status: ocsp.Revoked, revokedAt: cert.RevokedAt, reason: cert.RevocationReason}
		}
	}
	return st, nil
}

// syncOCSP bounds how far behind the cluster the stale reads of the OCSP
// responder may be: once per CacheTTL (by the CA's clock) it makes one
// linearizable read, after which this node's state holds every write
// acknowledged before that read began. A node that cannot reach the
// leader fails here, and its responder answers tryLater.
func (c *CA) syncOCSP(ctx context.Context, issuerID string) error {
	o := &c.ocsp
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	now := c.clock.Now()
	if !o.syncedAt.IsZero() && !now.Before(o.syncedAt) && now.Sub(o.syncedAt) < c.cfg.CacheTTL {
		return nil
	}
	if _, _, err := c.get(ctx, tableCRL, epochKey(issuerID)); err != nil {
		return err
	}
	o.syncedAt = now
	return nil
}

// matchOCSP finds the intermediate named by the request's issuer hashes.
func (s *issuers) matchOCSP(req *ocsp.Request) *issuer {
	if !req.HashAlgorithm.Available() {
		return nil
	}
	for _, iss := range s.all {
		var spki struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(iss.cert.RawSubjectPublicKeyInfo, &spki); err != nil {
			continue
		}
		h := req.HashAlgorithm.New()
		h.Write(iss.cert.RawSubject)
		name := h.Sum(nil)
		h.Reset()
		h.Write(spki.PublicKey.RightAlign())
		if bytes.Equal(name, req.IssuerNameHash) && bytes.Equal(h.Sum(nil), req.IssuerKeyHash) {
			return iss
		}
	}
	return nil
}
