package node

import (
	"context"
	"fmt"

	"github.com/custos-pki/custos/workload"
)

// maxSocketPath is the longest Unix socket path Linux takes (108 bytes
// with the terminating NUL, less on other systems).
const maxSocketPath = 103

// startWorkload makes the registration entries available to the API and,
// with Config.WorkloadAPISocket, serves the SPIFFE Workload API and Envoy
// SDS on that socket until the node seals. Called with n.mu held, once
// n.svc is set.
func (n *Node) startWorkload(ctx context.Context) error {
	reg, err := workload.NewRegistry(ctx, n.barrier, n.svc.CA)
	if err != nil {
		return err
	}
	n.svc.Workloads = reg
	if n.cfg.WorkloadAPISocket == "" {
		return nil
	}
	cfg := workload.DefaultConfig()
	cfg.SocketPath, cfg.Issuer, cfg.Keys, cfg.Entries = n.cfg.WorkloadAPISocket, n.svc.CA, n.svc.KMS, reg
	cfg.Logger = n.log.With("component", "workload-api")
	srv, err := workload.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("node: workload API: %w", err)
	}
	n.workload = srv
	return nil
}

// stopWorkload closes the workload socket; called with n.mu held.
func (n *Node) stopWorkload() {
	if n.workload != nil {
		n.workload.Stop()
		n.workload = nil
	}
}
