package workload

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// svid is one X.509-SVID with its key, shared by the callers of an entry.
type svid struct {
	entry    Entry
	chain    []*x509.Certificate // leaf, then intermediates (no root)
	key      []byte              // PKCS #8 DER; memory only
	serial   string
	rotateAt time.Time
}

func (v *svid) expired(now time.Time) bool { return !now.Before(v.chain[0].NotAfter) }

// svidSlot serialises issuance for one entry, so that callers sharing an
// entry share one certificate.
type svidSlot struct {
	mu  sync.Mutex
	cur *svid
}

type svidCache struct {
	mu    sync.Mutex
	slots map[string]*svidSlot // entry ID -> slot
}

func (c *svidCache) slot(id string) *svidSlot {
	c.mu.Lock()
	defer c.mu.Unlock()
	sl := c.slots[id]
	if sl == nil {
		sl = &svidSlot{}
		c.slots[id] = sl
	}
	return sl
}

// prune drops the SVIDs of entries that are gone.
func (c *svidCache) prune(live []Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.slots {
		if !slices.ContainsFunc(live, func(e Entry) bool { return e.ID == id }) {
			delete(c.slots, id)
		}
	}
}

func (c *svidCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.slots)
}

// rotateAt is when an SVID issued at issued is replaced: two thirds into
// its lifetime, counted from when it was issued (NotBefore is backdated
// for clock skew, and counting from it would rotate short-lived SVIDs at
// once).
func rotateAt(issued time.Time, cert *x509.Certificate) time.Time {
	from := issued
	if cert.NotBefore.After(from) {
		from = cert.NotBefore
	}
	life := cert.NotAfter.Sub(from)
	if life < 0 {
		life = 0
	}
	return from.Add(life * 2 / 3)
}

// svidFor returns the current SVID of an entry, issuing one when there is
// none or the current one is due. If issuance fails, a current SVID that
// has not expired is served instead.
func (s *Server) svidFor(ctx context.Context, e Entry) (*svid, error) {
	sl := s.svids.slot(e.ID)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	now := s.now()
	if sl.cur != nil && now.Before(sl.cur.rotateAt) {
		return sl.cur, nil
	}
	v, err := s.issue(ctx, e)
	if err != nil {
		if sl.cur != nil && !sl.cur.expired(now) {
			s.log.Warn("workload SVID rotation failed; serving the current one", "spiffe_id", e.SPIFFEID, "error", err)
			return sl.cur, nil
		}
		return nil, err
	}
	sl.cur = v
	return v, nil
}

// issue has the CA issue an SVID for an entry under its role.
func (s *Server) issue(ctx context.Context, e Entry) (*svid, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	issued := s.now()
	is, err := s.cfg.Issuer.Issue(ctx, e.Role, ca.IssueRequest{URIs: []string{e.SPIFFEID}, KeyType: s.cfg.KeyType})
	if err != nil {
		return nil, fmt.Errorf("issue %s under role %q: %w", e.SPIFFEID, e.Role, err)
	}
	block, _ := pem.Decode(is.PrivateKey)
	clear(is.PrivateKey)
	if block == nil {
		return nil, errors.New("workload: the CA returned no private key")
	}
	chain := []*x509.Certificate{is.Certificate}
	for _, c := range is.Chain {
		if !isSelfSigned(c) {
			chain = append(chain, c)
		}
	}
	s.log.Info("workload SVID issued", "spiffe_id", e.SPIFFEID, "entry", e.ID, "role", e.Role, "serial", is.Serial, "not_after", is.Certificate.NotAfter)
	return &svid{entry: e, chain: chain, key: block.Bytes, serial: is.Serial, rotateAt: rotateAt(issued, is.Certificate)}, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil && string(c.RawIssuer) == string(c.RawSubject)
}

// update is what a caller is entitled to now.
type update struct {
	svids []*svid // ordered by SPIFFE ID, then entry ID
	roots []*x509.Certificate
	tds   []spiffeid.TrustDomain // of the svids, ordered, without repeats
	next  time.Time              // the earliest rotation
}

// fingerprint changes when anything sent to the caller would change.
func (u *update) fingerprint() [32]byte {
	h := sha256.New()
	for _, v := range u.svids {
		h.Write([]byte(v.entry.ID + "/" + v.serial + "\n"))
	}
	for _, r := range u.roots {
		h.Write(r.Raw)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// rootsDER is the roots, concatenated DER, as the Workload API sends them.
func (u *update) rootsDER() []byte {
	var b []byte
	for _, r := range u.roots {
		b = append(b, r.Raw...)
	}
	return b
}

// currentUpdate issues or reuses the SVIDs of every entry c matches. An
// entry its role no longer allows is left out (and logged); if none is
// left, the caller is refused.
func (s *Server) currentUpdate(ctx context.Context, c *caller) (*update, error) {
	es, err := s.matching(ctx, c)
	if err != nil {
		return nil, err
	}
	u := &update{}
	var firstErr error
	for _, e := range es {
		v, err := s.svidFor(ctx, e)
		if err != nil {
			s.log.Warn("workload SVID not issued", "spiffe_id", e.SPIFFEID, "role", e.Role, "error", err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		u.svids = append(u.svids, v)
		if u.next.IsZero() || v.rotateAt.Before(u.next) {
			u.next = v.rotateAt
		}
		td := spiffeid.RequireFromString(e.SPIFFEID).TrustDomain()
		if !slices.Contains(u.tds, td) {
			u.tds = append(u.tds, td)
		}
	}
	if len(u.svids) == 0 {
		return nil, toStatus(firstErr)
	}
	slices.SortFunc(u.svids, func(a, b *svid) int {
		if a.entry.SPIFFEID != b.entry.SPIFFEID {
			return cmpString(a.entry.SPIFFEID, b.entry.SPIFFEID)
		}
		return cmpString(a.entry.ID, b.entry.ID)
	})
	slices.SortFunc(u.tds, func(a, b spiffeid.TrustDomain) int { return cmpString(a.Name(), b.Name()) })
	if u.roots, err = s.cfg.Issuer.Roots(ctx); err != nil {
		return nil, toStatus(err)
	}
	return u, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// watch calls step now and whenever its result may have changed (at the
// next rotation, and every Resync), and sends what step produced when its
// fingerprint changed. The first failure ends the stream; a later one is
// logged and retried, except a refusal (PermissionDenied), which ends it.
func (s *Server) watch(ctx context.Context, step func(context.Context) (fp [32]byte, next time.Time, send func() error, err error)) error {
	var last [32]byte
	sent := false
	for {
		fp, next, send, err := step(ctx)
		switch {
		case err != nil && (!sent || status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Canceled):
			return err
		case err != nil:
			s.log.Warn("workload stream update failed; retrying", "error", err)
		case !sent || fp != last:
			if err := send(); err != nil {
				return err
			}
			last, sent = fp, true
		}
		wait := s.cfg.Resync
		if !next.IsZero() {
			if d := next.Sub(s.now()); d < wait {
				wait = max(d, 50*time.Millisecond)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.done:
			t.Stop()
			return status.Error(codes.Unavailable, "the node is sealing")
		case <-t.C:
		}
	}
}
