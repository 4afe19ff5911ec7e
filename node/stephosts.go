package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/url"

	"github.com/custos-pki/custos/raftstore"
)

// stepHosts are the hosts step's tokens may name as audience: this node's
// API hosts (advertised address, --api-hosts, localhost) and the host of
// every member's published API URL, so a token made for any node is good
// on all of them.
func (n *Node) stepHosts(ctx context.Context) ([]string, error) {
	hosts := n.apiHosts()
	prefix := []byte(apiURLPrefix)
	var after []byte
	for {
		page, err := n.barrier.List(ctx, tableSys, raftstore.ListOptions{Prefix: prefix, After: after}, raftstore.Stale())
		if err != nil {
			return nil, fmt.Errorf("node: members' API URLs: %w", err)
		}
		for _, kv := range page.Items {
			if u, err := url.Parse(string(kv.Value)); err == nil && u.Hostname() != "" {
				hosts = append(hosts, u.Hostname())
			}
		}
		if page.Next == nil {
			return hosts, nil
		}
		after = page.Next
	}
}

// clusterCARoots returns the cluster CA, which signs the API's TLS
// certificates: step-ca serves it as a federated root, so that
// `step ca bootstrap --fingerprint` may pin it.
func (n *Node) clusterCARoots(ctx context.Context) ([]*x509.Certificate, error) {
	raw, err := n.barrier.Get(ctx, tableSys, []byte(recClusterCA))
	if err != nil {
		return nil, fmt.Errorf("node: cluster CA: %w", err)
	}
	c, err := parseCertPEM(raw)
	if err != nil {
		return nil, fmt.Errorf("node: cluster CA: %w", err)
	}
	return []*x509.Certificate{c}, nil
}
