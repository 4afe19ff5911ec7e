package stepca

import (
	"bytes"
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

// accountLocks serialises the ACME requests of one account on this node.
// Step-ca writes an account's order index, orders and authorizations with
// compare-and-swap after reading them, so two requests of one account in
// flight at once fail with "changed since last read" (smallstep/certificates
// #340, #1247, #2121); one at a time, they cannot. custos serves ACME on the
// leader only, so this node sees all of an account's requests.
type accountLocks struct {
	mu sync.Mutex
	m  map[string]*accountLock
}

type accountLock struct {
	mu   sync.Mutex
	refs int // holders and waiters; the entry goes when it drops to 0
}

func newAccountLocks() *accountLocks { return &accountLocks{m: map[string]*accountLock{}} }

// lock takes the lock of account key and returns its release.
func (l *accountLocks) lock(key string) func() {
	l.mu.Lock()
	e := l.m[key]
	if e == nil {
		e = &accountLock{}
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

// serialise caps the body of an ACME POST, reads the account URL (kid) from
// its JWS protected header, and runs the request under that account's lock.
// A body it cannot read passes unlocked: step-ca answers it with the right
// problem document.
func (s *Server) serialise(next http.Handler) http.Handler {
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
		if kid := jwsKeyID(body); kid != "" {
			// The account ID ends the kid; the host before it may vary.
			defer s.locks.lock(kid[strings.LastIndex(kid, "/")+1:])()
		}
		next.ServeHTTP(w, r)
	})
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
