package raftstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReplicatedPut measures durable replicated writes on a 3-node
// cluster (fsync on, production timeouts) with 64 concurrent writers and
// 256-byte values. "leader" sends every write to the leader; "any-node"
// spreads writers over all three nodes, as clients behind a load balancer
// do, so two thirds of the writes are forwarded.
func BenchmarkReplicatedPut(b *testing.B) {
	for _, mode := range []string{"leader", "any-node"} {
		b.Run(mode, func(b *testing.B) { benchPut(b, 64, mode == "any-node") })
	}
	b.Run("single-writer", func(b *testing.B) { benchPut(b, 1, false) })
}

func benchPut(b *testing.B, writers int, spread bool) {
	benchPutN(b, 3, writers, nil, spread)
}

func benchPutN(b *testing.B, n, writers int, tune func(*Config), spreadOpt ...bool) {
	spread := len(spreadOpt) > 0 && spreadOpt[0]
	c := newCluster(b, n, tune)
	mustCreateTable(b, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	nodes := []*Store{leader}
	if spread {
		nodes = c.live()
	}
	value := make([]byte, 256)
	var (
		next  atomic.Int64
		mu    sync.Mutex
		lat   []time.Duration
		wg    sync.WaitGroup
		fails atomic.Int64
	)
	b.ResetTimer()
	start := time.Now()
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
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
