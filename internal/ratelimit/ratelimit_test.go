package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func mustNew(t *testing.T, l Limit, c Clock, maxKeys int) *Limiter {
	t.Helper()
	lim, err := New(l, c, maxKeys)
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

func TestBurstThenSteadyRate(t *testing.T) {
	clk := newFakeClock()
	l := mustNew(t, Limit{Count: 10, Period: 3 * time.Hour}, clk, 0) // one token per 18 minutes
	for i := range 10 {
		d := l.Spend("a", 1)
		if !d.Allowed || d.Remaining != int64(9-i) {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d := l.Spend("a", 1)
	if d.Allowed || d.RetryIn != 18*time.Minute {
		t.Fatalf("11th request: %+v, want denied with RetryIn 18m", d)
	}
	if other := l.Spend("b", 1); !other.Allowed {
		t.Fatal("another key was limited")
	}
	clk.Advance(18*time.Minute - time.Nanosecond)
	if d := l.Spend("a", 1); d.Allowed || d.RetryIn != time.Nanosecond {
		t.Fatalf("a nanosecond early: %+v", d)
	}
	clk.Advance(time.Nanosecond)
	if d := l.Spend("a", 1); !d.Allowed || d.Remaining != 0 || d.RetryIn != 18*time.Minute {
		t.Fatalf("on time: %+v", d)
	}
	// Idle for longer than the period: the bucket is full again, no more.
	clk.Advance(10 * time.Hour)
	if d := l.Check("a", 1); !d.Allowed || d.Remaining != 9 {
		t.Fatalf("after a long idle: %+v, want 9 left after this one", d)
	}
}

func TestBurstLargerThanCount(t *testing.T) {
	clk := newFakeClock()
	l := mustNew(t, Limit{Count: 1, Period: time.Second, Burst: 5}, clk, 0)
	for i := range 5 {
		if !l.Spend("k", 1).Allowed {
			t.Fatalf("request %d of the burst denied", i)
		}
	}
	if l.Spend("k", 1).Allowed {
		t.Fatal("beyond the burst allowed")
	}
	clk.Advance(time.Second)
	if !l.Spend("k", 1).Allowed {
		t.Fatal("refilled token denied")
	}
}

func TestCheckSpendsNothingAndDenialSpendsNothing(t *testing.T) {
	clk := newFakeClock()
	l := mustNew(t, Limit{Count: 2, Period: time.Minute}, clk, 0)
	for range 5 {
		if !l.Check("k", 1).Allowed {
			t.Fatal("check denied a full bucket")
		}
	}
	if l.Len() != 0 {
		t.Fatal("Check stored a key")
	}
	l.Spend("k", 2)
	for range 5 {
		l.Spend("k", 1) // denied: must not push the time further
	}
	clk.Advance(30 * time.Second)
	if !l.Spend("k", 1).Allowed {
		t.Fatal("denied requests were charged")
	}
}

func TestRefund(t *testing.T) {
	clk := newFakeClock()
	l := mustNew(t, Limit{Count: 3, Period: time.Hour}, clk, 0)
	for range 3 {
		l.Spend("k", 1)
	}
	l.Refund("k", 1)
	if !l.Spend("k", 1).Allowed {
		t.Fatal("a refunded token is not there")
	}
	l.Refund("k", 100) // never above the burst
	for i := range 3 {
		if !l.Spend("k", 1).Allowed {
			t.Fatalf("token %d after a large refund", i)
		}
	}
	if l.Spend("k", 1).Allowed {
		t.Fatal("a refund overfilled the bucket")
	}
}

func TestOffAllowsEverything(t *testing.T) {
	l := mustNew(t, Limit{}, newFakeClock(), 0)
	for range 1000 {
		if !l.Spend("k", 1).Allowed {
			t.Fatal("an off limit denied")
		}
	}
	if l.Len() != 0 {
		t.Fatal("an off limit kept keys")
	}
}

func TestKeysAreBounded(t *testing.T) {
	clk := newFakeClock()
	l := mustNew(t, Limit{Count: 1, Period: time.Hour}, clk, 100)
	for i := range 10_000 {
		l.Spend(fmt.Sprint("ip-", i), 1)
		if n := l.Len(); n > 100 {
			t.Fatalf("%d keys held, cap 100", n)
		}
	}
	// The most recently used keys are still limited.
	if l.Spend("ip-9999", 1).Allowed {
		t.Fatal("a recent key was forgotten")
	}
	// A key whose bucket is full again is dropped before a busy one.
	l2 := mustNew(t, Limit{Count: 1, Period: time.Minute}, clk, 2)
	l2.Spend("old", 1)
	clk.Advance(2 * time.Minute) // "old" is full again
	l2.Spend("busy", 1)
	l2.Spend("new", 1)
	if l2.Spend("busy", 1).Allowed {
		t.Fatal("the busy key was dropped instead of the idle one")
	}
}

func TestConcurrentSpendIsExact(t *testing.T) {
	l := mustNew(t, Limit{Count: 100, Period: time.Hour}, newFakeClock(), 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if l.Spend("k", 1).Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("%d of 400 allowed, want exactly the burst of 100", allowed)
	}
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]Limit{
		"10/3h":     {Count: 10, Period: 3 * time.Hour},
		"20/1s:100": {Count: 20, Period: time.Second, Burst: 100},
		"5/1m30s":   {Count: 5, Period: 90 * time.Second},
		"off":       {},
		"0":         {},
	} {
		got, err := ParseLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseLimit(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if back, err := ParseLimit(got.String()); err != nil || back != got {
			t.Errorf("%q: String %q does not read back: %+v, %v", in, got.String(), back, err)
		}
	}
	for _, in := range []string{"", "10", "10/", "/3h", "-1/1h", "10/-1h", "10/0s", "10/1h:0", "10/1h:-2", "x/1h", "10/1h:x", "1099511627777/1h", "1000/1ns", "1/100000h", "1/87600h:1000000000"} {
		if l, err := ParseLimit(in); err == nil {
			t.Errorf("ParseLimit(%q) = %+v, want an error", in, l)
		}
	}
}

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"10/3h", "20/1s:100", "off", "0", "1/1ns", "9/9h9m9s:9", "/", ":", "1/1h:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLimit(s)
		if err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("ParseLimit(%q) gave an invalid limit %+v: %v", s, l, err)
		}
		back, err := ParseLimit(l.String())
		if err != nil || back != l {
			t.Fatalf("ParseLimit(%q) = %+v; String %q reads back as %+v, %v", s, l, l.String(), back, err)
		}
		lim, err := New(l, newFakeClock(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if !lim.Spend("k", 1).Allowed {
			t.Fatalf("%+v: a full bucket refused its first request", l)
		}
	})
}
