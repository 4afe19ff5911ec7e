package node

import (
	"context"
	"errors"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/ca/stepca"
	"github.com/custos-pki/custos/raftstore"
)

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
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n.store.IsLeader() {
				n.tidyOnce(ctx, authority, step)
			}
		}
	}
}

func (n *Node) tidyOnce(ctx context.Context, authority *ca.CA, step *stepca.Server) {
	quiet := func(err error) bool {
		return err == nil || errors.Is(err, context.Canceled) || errors.Is(err, raftstore.ErrClosed)
	}
	st, err := authority.Tidy(ctx, n.cfg.CertRetention)
	if !quiet(err) {
		n.log.Warn("certificate tidy", "error", err)
	}
	acme, stepRecs := 0, 0
	if step != nil {
		acme, stepRecs, err = step.CollectCertificates(ctx, n.cfg.CertRetention)
		if !quiet(err) {
			n.log.Warn("ACME certificate collection", "error", err)
		}
	}
	if st.Removed > 0 || st.Kept > 0 || acme > 0 || stepRecs > 0 {
		n.log.Info("expired certificates removed", "inventory", st.Removed, "kept_in_crl", st.Kept, "acme_records", acme, "step_records", stepRecs)
	}
}
