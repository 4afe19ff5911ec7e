// Package ratelimit is an exact, keyed token bucket: the generic cell rate
// algorithm (GCRA), as Let's Encrypt's boulder uses it.
//
// What it promises:
//   - A Limit of Count per Period with a Burst admits at most Burst requests
//     at once and, sustained, Count per Period; a bucket refills one token
//     every Period/Count. The state of a key is one time (its theoretical
//     arrival time), so the arithmetic is exact and cheap.
//   - A denied request spends nothing, and its Decision says how long to
//     wait (RetryIn) before the same request would be allowed.
//   - Memory is bounded: a Limiter keeps at most MaxKeys keys. When a new
//     key arrives at a full Limiter the least recently used key is dropped;
//     that key starts again with a full bucket. Keys whose bucket is full
//     again hold no information and are dropped first in that order.
//   - Time comes from an injected Clock; nothing reads the wall clock.
//
// It keeps state in memory, per process: a cluster that routes a kind of
// request to one node (custos sends ACME to the leader) limits it
// cluster-wide; elsewhere each node limits what it serves.
package ratelimit

import (
	"container/list"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Clock tells the time.
type Clock interface{ Now() time.Time }

// Limit is Count requests per Period, with bursts up to Burst. The zero
// Limit is off: it allows everything.
type Limit struct {
	Count  int64
	Period time.Duration
	// Burst is the bucket's capacity; 0 means Count.
	Burst int64
}

// Off reports whether the limit allows everything.
func (l Limit) Off() bool { return l.Count == 0 }

func (l Limit) burst() int64 {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Count
}

// Validate checks the fields.
func (l Limit) Validate() error {
	switch {
	case l.Off():
		return nil
	case l.Count < 0:
		return errors.New("count must not be negative")
	case l.Period <= 0:
		return errors.New("period must be positive")
	case l.Burst < 0:
		return errors.New("burst must not be negative")
	case l.Period > maxPeriod:
		return errors.New("period must be at most ten years")
	case l.Period/time.Duration(l.Count) <= 0:
		return errors.New("count is too large for the period")
	case l.burst() > maxBurstSpan/int64(l.Period/time.Duration(l.Count)):
		return errors.New("burst is too large for the rate")
	}
	return nil
}

// Bounds that keep the arithmetic in int64 nanoseconds.
const (
	maxPeriod    = 10 * 365 * 24 * time.Hour
	maxBurstSpan = 1 << 62 // burst × period/count, ns: about 146 years
)

// String writes the limit as ParseLimit reads it.
func (l Limit) String() string {
	if l.Off() {
		return "off"
	}
	s := strconv.FormatInt(l.Count, 10) + "/" + formatPeriod(l.Period)
	if l.Burst > 0 && l.Burst != l.Count {
		s += ":" + strconv.FormatInt(l.Burst, 10)
	}
	return s
}

func formatPeriod(d time.Duration) string {
	s := d.String() // "3h0m0s"
	for _, z := range []string{"0s", "0m"} {
		if strings.HasSuffix(s, "m"+z) || strings.HasSuffix(s, "h"+z) {
			s = strings.TrimSuffix(s, z)
		}
	}
	return s
}

// maxCount bounds the numbers ParseLimit accepts.
const maxCount = 1 << 40

// ParseLimit reads "COUNT/PERIOD" or "COUNT/PERIOD:BURST", such as "10/3h",
// "20/1s:100" or "5/1m30s" (PERIOD as time.ParseDuration reads it), or
// "off" (also "0") for no limit.
func ParseLimit(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "off" || s == "0" {
		return Limit{}, nil
	}
	bad := func(why string) (Limit, error) {
		return Limit{}, fmt.Errorf("ratelimit: %q: %s (want COUNT/PERIOD[:BURST], e.g. 10/3h, or off)", s, why)
	}
	countS, rest, ok := strings.Cut(s, "/")
	if !ok {
		return bad("no /")
	}
	periodS, burstS, hasBurst := strings.Cut(rest, ":")
	count, err := strconv.ParseInt(countS, 10, 64)
	if err != nil || count < 1 || count > maxCount {
		return bad("count must be a whole number from 1")
	}
	period, err := time.ParseDuration(periodS)
	if err != nil || period <= 0 {
		return bad("period must be a positive duration")
	}
	l := Limit{Count: count, Period: period}
	if hasBurst {
		if l.Burst, err = strconv.ParseInt(burstS, 10, 64); err != nil || l.Burst < 1 || l.Burst > maxCount {
			return bad("burst must be a whole number from 1")
		}
		if l.Burst == l.Count {
			l.Burst = 0 // the default, written one way
		}
	}
	if err := l.Validate(); err != nil {
		return bad(err.Error())
	}
	return l, nil
}

// Decision is the answer to one request.
type Decision struct {
	Allowed bool
	// Remaining is how many more requests of cost 1 the bucket holds now.
	Remaining int64
	// RetryIn is, when denied, how long until the same request would be
	// allowed; when allowed, how long until the next request of cost 1 is
	// (zero when the bucket is not empty).
	RetryIn time.Duration
}

// DefaultMaxKeys is the number of keys a Limiter keeps when not told.
const DefaultMaxKeys = 65536

// Limiter applies one Limit to many keys (client addresses, accounts). It
// is safe for concurrent use.
type Limiter struct {
	limit    Limit
	clock    Clock
	maxKeys  int
	interval int64 // ns per token
	burstOff int64 // interval * burst

	mu    sync.Mutex
	keys  map[string]*list.Element
	order *list.List // front: most recently used
}

type bucket struct {
	key string
	tat int64 // theoretical arrival time, unix ns
}

// New returns a Limiter for limit keeping at most maxKeys keys (0 means
// DefaultMaxKeys). A limiter of an Off limit allows everything.
func New(limit Limit, clock Clock, maxKeys int) (*Limiter, error) {
	if err := limit.Validate(); err != nil {
		return nil, fmt.Errorf("ratelimit: %s: %w", limit, err)
	}
	if clock == nil {
		return nil, errors.New("ratelimit: nil clock")
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	l := &Limiter{limit: limit, clock: clock, maxKeys: maxKeys, keys: map[string]*list.Element{}, order: list.New()}
	if !limit.Off() {
		l.interval = int64(limit.Period) / limit.Count
		l.burstOff = l.interval * limit.burst()
	}
	return l, nil
}

// Limit returns the limit applied.
func (l *Limiter) Limit() Limit { return l.limit }

// Spend takes cost tokens from key's bucket if it holds them.
func (l *Limiter) Spend(key string, cost int64) Decision { return l.decide(key, cost, true) }

// Check tells whether key's bucket holds cost tokens, spending nothing.
func (l *Limiter) Check(key string, cost int64) Decision { return l.decide(key, cost, false) }

// Refund gives cost tokens back to key's bucket (after a spent request
// turned out not to count). The bucket never holds more than its burst.
func (l *Limiter) Refund(key string, cost int64) {
	if l.limit.Off() || cost <= 0 {
		return
	}
	now := l.clock.Now().UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.keys[key]
	if !ok {
		return
	}
	b := e.Value.(*bucket)
	b.tat = max(b.tat-cost*l.interval, now)
}

// Len is the number of keys held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

func (l *Limiter) decide(key string, cost int64, spend bool) Decision {
	if l.limit.Off() {
		return Decision{Allowed: true, Remaining: 1<<63 - 1}
	}
	if cost < 0 {
		cost = 0
	}
	now := l.clock.Now().UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, ok := l.keys[key]; ok {
		b = e.Value.(*bucket)
		l.order.MoveToFront(e)
	}
	tat := now
	if b != nil && b.tat > now {
		tat = b.tat
	}
	newTAT := tat + cost*l.interval
	if allowAt := newTAT - l.burstOff; allowAt > now {
		// Not enough tokens: spend nothing.
		return Decision{Remaining: (now + l.burstOff - tat) / l.interval, RetryIn: time.Duration(allowAt - now)}
	}
	d := Decision{Allowed: true, Remaining: (now + l.burstOff - newTAT) / l.interval}
	if d.Remaining == 0 {
		d.RetryIn = time.Duration(newTAT - l.burstOff + l.interval - now)
	}
	if !spend || cost == 0 {
		return d
	}
	if b != nil {
		b.tat = newTAT
		return d
	}
	l.keys[key] = l.order.PushFront(&bucket{key: key, tat: newTAT})
	l.evict(now)
	return d
}

// evict drops keys beyond maxKeys: a key whose bucket is full again among
// the few least recently used if there is one (it holds no information),
// else the least recently used. The scan is bounded so that a flood of new
// keys costs constant time each.
func (l *Limiter) evict(now int64) {
	for len(l.keys) > l.maxKeys {
		victim := l.order.Back()
		e := victim
		for i := 0; i < evictScan && e != nil; i, e = i+1, e.Prev() {
			if e.Value.(*bucket).tat <= now {
				victim = e
				break
			}
		}
		l.remove(victim)
	}
}

// evictScan is how many of the least recently used keys evict looks at.
const evictScan = 8

func (l *Limiter) remove(e *list.Element) {
	delete(l.keys, e.Value.(*bucket).key)
	l.order.Remove(e)
}
