package node

import (
	"context"
	"errors"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/ca/stepca"
	"github.com/custos-pki/custos/raftstore"
)

// onLeaderEvery runs fn every interval, on the leader only, until ctx
// ends; what names it in the warning an error gets. An error from a
// closing node or context is not worth a warning.
func (n *Node) onLeaderEvery(ctx context.Context, every time.Duration, what string, fn func(context.Context) error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n.store.IsLeader() {
				if err := fn(ctx); !quietErr(err) {
					n.log.Warn(what, "error", err)
				}
			}
		}
	}
}

// quietErr reports an error that needs no warning: none, or the node or
// its context closing.
func quietErr(err error) bool {
	return err == nil || errors.Is(err, context.Canceled) || errors.Is(err, raftstore.ErrClosed)
}

// tidyCerts removes, on the leader, every TidyInterval, the certificates
// that expired more than CertRetention ago: the inventory's records and,
// when ACME runs, step's records of them. The deletes are
// replicated writes like any other; the state file reuses the pages they
// free.
func (n *Node) tidyCerts(ctx context.Context, authority *ca.CA, step *stepca.Server) {
	every := n.cfg.TidyInterval
	if every <= 0 {
		every = time.Hour
	}
	n.onLeaderEvery(ctx, every, "certificate tidy", func(ctx context.Context) error {
		n.tidyOnce(ctx, authority, step)
		return nil
	})
}

func (n *Node) tidyOnce(ctx context.Context, authority *ca.CA, step *stepca.Server) {
	st, err := authority.Tidy(ctx, n.cfg.CertRetention)
	if !quietErr(err) {
		n.log.Warn("certificate tidy", "error", err)
	}
	acme, stepRecs := 0, 0
	if step != nil {
		acme, stepRecs, err = step.CollectCertificates(ctx, n.cfg.CertRetention)
		if !quietErr(err) {
			n.log.Warn("ACME certificate collection", "error", err)
		}
	}
	if st.Removed > 0 || st.Kept > 0 || acme > 0 || stepRecs > 0 {
		n.log.Info("expired certificates removed", "inventory", st.Removed, "kept_in_crl", st.Kept, "acme_records", acme, "step_records", stepRecs)
	}
}
