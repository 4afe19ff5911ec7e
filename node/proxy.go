package node

import (
	"context"
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
func (n *Node) clusterPeer(cs *tls.ConnectionState) bool {
	if len(cs.PeerCertificates) == 0 {
		return false
	}
	leaf := cs.PeerCertificates[0]
	_, err := leaf.Verify(x509.VerifyOptions{Roots: n.mat.Load().pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil || len(leaf.DNSNames) != 1 {
		return false
	}
	for _, p := range n.store.Status().Peers {
		if p.ID == leaf.DNSNames[0] {
			return true
		}
	}
	return false
}
