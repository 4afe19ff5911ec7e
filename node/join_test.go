package node

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/raftstore"
)

// TestJoin runs the joining rules against a real 3-node cluster: a join
// under a member's ID is refused, the certificates name only what the
// token allows, a joined node cannot write until it has proved the barrier
// keys, and a removed node's certificate opens no connection.
func TestJoin(t *testing.T) {
	tc := newTestCluster(t, 3)
	n1 := tc.nodes[0]
	root := newClient(t, n1, tc.caFile)
	root.token = tc.root
	peerAddr := func(id string) string {
		for _, p := range n1.store.Status().Peers {
			if p.ID == id {
				return p.Addr
			}
		}
		return ""
	}
	var jt api.JoinTokenResponse
	root.must("POST", "/v1/sys/join-token", api.JoinTokenRequest{TTL: "10m", APIHosts: []string{"node4.example.test"}}, &jt)

	t.Run("member_id_refused", func(t *testing.T) {
		before := peerAddr("node2")
		req := validJoinRequestFor(t, jt.Token, "node2")
		req.ClusterAddr = freeAddr(t)
		status, code := root.do("POST", "/v1/sys/cluster/join", req, nil)
		if status != http.StatusConflict || code != api.CodeConflict {
			t.Errorf("join as voter node2: %d %s, want 409 conflict", status, code)
		}
		if after := peerAddr("node2"); after != before {
			t.Errorf("node2 moved from %s to %s", before, after)
		}
	})

	t.Run("cluster_host_from_token", func(t *testing.T) {
		var jt2 api.JoinTokenResponse
		root.must("POST", "/v1/sys/join-token", api.JoinTokenRequest{TTL: "10m", ClusterHosts: []string{"10.9.9.9"}}, &jt2)
		req := validJoinRequestFor(t, jt2.Token, "node7")
		req.ClusterAddr = freeAddr(t)
		if status, code := root.do("POST", "/v1/sys/cluster/join", req, nil); status != http.StatusForbidden || code != api.CodePermissionDenied {
			t.Errorf("join at a cluster address the token does not allow: %d %s, want 403", status, code)
		}
		if peerAddr("node7") != "" {
			t.Error("node7 was added")
		}
		for _, bad := range []string{"*.example.com", "a b", "-x.example"} {
			if status, code := root.do("POST", "/v1/sys/join-token", api.JoinTokenRequest{APIHosts: []string{bad}}, nil); status != http.StatusBadRequest || code != api.CodeInvalidArgument {
				t.Errorf("token with API host %q: %d %s, want 400", bad, status, code)
			}
		}
	})

	// The token was not spent by the refused join.
	cfg := testConfig(t, "node4")
	cfg.APIHosts = []string{"evil.example.com", "node4.example.test"}
	cfg.JoinAddr, cfg.JoinToken, cfg.JoinCAFingerprint = n1.APIURL(), jt.Token, jt.CAFingerprint
	n4 := startNode(t, cfg)
	waitFor(t, 30*time.Second, func() bool { return n4.store.AppliedIndex() > 0 })

	t.Run("names_from_token", func(t *testing.T) {
		mat := n4.mat.Load()
		apiLeaf, err := leafOf(mat.api)
		if err != nil {
			t.Fatal(err)
		}
		names := certHosts(apiLeaf)
		if slices.Contains(names, "evil.example.com") {
			t.Errorf("API certificate names a host the token did not allow: %v", names)
		}
		for _, want := range []string{"node4", "node4.example.test", "127.0.0.1"} {
			if !slices.Contains(names, want) {
				t.Errorf("API certificate lacks %s: %v", want, names)
			}
		}
		nodeLeaf, err := leafOf(mat.node)
		if err != nil {
			t.Fatal(err)
		}
		if got := certHosts(nodeLeaf); len(got) != 1 || got[0] != "node4" {
			t.Errorf("cluster certificate names %v", got)
		}
	})

	t.Run("nonvoter_member_id_refused", func(t *testing.T) {
		var jt2 api.JoinTokenResponse
		root.must("POST", "/v1/sys/join-token", api.JoinTokenRequest{TTL: "10m"}, &jt2)
		before := peerAddr("node4")
		req := validJoinRequestFor(t, jt2.Token, "node4")
		req.ClusterAddr = freeAddr(t)
		if status, code := root.do("POST", "/v1/sys/cluster/join", req, nil); status != http.StatusConflict || code != api.CodeConflict {
			t.Errorf("join as non-voter node4: %d %s, want 409 conflict", status, code)
		}
		if after := peerAddr("node4"); after != before {
			t.Errorf("node4 moved from %s to %s", before, after)
		}
	})

	t.Run("unproven_cannot_write", func(t *testing.T) {
		ctx := ctxT(t, 20*time.Second)
		if err := n4.store.Put(ctx, tableSys, []byte("planted"), []byte("x")); !errors.Is(err, raftstore.ErrNotPermitted) {
			t.Errorf("raw write from the unproven node: %v, want ErrNotPermitted", err)
		}
		if err := n4.store.CreateTable(ctx, "planted"); !errors.Is(err, raftstore.ErrNotPermitted) {
			t.Errorf("new table from the unproven node: %v, want ErrNotPermitted", err)
		}
		if err := n4.store.Promote(ctx, []byte("a guess at the challenge")); !errors.Is(err, raftstore.ErrNotPermitted) {
			t.Errorf("promotion with a wrong answer: %v, want ErrNotPermitted", err)
		}
		if voters(n1) != 3 {
			t.Errorf("%d voters, want 3", voters(n1))
		}
	})

	t.Run("proven_after_unseal", func(t *testing.T) {
		tc.nodes = append(tc.nodes, n4)
		tc.unseal(t, 3)
		waitFor(t, 30*time.Second, func() bool { return voters(n1) == 4 })
		ctx := ctxT(t, 20*time.Second)
		if err := n4.store.CreateTable(ctx, "written-by-node4"); err != nil {
			t.Errorf("write from the proven node: %v", err)
		}
		if _, err := n1.sys().joinChallenge(ctx, "node4"); !errors.Is(err, raftstore.ErrNotFound) {
			t.Errorf("join challenge still there: %v", err)
		}
	})

	t.Run("removed_node_cannot_connect", func(t *testing.T) {
		root.must("POST", "/v1/sys/raft/remove-peer", api.RemovePeerRequest{NodeID: "node4"}, nil)
		waitFor(t, 30*time.Second, func() bool { return peerAddr("node4") == "" })
		cert := n4.mat.Load().node
		for _, kind := range []byte{'R', 'F'} {
			if err := clusterConnAnswers(n1, cert, kind); err == nil {
				t.Errorf("connection kind %c with the removed node's certificate was kept open", kind)
			}
		}
		// A member's certificate still gets in.
		if err := clusterConnAnswers(n1, tc.nodes[1].mat.Load().node, 'R'); err != nil {
			t.Errorf("member's Raft connection: %v", err)
		}
	})
}

// clusterConnAnswers opens a connection of kind to n's cluster port with
// cert and reports nil if the node keeps it open (waiting for a request),
// an error if it closes it.
func clusterConnAnswers(n *Node, cert tls.Certificate, kind byte) error {
	pool := n.mat.Load().pool
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.ClusterAddr(), &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: n.cfg.NodeID, MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{kind}); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	_, err = conn.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil // still open
	}
	if err == nil {
		return errors.New("the node sent data unasked")
	}
	return err
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// FuzzCheckHosts: whatever a join token request names, what is kept is an
// IP address or a DNS name without wildcards, lowercased, with no repeats.
func FuzzCheckHosts(f *testing.F) {
	for _, s := range []string{"node4.example.test", "10.0.0.2", "::1", "*.example.com", "", "A.Example.COM", "a..b", "-a.b", "xn--bcher-kva.example", "evil.example.com\x00.good"} {
		f.Add(s, "127.0.0.1")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		out, err := checkHosts("api_hosts", []string{a, b})
		if err != nil {
			return
		}
		for i, h := range out {
			if net.ParseIP(h) == nil && !validDNSName(h) {
				t.Fatalf("kept %q", h)
			}
			if strings.ContainsAny(h, "*\x00 /") || strings.ToLower(h) != h {
				t.Fatalf("kept %q", h)
			}
			if slices.Contains(out[i+1:], h) {
				t.Fatalf("kept %q twice", h)
			}
		}
	})
}
