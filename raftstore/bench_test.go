package raftstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkReplicatedPut measures durable replicated writes on a 3-node
// cluster (fsync on, production timeouts) with 64 concurrent writers and
// 256-byte values. "leader" sends every write to the leader; "any-node"
// spreads writers over all three nodes, as clients behind a load balancer
// do, so two thirds of the writes are forwarded; "follower" sends every
// write to one follower, which forwards them all, and reports how many
// connections it dialed to the leader per write. Each reports how many
// writes the leader's group commit put in one log entry on average:
// forwarded writes join the leader's batches like its own.
func BenchmarkReplicatedPut(b *testing.B) {
	for _, mode := range []string{"leader", "any-node", "follower"} {
		b.Run(mode, func(b *testing.B) { benchPut(b, 64, mode) })
	}
	b.Run("single-writer", func(b *testing.B) { benchPut(b, 1, "leader") })
}

func benchPut(b *testing.B, writers int, mode string) {
	c := newCluster(b, 3, nil)
	mustCreateTable(b, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	nodes := []*Store{leader}
	switch mode {
	case "any-node":
		nodes = c.live()
	case "follower":
		nodes = c.followers(leader)[:1]
	}
	dials, batches := nodes[0].fwd.dials.Load(), leader.batch.batches.Load()
	value := make([]byte, 256)
	var (
		next  atomic.Int64
		mu    sync.Mutex
		lat   []time.Duration
		wg    sync.WaitGroup
		fails atomic.Int64
	)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := nodes[w%len(nodes)]
			var mine []time.Duration
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					break
				}
				t0 := time.Now()
				err := s.Put(context.Background(), "kv", fmt.Appendf(nil, "key-%010d", i), value)
				mine = append(mine, time.Since(t0))
				if err != nil {
					fails.Add(1)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := fails.Load(); n > 0 {
		b.Fatalf("%d writes failed", n)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/write")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(b.N)/float64(leader.batch.batches.Load()-batches), "writes/batch")
	if mode == "follower" {
		b.ReportMetric(float64(nodes[0].fwd.dials.Load()-dials)/float64(b.N), "dials/write")
	}
}

// BenchmarkLinearizableRead measures linearizable Gets of 256-byte values on
// a 3-node cluster with 64 concurrent readers, all on the leader or all on
// one follower. The follower sub-benchmark also reports its rate as a
// fraction of the leader's measured just before it in the same run, which
// is the figure that matters on a shared machine.
func BenchmarkLinearizableRead(b *testing.B) {
	c := newCluster(b, 3, nil)
	mustCreateTable(b, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	const keys = 1024
	value := make([]byte, 256)
	for i := 0; i < keys; i++ {
		if err := leader.Put(ctxT(b, settle), "kv", fmt.Appendf(nil, "key-%04d", i), value); err != nil {
			b.Fatal(err)
		}
	}
	var follower *Store
	for _, s := range c.live() {
		if s != leader {
			follower = s
			break
		}
	}
	var leaderRate float64
	b.Run("leader", func(b *testing.B) {
		leaderRate = benchReads(b, leader, 64, keys)
	})
	b.Run("follower", func(b *testing.B) {
		rate := benchReads(b, follower, 64, keys)
		if leaderRate > 0 {
			b.ReportMetric(rate/leaderRate, "follower/leader")
		}
	})
}

func benchReads(b *testing.B, s *Store, readers, keys int) float64 {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		fails atomic.Int64
	)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := s.Get(context.Background(), "kv", fmt.Appendf(nil, "key-%04d", i%int64(keys))); err != nil {
					fails.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := fails.Load(); n > 0 {
		b.Fatalf("%d reads failed", n)
	}
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "reads/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/read")
	return rate
}

// cpuTime is the CPU time this process (all nodes of an in-process cluster)
// has used: on a shared machine, CPU per operation is a steadier figure than
// a rate.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
