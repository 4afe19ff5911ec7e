package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

// TestNodeCertRenewalUnderLoad lowers the node certificate lifetime of a
// 3-node cluster to 6 s (restarting each node, as an operator would) and
// keeps writing through every node while the certificates are renewed
// several times: no request may fail, and both the API and the cluster port
// must serve the new certificates without a restart.
func TestNodeCertRenewalUnderLoad(t *testing.T) {
	tc := newTestCluster(t, 3)
	const ttl = 6 * time.Second
	for i := range tc.nodes {
		tc.nodes[i].Close()
		cfg := tc.cfgs[i]
		cfg.NodeCertTTL = ttl
		cfg.JoinAddr, cfg.JoinToken, cfg.JoinCAFingerprint = "", "", ""
		tc.nodes[i], tc.cfgs[i] = startNode(t, cfg), cfg
		n := tc.nodes[i]
		waitFor(t, 30*time.Second, func() bool { id, _ := n.store.Leader(); return id != "" })
		tc.unseal(t, i)
	}
	// Each node renews at once: its certificates outlive the new setting.
	for _, n := range tc.nodes {
		waitFor(t, 30*time.Second, func() bool {
			leaf, err := leafOf(n.mat.Load().node)
			return err == nil && time.Until(leaf.NotAfter) <= ttl
		})
	}

	pem, err := os.ReadFile(tc.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	// Writes through every node, each on a new TLS connection.
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	for _, n := range tc.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
				DisableKeepAlives: true,
				TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			}}
			for ctx.Err() == nil {
				if err := createToken(hc, n.APIURL(), tc.root); err != nil {
					failed.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}

	// Watch the certificates each node serves on both ports.
	apiSerials := make([]map[string]bool, len(tc.nodes))
	clusterSerials := make([]map[string]bool, len(tc.nodes))
	for i := range tc.nodes {
		apiSerials[i], clusterSerials[i] = map[string]bool{}, map[string]bool{}
	}
	enough := func() bool {
		for i := range tc.nodes {
			if len(apiSerials[i]) < 3 || len(clusterSerials[i]) < 3 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(90 * time.Second)
	for !enough() && time.Now().Before(deadline) {
		for i, n := range tc.nodes {
			if s, err := servedSerial(n.ln.Addr().String(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}); err == nil {
				apiSerials[i][s] = true
			} else {
				t.Errorf("API handshake with %s: %v", n.cfg.NodeID, err)
			}
			member := tc.nodes[(i+1)%len(tc.nodes)].mat.Load()
			if s, err := servedSerial(n.ClusterAddr(), &tls.Config{
				Certificates: []tls.Certificate{member.node}, RootCAs: member.pool, ServerName: n.cfg.NodeID, MinVersion: tls.VersionTLS12,
			}); err == nil {
				clusterSerials[i][s] = true
			} else {
				t.Errorf("cluster port handshake with %s: %v", n.cfg.NodeID, err)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	stop()
	wg.Wait()
	for i, n := range tc.nodes {
		t.Logf("%s served %d API and %d cluster certificates", n.cfg.NodeID, len(apiSerials[i]), len(clusterSerials[i]))
	}
	if !enough() {
		t.Errorf("the certificates were not renewed at least twice on every node within the time allowed")
	}
	t.Logf("%d writes, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d of %d writes failed during renewals; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr)
	}
	if ok.Load() < 10 {
		t.Errorf("only %d writes went through", ok.Load())
	}
}

func createToken(hc *http.Client, base, token string) error {
	body, _ := json.Marshal(api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"})
	req, err := http.NewRequest("POST", base+"/v1/auth/token/create", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(api.TokenHeader, token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// servedSerial makes a TLS handshake with addr and returns the serial of the
// certificate the server presented, after verifying it.
func servedSerial(addr string, cfg *tls.Config) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}
