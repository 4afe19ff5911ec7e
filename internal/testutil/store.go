// Package testutil holds helpers for tests of the packages above raftstore:
// real stores on 127.0.0.1 with throwaway TLS material.
package testutil

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil/testca"
	"github.com/custos-pki/custos/raftstore"
	"github.com/hashicorp/go-hclog"
)

// SingleNode starts a one-node, durable raftstore cluster in a temporary
// directory, waits until it leads, and closes it when the test ends.
func SingleNode(t testing.TB) *raftstore.Store {
	t.Helper()
	return SingleNodeIn(t, t.TempDir())
}

// SingleNodeIn is SingleNode on a given data directory (which may hold a
// previous run's state, to test restarts).
func SingleNodeIn(t testing.TB, dir string) *raftstore.Store {
	t.Helper()
	ca := testca.New(t, "test cluster CA")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := raftstore.DefaultConfig()
	cfg.NodeID = "node1"
	cfg.DataDir = dir
	cfg.Listener = ln
	cfg.TLS = raftstore.TLSMaterial{Certificate: ca.NodeCert(t, "node1"), RootCAs: ca.Pool}
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	cfg.ElectionTimeout = 200 * time.Millisecond
	cfg.LeaderLeaseTimeout = 100 * time.Millisecond
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "raftstore", Level: hclog.Off})
	s, err := raftstore.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Bootstrap(); err != nil && s.AppliedIndex() == 0 {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("single node did not become leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Wait until the node is ready for linearizable reads.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.List(ctx, "testutil-ready", raftstore.ListOptions{}); err != nil && !errors.Is(err, raftstore.ErrUnknownTable) {
		t.Fatal(err)
	}
	return s
}
