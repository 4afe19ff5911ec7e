package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil/testca"
	"github.com/hashicorp/go-hclog"
)

// faultNet sits under the TLS layer between test nodes: it can cut the
// links between nodes (closing their connections and refusing new ones) and
// delay traffic, while every byte still goes over real TCP.
type faultNet struct {
	mu    sync.Mutex
	idOf  map[string]string        // address -> node ID
	cut   map[[2]string]bool       // unordered pair of IDs
	conns map[[2]string][]net.Conn // (from, to) -> dialed connections
	delay time.Duration
}

func newFaultNet() *faultNet {
	return &faultNet{idOf: map[string]string{}, cut: map[[2]string]bool{}, conns: map[[2]string][]net.Conn{}}
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (n *faultNet) dialer(from string) DialFunc {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		n.mu.Lock()
		to := n.idOf[addr]
		blocked := n.cut[pair(from, to)]
		delay := n.delay
		n.mu.Unlock()
		if blocked {
			return nil, fmt.Errorf("faultnet: link %s-%s is cut", from, to)
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.cut[pair(from, to)] {
			c.Close()
			return nil, fmt.Errorf("faultnet: link %s-%s is cut", from, to)
		}
		n.conns[[2]string{from, to}] = append(n.conns[[2]string{from, to}], c)
		if delay > 0 {
			return &slowConn{Conn: c, delay: delay}, nil
		}
		return c, nil
	}
}

type slowConn struct {
	net.Conn
	delay time.Duration
}

func (c *slowConn) Write(b []byte) (int, error) {
	time.Sleep(c.delay)
	return c.Conn.Write(b)
}

// isolate cuts every link between the two groups.
func (n *faultNet) partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.cut[pair(x, y)] = true
			for _, k := range [][2]string{{x, y}, {y, x}} {
				for _, c := range n.conns[k] {
					c.Close()
				}
				delete(n.conns, k)
			}
		}
	}
}

func (n *faultNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut = map[[2]string]bool{}
}

// testCluster is a cluster of real stores on 127.0.0.1 with mutual TLS.
type testCluster struct {
	t     testing.TB
	ca    *testca.CA
	net   *faultNet
	mu    sync.Mutex
	nodes map[string]*Store
	dirs  map[string]string
	addrs map[string]string
	ids   []string
	tune  func(*Config)
}

// settle bounds how long a test waits for the cluster to reach a state it
// must reach: a leader, a caught-up node, a write that goes through once a
// leader is elected. It bounds liveness, it does not measure speed: on an
// idle machine these take well under a second, and under load (elections
// with 500 ms timeouts among busy processes, the race detector) they take
// what the scheduler gives them. A test that measures speed logs it.
const settle = time.Minute

// fastTimeouts keeps tests quick where they do not measure failover.
func fastTimeouts(c *Config) {
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
}

func newCluster(t testing.TB, n int, tune func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{
		t: t, ca: testca.New(t, "test cluster CA"), net: newFaultNet(),
		nodes: map[string]*Store{}, dirs: map[string]string{}, addrs: map[string]string{}, tune: tune,
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("node%d", i+1)
		c.ids = append(c.ids, id)
		c.dirs[id] = t.TempDir()
		c.start(id, nil)
	}
	if err := c.nodes[c.ids[0]].Bootstrap(); err != nil {
		t.Fatal(err)
	}
	first := c.nodes[c.ids[0]]
	eventually(t, settle, func() error {
		if !first.IsLeader() {
			return errNotYet
		}
		return nil
	})
	for _, id := range c.ids[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.nodes[c.ids[0]].AddVoter(ctx, id, c.addrs[id]); err != nil {
			t.Fatalf("add %s: %v", id, err)
		}
		cancel()
	}
	t.Cleanup(c.closeAll)
	c.waitLeader(settle)
	return c
}

func (c *testCluster) config(id string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = c.dirs[id]
	cfg.TLS = TLSMaterial{Certificate: c.ca.NodeCert(c.t, id), RootCAs: c.ca.Pool}
	cfg.Dial = c.net.dialer(id)
	level := hclog.Off
	if v := os.Getenv("RAFTSTORE_TEST_LOG"); v != "" {
		level = hclog.LevelFromString(v)
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "raftstore", Level: level})
	if c.tune != nil {
		c.tune(&cfg)
	}
	return cfg
}

// start opens node id, on its old address if it had one.
func (c *testCluster) start(id string, edit func(*Config)) *Store {
	c.t.Helper()
	addr := c.addrs[id]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old port may linger briefly after a kill
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := c.config(id)
	cfg.Listener = ln
	if edit != nil {
		edit(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		c.t.Fatalf("open %s: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id] = s
	c.addrs[id] = ln.Addr().String()
	c.mu.Unlock()
	c.net.mu.Lock()
	c.net.idOf[ln.Addr().String()] = id
	c.net.mu.Unlock()
	return s
}

func (c *testCluster) node(id string) *Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *testCluster) live() []*Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Store
	for _, id := range c.ids {
		if s := c.nodes[id]; s != nil {
			out = append(out, s)
		}
	}
	return out
}

// kill stops node id abruptly.
func (c *testCluster) kill(id string) {
	c.mu.Lock()
	s := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if s != nil {
		s.Kill()
	}
}

func (c *testCluster) closeAll() {
	for _, s := range c.live() {
		s.Kill()
	}
}

// waitLeader waits until the live nodes agree on a live leader.
func (c *testCluster) waitLeader(timeout time.Duration) *Store {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var leader *Store
		for _, s := range c.live() {
			if s.IsLeader() {
				leader = s
			}
		}
		if leader != nil {
			agree := true
			for _, s := range c.live() {
				if id, _ := s.Leader(); id != leader.ID() {
					agree = false
				}
			}
			if agree {
				return leader
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no leader within %v", timeout)
	return nil
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// mustCreateTable creates a table, retrying while the cluster has no
// leader: a new cluster on a loaded machine may lose its first leader to a
// missed heartbeat. Creating a table twice is harmless.
func mustCreateTable(t testing.TB, s *Store, name string) {
	t.Helper()
	eventually(t, time.Minute, func() error {
		err := s.CreateTable(ctxT(t, settle), name)
		if err != nil && !retryable(err) {
			t.Fatalf("create table %s: %v", name, err)
		}
		return err
	})
}

// eventually retries fn until it returns nil or the time is up.
func eventually(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("still failing after %v: %v", d, err)
}

var errNotYet = errors.New("not yet")
