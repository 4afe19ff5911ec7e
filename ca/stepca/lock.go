package stepca

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/smallstep/certificates/acme"
	"github.com/smallstep/certificates/api/render"
)

// objectLocks serialises the ACME requests that change one object (an
// order, an authorization with its challenges, an account) on this node;
// requests on different objects, of one account or not, run concurrently.
// Step-ca reads an object, decides, and writes it back with
// compare-and-swap, so two requests on one object at once would fail with
// "changed since last read" (smallstep/certificates #340, #1247, #2121) or
// both act (two certificates for one order). Writes that reach beyond the
// request's object (an order's status check updating its authorizations,
// the order list updating orders) are forward-only compare-and-swaps
// (acmeDB.advance), and a new order's records are all new (newOrderBatch).
// custos serves ACME on the leader only, so this node sees every request
// on an object.
type objectLocks struct {
	mu sync.Mutex
	m  map[string]*objectLock
}

type objectLock struct {
	mu   sync.Mutex
	refs int // holders and waiters; the entry goes when it drops to 0
}

func newObjectLocks() *objectLocks { return &objectLocks{m: map[string]*objectLock{}} }

// lock takes the lock of key and returns its release.
func (l *objectLocks) lock(key string) func() {
	l.mu.Lock()
	e := l.m[key]
	if e == nil {
		e = &objectLock{}
		l.m[key] = e
	}
	e.refs++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
}

// kidKey carries the account ID a POST names in its JWS kid ("" if none).
type kidKey struct{}

// lockObject caps the body of an ACME POST, reads the account URL (kid)
// from its JWS protected header, and runs the request under the lock of
// the object it changes (lockKey). A new-order or finalize request gets a
// batch for the records it creates (writeBatch). A body it cannot read
// passes unlocked: step-ca answers it with the right problem document.
func (s *Server) lockObject(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				render.Error(w, r, acme.NewDetailedError(acme.ErrorMalformedType, "request body is larger than %d bytes", s.cfg.MaxBodyBytes))
				return
			}
			render.Error(w, r, acme.NewDetailedError(acme.ErrorMalformedType, "cannot read request body"))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		kid := jwsKeyID(body)
		account := kid[strings.LastIndex(kid, "/")+1:] // the host before the ID may vary
		ctx := context.WithValue(r.Context(), kidKey{}, account)
		if acmeKind(r) == acme.NewOrderLinkType.String() || strings.HasSuffix(r.URL.Path, "/finalize") {
			ctx = withBatch(ctx)
		}
		if key := lockKey(r, account); key != "" {
			defer s.locks.lock(key)()
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// lockKey names the object an ACME POST changes, from its path
// /acme/<provisioner>/<kind>/<id>[/...] and its account: order/<id> for an
// order and its finalisation; authz/<id> for an authorization and its
// challenges (/challenge/<authz>/<challenge>); account/<id> for an account
// update, a key change and a revocation signed by an account. New orders,
// new accounts, order lists and certificate downloads change no existing
// object under the request's control and take no lock.
func lockKey(r *http.Request, account string) string {
	rest, _ := strings.CutPrefix(r.URL.EscapedPath(), "/acme/")
	parts := strings.Split(rest, "/")
	if len(parts) < 2 {
		return ""
	}
	id := ""
	if len(parts) > 2 {
		id = parts[2]
	}
	switch parts[1] {
	case acme.OrderLinkType.String():
		return "order/" + id
	case acme.AuthzLinkType.String(), acme.ChallengeLinkType.String():
		return "authz/" + id
	case acme.AccountLinkType.String():
		if len(parts) > 3 { // the order list
			return ""
		}
	case acme.KeyChangeLinkType.String(), acme.RevokeCertLinkType.String():
	default:
		return ""
	}
	if account == "" {
		return ""
	}
	return "account/" + account
}

// jwsKeyID returns the kid of a flattened JWS's protected header, or "".
func jwsKeyID(body []byte) string {
	var jws struct {
		Protected string `json:"protected"`
	}
	if json.Unmarshal(body, &jws) != nil {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(jws.Protected, "="))
	if err != nil {
		return ""
	}
	var hdr struct {
		KeyID string `json:"kid"`
	}
	if json.Unmarshal(raw, &hdr) != nil {
		return ""
	}
	return hdr.KeyID
}
