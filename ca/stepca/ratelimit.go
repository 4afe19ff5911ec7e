package stepca

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/internal/clientip"
	"github.com/custos-pki/custos/internal/httpstatus"
	"github.com/custos-pki/custos/internal/ratelimit"
	"github.com/smallstep/certificates/acme"
	"github.com/smallstep/certificates/api/render"
)

// RateLimits are the ACME rate limits, RFC 8555 rateLimited (HTTP 429)
// with Retry-After past them. A zero Limit is off.
//
// They are kept in memory on the node that serves ACME: custos serves ACME
// on the leader only, so they hold cluster-wide, and a new leader starts
// with full buckets. The client address is the TCP peer, or the address a
// follower's proxy names (see package clientip); IPv6 counts by /64.
//
// What counts:
//   - RequestsPerIP: every ACME request (directory and new-nonce too).
//   - NewAccountPerIP: accounts created (an existing key's lookup is free).
//   - NewOrderPerAccount, NewOrderPerIP: orders created.
//   - FailedValidations*: challenge validations that fail, whether the
//     challenge ends invalid or stays pending with an error. While either
//     bucket is empty the account (or address) can neither create an order
//     nor ask for a validation.
//
// A request is charged before step-ca runs it and refunded if it does not
// create what it asked for, so a refused or failed request costs nothing,
// and concurrent requests cannot overshoot a limit.
type RateLimits struct {
	RequestsPerIP               ratelimit.Limit
	NewAccountPerIP             ratelimit.Limit
	NewOrderPerAccount          ratelimit.Limit
	NewOrderPerIP               ratelimit.Limit
	FailedValidationsPerAccount ratelimit.Limit
	FailedValidationsPerIP      ratelimit.Limit
	// MaxKeys bounds the keys (addresses, accounts) each limit keeps; 0
	// means ratelimit.DefaultMaxKeys.
	MaxKeys int
}

// DefaultRateLimits are ceilings against abuse, sized for a private CA
// whose clients are fleets behind few addresses, renew often, and often
// share one account per issuer (cert-manager, Caddy, Traefik): a limit
// that a busy, healthy fleet reaches is an outage, not a defence. They
// are 2000 requests a second per address (bursts of 4000); 100 new
// accounts an hour per address; 200 new orders a second per account
// (bursts of 2000) and 400 per address (bursts of 4000); 10 failed
// validations an hour per account and 30 per address, the limits that
// bound what the validator can be made to fetch. Tighten them for an
// ACME endpoint open to untrusted networks.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		RequestsPerIP:               ratelimit.Limit{Count: 2000, Period: time.Second, Burst: 4000},
		NewAccountPerIP:             ratelimit.Limit{Count: 100, Period: time.Hour},
		NewOrderPerAccount:          ratelimit.Limit{Count: 200, Period: time.Second, Burst: 2000},
		NewOrderPerIP:               ratelimit.Limit{Count: 400, Period: time.Second, Burst: 4000},
		FailedValidationsPerAccount: ratelimit.Limit{Count: 10, Period: time.Hour},
		FailedValidationsPerIP:      ratelimit.Limit{Count: 30, Period: time.Hour},
	}
}

// Validate checks every limit, naming the one at fault.
func (rl RateLimits) Validate() error {
	for name, l := range rl.limits() {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("stepca: config: RateLimits.%s %s: %w", name, l, err)
		}
	}
	if rl.MaxKeys < 0 {
		return fmt.Errorf("stepca: config: RateLimits.MaxKeys must not be negative")
	}
	return nil
}

func (rl RateLimits) limits() map[string]ratelimit.Limit {
	return map[string]ratelimit.Limit{
		"RequestsPerIP": rl.RequestsPerIP, "NewAccountPerIP": rl.NewAccountPerIP,
		"NewOrderPerAccount": rl.NewOrderPerAccount, "NewOrderPerIP": rl.NewOrderPerIP,
		"FailedValidationsPerAccount": rl.FailedValidationsPerAccount, "FailedValidationsPerIP": rl.FailedValidationsPerIP,
	}
}

// acmeLimits applies RateLimits.
type acmeLimits struct {
	requests, newAccountIP, newOrderAcct, newOrderIP, failedAcct, failedIP *ratelimit.Limiter
	nonces                                                                 *nonces
}

// newACMELimits makes the limiters of s.cfg.RateLimits. Their middleware
// runs after lockObject, which has read the body and holds the lock of
// the request's object.
func (s *Server) newACMELimits() *acmeLimits {
	rl := s.cfg.RateLimits
	mk := func(l ratelimit.Limit) *ratelimit.Limiter {
		lim, err := ratelimit.New(l, s.cfg.Clock, rl.MaxKeys)
		if err != nil { // Config.Validate refused it already
			lim, _ = ratelimit.New(ratelimit.Limit{}, s.cfg.Clock, 1)
		}
		return lim
	}
	l := &acmeLimits{
		requests: mk(rl.RequestsPerIP), newAccountIP: mk(rl.NewAccountPerIP),
		newOrderAcct: mk(rl.NewOrderPerAccount), newOrderIP: mk(rl.NewOrderPerIP),
		failedAcct: mk(rl.FailedValidationsPerAccount), failedIP: mk(rl.FailedValidationsPerIP),
		nonces: s.acmeDB.nonces,
	}
	return l
}

// Admit reports whether an ACME request may go on: past the client
// address's request limit it answers rateLimited, as the ACME middleware
// would, and reports false. It only looks (the middleware spends), so a
// caller can refuse a flood before doing work of its own for each request,
// such as writing an audit line.
func (s *Server) Admit(w http.ResponseWriter, r *http.Request) bool {
	ip := clientip.Key(clientip.Of(r))
	if d := s.limits.requests.Check(ip, 1); !d.Allowed {
		s.limits.deny(w, r, d, "too many requests from %s", ip)
		return false
	}
	return true
}

// limitState is what the ACME database learns of the request's limits.
type limitState struct {
	l  *acmeLimits
	ip string // the client address's key
}

type limitKey struct{}

// charge is one spent token, to refund if the request creates nothing.
type charge struct {
	lim *ratelimit.Limiter
	key string
}

func (l *acmeLimits) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := clientip.Key(clientip.Of(r))
		if d := l.requests.Spend(ip, 1); !d.Allowed {
			l.deny(w, r, d, "too many requests from %s", ip)
			return
		}
		var (
			charges []charge
			want    int // the status of success, for charged requests
		)
		refund := func() {
			for _, c := range charges {
				c.lim.Refund(c.key, 1)
			}
		}
		// spend charges key's bucket, check only looks; past the limit
		// either refunds what was charged and answers rateLimited.
		take := func(spend bool, lim *ratelimit.Limiter, key, what string) bool {
			var d ratelimit.Decision
			if spend {
				d = lim.Spend(key, 1)
			} else {
				d = lim.Check(key, 1)
			}
			if d.Allowed {
				if spend {
					charges = append(charges, charge{lim, key})
				}
				return true
			}
			refund()
			l.deny(w, r, d, "too many %s", what)
			return false
		}
		spend := func(lim *ratelimit.Limiter, key, what string) bool { return take(true, lim, key, what) }
		check := func(lim *ratelimit.Limiter, key, what string) bool { return take(false, lim, key, what) }
		if r.Method == http.MethodPost {
			switch acmeKind(r) {
			case acme.NewAccountLinkType.String():
				if !spend(l.newAccountIP, ip, "new accounts from "+ip) {
					return
				}
				want = http.StatusCreated
			case acme.NewOrderLinkType.String():
				acct := accountOf(r)
				if acct != "" && (!check(l.failedAcct, acct, "failed validations for this account") || !spend(l.newOrderAcct, acct, "new orders for this account")) ||
					!check(l.failedIP, ip, "failed validations from "+ip) || !spend(l.newOrderIP, ip, "new orders from "+ip) {
					return
				}
				want = http.StatusCreated
			case acme.ChallengeLinkType.String():
				acct := accountOf(r)
				if acct != "" && !check(l.failedAcct, acct, "failed validations for this account") || !check(l.failedIP, ip, "failed validations from "+ip) {
					return
				}
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), limitKey{}, &limitState{l: l, ip: ip}))
		if len(charges) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		sw := &httpstatus.Recorder{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.Status != want {
			refund()
		}
	})
}

// failed records a failed validation of account from the client address.
func (st *limitState) failed(account string) {
	st.l.failedAcct.Spend(account, 1)
	st.l.failedIP.Spend(st.ip, 1)
}

// deny answers rateLimited with Retry-After and a fresh nonce.
func (l *acmeLimits) deny(w http.ResponseWriter, r *http.Request, d ratelimit.Decision, format string, args ...any) {
	secs := max(1, int64(math.Ceil(d.RetryIn.Seconds())))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	if n, err := l.nonces.create(); err == nil {
		w.Header().Set("Replay-Nonce", n)
	}
	e := acme.NewDetailedError(acme.ErrorRateLimitedType, format+"; retry after %d seconds", append(args, secs)...)
	e.Status = http.StatusTooManyRequests
	render.Error(w, r, e)
}

// acmeKind is the kind of ACME resource a request is for: the path
// segment after the provisioner, as in /acme/<provisioner>/new-order.
func acmeKind(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/acme/")
	if !ok {
		return ""
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// accountOf is the account a POST names in its JWS kid, or "" (new-account
// and revoke-by-key name none). It is not verified here: it only chooses
// which buckets to check or to charge, and a charge is refunded unless
// step-ca, having verified the signature, creates the resource.
func accountOf(r *http.Request) string {
	if account, ok := r.Context().Value(kidKey{}).(string); ok {
		return account
	}
	body, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return ""
	}
	kid := jwsKeyID(body)
	return kid[strings.LastIndex(kid, "/")+1:]
}

// UpdateChallenge stores a challenge and counts a failed validation
// against the account and the client address of the request.
func (d *acmeDB) UpdateChallenge(ctx context.Context, ch *acme.Challenge) error {
	if err := d.storeChallenge(ctx, ch); err != nil {
		return err
	}
	if ch.Error != nil && ch.Status != acme.StatusValid {
		if st, ok := ctx.Value(limitKey{}).(*limitState); ok {
			st.failed(ch.AccountID)
		}
	}
	return nil
}
