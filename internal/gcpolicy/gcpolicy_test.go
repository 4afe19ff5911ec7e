package gcpolicy

import (
	"runtime/debug"
	"testing"
)

func TestApply(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	limit := func(n int64) func() (int64, bool) { return func() (int64, bool) { return n, n > 0 } }

	p := Apply(env(nil), limit(0))
	if p != (Policy{Percent: DefaultPercent}) || debug.SetGCPercent(100) != DefaultPercent {
		t.Fatalf("no environment, no cgroup limit: %+v", p)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<63-1 {
		t.Fatalf("memory limit set without a cgroup limit: %d", got)
	}

	p = Apply(env(nil), limit(4<<30))
	if p.Limit != 3<<30 || debug.SetMemoryLimit(-1) != 3<<30 {
		t.Fatalf("cgroup limit 4 GiB: %+v", p)
	}

	debug.SetGCPercent(100)
	debug.SetMemoryLimit(1<<63 - 1)
	p = Apply(env(map[string]string{"GOGC": "50", "GOMEMLIMIT": "1GiB"}), limit(4<<30))
	if p != (Policy{Percent: -1}) || debug.SetGCPercent(100) != 100 || debug.SetMemoryLimit(-1) != 1<<63-1 {
		t.Fatalf("the environment's settings were overridden: %+v", p)
	}
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"max\n":                 0,
		"":                      0,
		"-1":                    0,
		"9223372036854771712\n": 0, // cgroup v1 "unlimited"
		"1073741824\n":          1 << 30,
		"junk":                  0,
	} {
		got, ok := parseLimit(in)
		if got != want || ok != (want > 0) {
			t.Errorf("parseLimit(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}
