package secrets

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks on durable raftstore nodes (fsync on) under the kms barrier:
// 64 concurrent clients, 1 KiB secrets, each write to one of 256 paths (so
// writers rarely wait for another's compare-and-swap). A write is one
// linearizable read of the mount, one of the metadata, a data key and one
// Raft transaction; a read is three linearizable reads and an unwrap.
// "1-node" is a single node; "3-nodes" spreads the clients over the three
// nodes of a cluster, as a load balancer does: followers forward writes
// and ask the leader for a read index before each read.
const (
	benchClients = 64
	benchSecrets = 256
)

var benchValue = []byte(`{"password":"` + strings.Repeat("x", 1000) + `"}`)

func benchStores(b *testing.B, nodes int) []*Store {
	if nodes == 1 {
		return []*Store{newEnv(b).s}
	}
	return newCluster(b, nodes)
}

func benchPath(i int64) string { return fmt.Sprintf("app/s%06d", i%benchSecrets) }

func BenchmarkSecretWrite(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(nodesName(n), func(b *testing.B) {
			st := benchStores(b, n)
			if _, err := st[0].CreateMount(bg, "bench", MountOptions{}); err != nil {
				b.Fatal(err)
			}
			runClients(b, "writes/s", func(c int, i int64) error {
				_, err := st[c%n].Put(bg, "bench", benchPath(i), benchValue, WriteOptions{})
				return err
			})
		})
	}
}

func BenchmarkSecretRead(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(nodesName(n), func(b *testing.B) {
			st := benchStores(b, n)
			if _, err := st[0].CreateMount(bg, "bench", MountOptions{}); err != nil {
				b.Fatal(err)
			}
			for i := range int64(benchSecrets) {
				if _, err := st[0].Put(bg, "bench", benchPath(i), benchValue, WriteOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			runClients(b, "reads/s", func(c int, i int64) error {
				_, err := st[c%n].Get(bg, "bench", benchPath(i), 0)
				return err
			})
		})
	}
}

func nodesName(n int) string {
	if n == 1 {
		return "1-node"
	}
	return fmt.Sprintf("%d-nodes", n)
}

// runClients runs b.N calls of op over benchClients goroutines (op gets the
// client's number and the call's) and reports the rate and the latency
// percentiles.
func runClients(b *testing.B, unit string, op func(client int, i int64) error) {
	var (
		next  atomic.Int64
		fails atomic.Int64
		mu    sync.Mutex
		lat   []time.Duration
		wg    sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for c := range benchClients {
		wg.Go(func() {
			var mine []time.Duration
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					break
				}
				t0 := time.Now()
				if err := op(c, i); err != nil {
					fails.Add(1)
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := fails.Load(); n > 0 {
		b.Fatalf("%d calls failed", n)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), unit)
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
