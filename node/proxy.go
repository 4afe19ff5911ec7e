package node

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/custos-pki/custos/internal/clientip"
	"github.com/custos-pki/custos/raftstore"
)

// Each node records the API URL it serves at, so that any node can send a
// request to the leader's API: ACME runs on the leader (its per-account
// ordering and its nonces are the leader's), and followers forward to it.
//
// publishAPIURL records this node's API URL.
func (n *Node) publishAPIURL(ctx context.Context) error {
	return n.sys().publishAPIURL(ctx, n.cfg.NodeID, "https://"+n.cfg.APIAdvertise)
}

// leaderProxies caches one reverse proxy per leader URL.
type leaderProxies struct {
	mu      sync.Mutex
	byURL   map[string]*httputil.ReverseProxy
	forNode map[string]string // node ID -> URL
}

// LeaderProxy returns a handler that forwards a request to the leader's
// API, or nil when this node is the leader.
func (n *Node) LeaderProxy(ctx context.Context) (http.Handler, error) {
	id, _ := n.store.Leader()
	switch {
	case id == "":
		return nil, fmt.Errorf("%w: no leader to forward to", raftstore.ErrNoLeader)
	case id == n.cfg.NodeID:
		return nil, nil
	}
	n.proxies.mu.Lock()
	target, ok := n.proxies.forNode[id]
	n.proxies.mu.Unlock()
	if !ok {
		raw, err := n.sys().apiURL(ctx, id)
		if err != nil {
			if errors.Is(err, raftstore.ErrNotFound) {
				return nil, fmt.Errorf("%w: the leader %s has not published its API address", raftstore.ErrNoLeader, id)
			}
			return nil, err
		}
		target = string(raw)
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	n.proxies.mu.Lock()
	defer n.proxies.mu.Unlock()
	if n.proxies.byURL == nil {
		n.proxies.byURL, n.proxies.forNode = map[string]*httputil.ReverseProxy{}, map[string]string{}
	}
	n.proxies.forNode[id] = target
	if p, ok := n.proxies.byURL[target]; ok {
		return p, nil
	}
	mat := n.mat.Load()
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // links the leader writes point at the node the client uses
			pr.SetXForwarded()
			// The leader limits ACME per client address: name it. The
			// leader believes this header only from a member's cluster
			// certificate (clusterPeer), which the transport presents.
			pr.Out.Header.Set(clientip.Header, clientip.Of(pr.In).String())
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			n.log.Warn("forwarding to the leader", "leader", id, "error", err)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"unavailable","message":"the leader did not answer; retry"}}` + "\n"))
		},
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: mat.pool, ServerName: id,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					return &n.mat.Load().node, nil
				}},
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	n.proxies.byURL[target] = p
	return p, nil
}

// clusterPeer reports whether a TLS peer presented the cluster certificate
// of a current member: one the cluster CA signed for client authentication
// (API and workload certificates are not), naming a node ID that is in the
// Raft configuration. Only such a peer may name a client address in
// clientip.Header; the API drops that header from everyone else.
//
// A member's proxy sends many requests on one connection, each asking
// this: the chain is verified once per certificate and cluster CA
// (peerCache) while it stays valid; membership is checked every time.
func (n *Node) clusterPeer(cs *tls.ConnectionState) bool {
	if len(cs.PeerCertificates) == 0 {
		return false
	}
	leaf := cs.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || !n.peers.verified(n.mat.Load(), leaf, time.Now()) {
		return false
	}
	for _, p := range n.store.Status().Peers {
		if p.ID == leaf.DNSNames[0] {
			return true
		}
	}
	return false
}

// peerCache remembers the cluster certificates that verified against one
// cluster CA (material), each until the first NotAfter of its chain. Only
// certificates that verified are kept, at most maxPeerCerts.
type peerCache struct {
	mu    sync.Mutex
	mat   *material
	certs map[[sha256.Size]byte]time.Time // leaf hash -> valid until
}

const maxPeerCerts = 64

// verified reports whether leaf verifies as a cluster client certificate
// under mat's CA at now.
func (c *peerCache) verified(mat *material, leaf *x509.Certificate, now time.Time) bool {
	h := sha256.Sum256(leaf.Raw)
	c.mu.Lock()
	if c.mat != mat {
		c.mat, c.certs = mat, nil
	}
	until, ok := c.certs[h]
	c.mu.Unlock()
	if ok && now.Before(until) && !now.Before(leaf.NotBefore) {
		return true
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: mat.pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return false
	}
	until = leaf.NotAfter
	for _, ch := range chains[0] {
		if ch.NotAfter.Before(until) {
			until = ch.NotAfter
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mat == mat {
		if c.certs == nil || len(c.certs) >= maxPeerCerts {
			c.certs = make(map[[sha256.Size]byte]time.Time)
		}
		c.certs[h] = until
	}
	return true
}
