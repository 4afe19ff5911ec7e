package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/url"
)

// stepHosts are the hosts step's tokens may name as audience: this node's
// API hosts (advertised address, --api-hosts, localhost) and the host of
// every member's published API URL, so a token made for any node is good
// on all of them.
func (n *Node) stepHosts(ctx context.Context) ([]string, error) {
	hosts := n.apiHosts()
	urls, err := n.sys().apiURLs(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: members' API URLs: %w", err)
	}
	for _, raw := range urls {
		if u, err := url.Parse(string(raw)); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	return hosts, nil
}

// clusterCARoots returns the cluster CA, which signs the API's TLS
// certificates: step-ca serves it as a federated root, so that
// `step ca bootstrap --fingerprint` may pin it.
func (n *Node) clusterCARoots(ctx context.Context) ([]*x509.Certificate, error) {
	raw, err := n.sys().clusterCACert(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: cluster CA: %w", err)
	}
	c, err := parseCertPEM(raw)
	if err != nil {
		return nil, fmt.Errorf("node: cluster CA: %w", err)
	}
	return []*x509.Certificate{c}, nil
}
