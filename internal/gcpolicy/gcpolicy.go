// Package gcpolicy sets the garbage collector's policy of a custos server.
//
// A node allocates briefly for every request (TLS records, JSON, audit
// entries, Raft batches) while its live heap stays small: tens of MB even
// with a million certificates and a million secrets, whose records live in
// bbolt's memory-mapped file and not on the Go heap. With Go's default
// GOGC=100 the collector then runs very often, and on a loaded node it
// costs 15-20% of the CPU. custos server therefore runs with GOGC=200
// (the heap may grow to three times what is live before a collection),
// and, when its cgroup has a memory limit, with a soft memory limit of
// three quarters of it, so that the collector works harder as the node
// nears its limit instead of letting it be killed. An operator's own
// GOGC or GOMEMLIMIT environment variable is left alone: Go applies it.
//
// Measured on a 3-node cluster in one process under load (BenchmarkCluster,
// cpu-ms per operation at GOGC 100 / 200 / 400): encrypt 0.200 / 0.155-0.162
// / 0.159, KV put 0.688 / 0.531-0.588 / 0.516, KV get 0.241 / 0.173-0.207 /
// 0.181. One node's anonymous memory after BenchmarkMemory's 20,000
// certificates and secrets: 66 / 101 / 174 MB. 200 takes most of the CPU
// for a third of the memory.
package gcpolicy

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultPercent is the GOGC value custos server runs with when the
// environment does not set one.
const DefaultPercent = 200

// Policy is the collector's policy as applied.
type Policy struct {
	Percent int   // GOGC; -1 when the environment's GOGC applies
	Limit   int64 // soft memory limit in bytes; 0 when none was set here
}

// Apply sets the policy: GOGC=DefaultPercent unless getenv("GOGC") is
// set, and a soft memory limit of 3/4 of cgroupLimit() unless
// getenv("GOMEMLIMIT") is set or there is no cgroup limit.
func Apply(getenv func(string) string, cgroupLimit func() (int64, bool)) Policy {
	p := Policy{Percent: -1}
	if getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultPercent)
		p.Percent = DefaultPercent
	}
	if getenv("GOMEMLIMIT") == "" {
		if l, ok := cgroupLimit(); ok && l > 0 {
			p.Limit = l / 4 * 3
			debug.SetMemoryLimit(p.Limit)
		}
	}
	return p
}

// CgroupLimit reads this process's cgroup memory limit: cgroup v2's
// memory.max, else cgroup v1's memory.limit_in_bytes. It reports false
// when there is none ("max", or v1's huge "unlimited" value).
func CgroupLimit() (int64, bool) {
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		return parseLimit(string(b))
	}
	return 0, false
}

// unlimitedV1 is above any real limit: cgroup v1 reports "no limit" as
// a page-rounded huge number.
const unlimitedV1 = 1 << 60

func parseLimit(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= unlimitedV1 {
		return 0, false
	}
	return n, true
}
