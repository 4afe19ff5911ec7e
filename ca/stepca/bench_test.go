package stepca

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

// BenchmarkACMEIssuance runs complete http-01 issuances (new order,
// authorization, challenge, validation, finalize with a kms-held issuer key,
// certificate download) on a one-node durable cluster, from two clients per
// processor at once: per-worker gives each client its own account,
// shared-account puts them all on one account, as cert-manager, Caddy and
// Traefik do (one account per issuer). The figure is issuances/s.
func BenchmarkACMEIssuance(b *testing.B) {
	b.Run("per-worker", func(b *testing.B) { benchIssuance(b, false) })
	b.Run("shared-account", func(b *testing.B) { benchIssuance(b, true) })
}

func benchIssuance(b *testing.B, shared bool) {
	e := newEnv(b)
	ctx := context.Background()
	const perProc = 2
	n := perProc * runtime.GOMAXPROCS(0)
	clients := make(chan *acme.Client, n)
	first := e.newACMEClient(b)
	for range n {
		if shared {
			clients <- e.sameAccount(first)
		} else {
			clients <- e.newACMEClient(b)
		}
	}
	var seq atomic.Int64
	b.SetParallelism(perProc)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c := <-clients
		for pb.Next() {
			name := fmt.Sprintf("b%d.test", seq.Add(1))
			if _, err := e.issue(ctx, c, "http-01", acme.DomainIDs(name)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "issuances/s")
}
