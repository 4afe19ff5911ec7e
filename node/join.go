package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/raftstore"
)

// Joining, as the member sees it. A join spends a one-time token and adds
// the node as a non-voter with certificates that name its node ID, the
// loopback names and the hosts given when the token was made: nothing else
// the joiner asks for. The member also stores a join challenge through the
// barrier, so that only a node holding the barrier keys can read it. The
// new node answers it once it is unsealed (proveKeys) and only then becomes
// a voter; until then the cluster port refuses its writes. This is Vault's
// raft join challenge, with the challenge carried by the replicated log.

const maxTokenHosts = 16

// joinRecord is a join token as stored: only its hash is the key.
type joinRecord struct {
	ExpiresAt    time.Time `json:"expires_at"`
	APIHosts     []string  `json:"api_hosts,omitempty"`
	ClusterHosts []string  `json:"cluster_hosts,omitempty"`
}

// loopbackHosts are in every node certificate: they name no other machine.
var loopbackHosts = []string{"127.0.0.1", "::1", "localhost"}

// checkHosts validates the hosts of a join token: DNS names or IP
// addresses, no wildcards, lowercased.
func checkHosts(field string, hosts []string) ([]string, error) {
	if len(hosts) > maxTokenHosts {
		return nil, fmt.Errorf("%w: %s: at most %d hosts", ErrInvalid, field, maxTokenHosts)
	}
	var out []string
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if ip := net.ParseIP(h); ip != nil {
			h = ip.String()
		} else if !validDNSName(h) {
			return nil, fmt.Errorf("%w: %s: %q is neither an IP address nor a DNS name", ErrInvalid, field, h)
		}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out, nil
}

func validDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if !nodeIDRE.MatchString(label) {
			return false
		}
	}
	return true
}

// CreateJoinToken makes a one-time token that lets a new node join, and
// stores with it the hosts the new node's certificates may name.
func (n *Node) CreateJoinToken(ctx context.Context, req api.JoinTokenRequest) (api.JoinTokenResponse, error) {
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 24*time.Hour {
			return api.JoinTokenResponse{}, fmt.Errorf("%w: ttl must be a duration up to 24h", ErrInvalid)
		}
		ttl = d
	}
	apiHosts, err := checkHosts("api_hosts", req.APIHosts)
	if err != nil {
		return api.JoinTokenResponse{}, err
	}
	clusterHosts, err := checkHosts("cluster_hosts", req.ClusterHosts)
	if err != nil {
		return api.JoinTokenResponse{}, err
	}
	caPEM, err := n.sys().clusterCACert(ctx)
	if err != nil {
		return api.JoinTokenResponse{}, err
	}
	ca, err := parseCertPEM(caPEM)
	if err != nil {
		return api.JoinTokenResponse{}, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return api.JoinTokenResponse{}, err
	}
	tok := "cjt_" + base64.RawURLEncoding.EncodeToString(raw[:])
	exp := time.Now().Add(ttl).UTC()
	rec, _ := json.Marshal(joinRecord{ExpiresAt: exp, APIHosts: apiHosts, ClusterHosts: clusterHosts})
	if err := n.sys().putJoinToken(ctx, tok, rec); err != nil {
		return api.JoinTokenResponse{}, err
	}
	return api.JoinTokenResponse{Token: tok, ExpiresAt: exp, CAFingerprint: Fingerprint(ca)}, nil
}

var errJoinToken = fmt.Errorf("%w: the join token is unknown, used or expired", ErrForbidden)

// Join admits a new node: it spends the join token, adds the node as a
// non-voter and signs its certificates with the cluster CA.
func (n *Node) Join(ctx context.Context, req api.JoinRequest) (api.JoinResponse, error) {
	svc, err := n.Services()
	if err != nil {
		return api.JoinResponse{}, err
	}
	if !nodeIDRE.MatchString(req.NodeID) || req.ClusterAddr == "" || len(req.ClusterAddr) > 256 {
		return api.JoinResponse{}, fmt.Errorf("%w: node_id and cluster_addr are required", ErrInvalid)
	}
	clusterHost, _, err := net.SplitHostPort(req.ClusterAddr)
	if err != nil {
		return api.JoinResponse{}, fmt.Errorf("%w: cluster_addr must be host:port", ErrInvalid)
	}
	nodeCSR, err := parseCSR(req.NodeCSR, req.NodeID)
	if err != nil {
		return api.JoinResponse{}, err
	}
	apiCSR, err := parseCSR(req.APICSR, req.NodeID)
	if err != nil {
		return api.JoinResponse{}, err
	}
	// Refused before the token is spent: the operator removes the old
	// member and tries again with the same token.
	if err := n.refuseMember(req.NodeID); err != nil {
		return api.JoinResponse{}, err
	}
	rec, err := n.spendJoinToken(ctx, req.Token)
	if err != nil {
		return api.JoinResponse{}, err
	}
	if len(rec.ClusterHosts) > 0 && !slices.Contains(rec.ClusterHosts, normalHost(clusterHost)) {
		return api.JoinResponse{}, fmt.Errorf("%w: the join token does not allow cluster address %q", ErrForbidden, req.ClusterAddr)
	}
	caPEM, err := n.sys().clusterCACert(ctx)
	if err != nil {
		return api.JoinResponse{}, err
	}
	ca, err := parseCertPEM(caPEM)
	if err != nil {
		return api.JoinResponse{}, err
	}
	signer, err := svc.KMS.Signer(ctx, clusterCAKey, 0)
	if err != nil {
		return api.JoinResponse{}, err
	}
	if err := n.putChallenge(ctx, req.NodeID); err != nil {
		return api.JoinResponse{}, err
	}
	// A non-voter: it may not write, and a node that never starts cannot
	// take the quorum away. The leader refuses an ID or address that is
	// already a member, whatever this node's view.
	if err := n.store.AddNonvoter(ctx, req.NodeID, req.ClusterAddr); err != nil {
		if errors.Is(err, raftstore.ErrMemberExists) {
			return api.JoinResponse{}, fmt.Errorf("%w: %v; remove it first with custos operator raft remove-peer %s", ErrConflict, err, req.NodeID)
		}
		return api.JoinResponse{}, err
	}
	now := time.Now()
	nodeDER, err := issue(ca, signer, nodeCSR.PublicKey, req.NodeID, nil, true, now, n.cfg.NodeCertTTL)
	if err != nil {
		return api.JoinResponse{}, err
	}
	apiDER, err := issue(ca, signer, apiCSR.PublicKey, req.NodeID, joinAPIHosts(req.NodeID, apiCSR, rec.APIHosts), false, now, n.cfg.NodeCertTTL)
	if err != nil {
		return api.JoinResponse{}, err
	}
	return api.JoinResponse{NodeCert: string(pemCert(nodeDER)), APICert: string(pemCert(apiDER)), CACert: string(caPEM)}, nil
}

// refuseMember refuses a join under the ID of a current member, voter or
// not: the ID is the node's identity on the cluster port.
func (n *Node) refuseMember(id string) error {
	for _, p := range n.store.Status().Peers {
		if p.ID == id {
			return fmt.Errorf("%w: node %q is already a member of the cluster (at %s); remove it first with custos operator raft remove-peer %s",
				ErrConflict, id, p.Addr, id)
		}
	}
	return nil
}

// joinAPIHosts is what a joiner's API certificate names: its node ID, the
// token's hosts, and the loopback names it asked for. Other names in the
// request are dropped.
func joinAPIHosts(id string, csr *x509.CertificateRequest, tokenHosts []string) []string {
	hosts := []string{id}
	asked := append([]string(nil), csr.DNSNames...)
	for _, ip := range csr.IPAddresses {
		asked = append(asked, ip.String())
	}
	for _, h := range asked {
		if h = normalHost(h); slices.Contains(loopbackHosts, h) && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	for _, h := range tokenHosts {
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

func normalHost(h string) string {
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return strings.ToLower(h)
}

// spendJoinToken deletes the token's record if it is there and current:
// compare-and-delete, so two joins cannot spend one token.
func (n *Node) spendJoinToken(ctx context.Context, tok string) (joinRecord, error) {
	var jr joinRecord
	if !strings.HasPrefix(tok, "cjt_") || len(tok) > 128 {
		return jr, errJoinToken
	}
	rec, err := n.sys().joinToken(ctx, tok)
	if errors.Is(err, raftstore.ErrNotFound) {
		return jr, errJoinToken
	}
	if err != nil {
		return jr, err
	}
	spent, err := n.sys().deleteJoinToken(ctx, tok, rec)
	if err != nil {
		return jr, err
	}
	if !spent {
		return jr, errJoinToken
	}
	if err := json.Unmarshal(rec, &jr); err != nil || time.Now().After(jr.ExpiresAt) {
		return jr, errJoinToken
	}
	return jr, nil
}

func parseCSR(p, id string) (*x509.CertificateRequest, error) {
	blk, _ := pem.Decode([]byte(p))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: a PEM certificate request is required", ErrInvalid)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate request: %v", ErrInvalid, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: certificate request signature does not verify", ErrInvalid)
	}
	if csr.Subject.CommonName != id {
		return nil, fmt.Errorf("%w: certificate request is for %q, not node %q", ErrInvalid, csr.Subject.CommonName, id)
	}
	return csr, nil
}

// putChallenge stores a fresh random challenge for id through the barrier:
// the log carries only its ciphertext under the keyring.
func (n *Node) putChallenge(ctx context.Context, id string) error {
	c := make([]byte, 32)
	if _, err := rand.Read(c); err != nil {
		return err
	}
	defer clear(c)
	if err := n.sys().putJoinChallenge(ctx, id, c); err != nil {
		return fmt.Errorf("join: challenge: %w", err)
	}
	return nil
}

// admitVoter is raftstore's Config.Admit, run on the leader: the non-voter
// id is admitted if proof is the plaintext of its join challenge, which it
// can only have read through an unsealed barrier.
func (n *Node) admitVoter(ctx context.Context, id string, proof []byte) error {
	if n.barrier == nil || n.barrier.Sealed() {
		return errors.New("the leader is sealed and cannot check the answer; unseal it")
	}
	want, err := n.sys().joinChallenge(ctx, id)
	if errors.Is(err, raftstore.ErrNotFound) {
		return errors.New("there is no join challenge for this node; remove it and join again")
	}
	if err != nil {
		return fmt.Errorf("read the join challenge: %w", err)
	}
	defer clear(want)
	if subtle.ConstantTimeCompare(want, proof) != 1 {
		return errors.New("the answer to the join challenge is wrong")
	}
	return nil
}

// errNotAdmitted is what an unseal of a joined node reports when the
// leader did not make it a voter.
var errNotAdmitted = errors.New("node: this node joined as a non-voter and could not prove to the leader that it holds the barrier keys")

// proveKeys makes a joined node, now unsealed, a voter: it reads its join
// challenge through the barrier and sends the answer to the leader. A voter
// has nothing to prove. Until it succeeds the node must not use its
// services: the cluster refuses its writes.
func (n *Node) proveKeys(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		st := n.store.Status()
		voter, member := false, false
		for _, p := range st.Peers {
			if p.ID == n.cfg.NodeID {
				voter, member = p.Voter, true
			}
		}
		if voter {
			return nil
		}
		if member && st.LeaderID != "" && st.AppliedIndex > 0 && st.AppliedIndex+64 >= st.CommitIndex {
			break
		}
		select {
		case <-ctx.Done():
			if !member {
				return fmt.Errorf("%w: it is not (yet) a member of the cluster", errNotAdmitted)
			}
			return fmt.Errorf("%w: it has not caught up with the leader", errNotAdmitted)
		case <-n.closing:
			return raftstore.ErrClosed
		case <-time.After(100 * time.Millisecond):
		}
	}
	answer, err := n.sys().joinChallenge(ctx, n.cfg.NodeID)
	if err != nil {
		return fmt.Errorf("%w: read the join challenge: %v", errNotAdmitted, err)
	}
	defer clear(answer)
	if err := n.store.Promote(ctx, answer); err != nil {
		return fmt.Errorf("%w: %v", errNotAdmitted, err)
	}
	// Now a voter, it may write: the challenge has done its work.
	if err := n.sys().deleteJoinChallenge(ctx, n.cfg.NodeID); err != nil {
		n.log.Warn("deleting the join challenge", "error", err)
	}
	n.log.Info("proved the barrier keys to the leader; now a voter")
	return nil
}

// requestJoin is the new node's side: it checks the member against the
// pinned CA fingerprint, asks to join, and saves its certificates.
func (n *Node) requestJoin(ctx context.Context) error {
	want, err := hex.DecodeString(strings.ReplaceAll(strings.ToLower(n.cfg.JoinCAFingerprint), ":", ""))
	if err != nil || len(want) != sha256.Size {
		return errors.New("node: join_ca_fingerprint must be a hex SHA-256")
	}
	nodeKey, err := newKey()
	if err != nil {
		return err
	}
	apiKey, err := newKey()
	if err != nil {
		return err
	}
	nodeCSR, err := csrPEM(nodeKey, n.cfg.NodeID, nil)
	if err != nil {
		return err
	}
	apiCSR, err := csrPEM(apiKey, n.cfg.NodeID, n.apiHosts())
	if err != nil {
		return err
	}
	body, _ := json.Marshal(api.JoinRequest{Token: n.cfg.JoinToken, NodeID: n.cfg.NodeID, ClusterAddr: n.cfg.ClusterAdvertise, NodeCSR: nodeCSR, APICSR: apiCSR})
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pinnedTLS(want)}}
	url := strings.TrimSuffix(n.cfg.JoinAddr, "/") + "/v1/sys/cluster/join"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := client.Do(hreq)
	if err != nil {
		return fmt.Errorf("node: join %s: %w", n.cfg.JoinAddr, err)
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	if err != nil {
		return err
	}
	if hresp.StatusCode != http.StatusOK {
		return fmt.Errorf("node: join refused (%d): %s", hresp.StatusCode, bytes.TrimSpace(raw))
	}
	var jr api.JoinResponse
	if err := json.Unmarshal(raw, &jr); err != nil {
		return fmt.Errorf("node: join answer: %w", err)
	}
	ca, err := parseCertPEM([]byte(jr.CACert))
	if err != nil || subtle.ConstantTimeCompare(fingerprintBytes(ca), want) != 1 {
		return errors.New("node: join answer names another CA than the pinned one")
	}
	nodeCert, err := parseCertPEM([]byte(jr.NodeCert))
	if err != nil {
		return err
	}
	apiCert, err := parseCertPEM([]byte(jr.APICert))
	if err != nil {
		return err
	}
	granted := certHosts(apiCert)
	for _, h := range n.apiHosts() {
		if !slices.Contains(granted, normalHost(h)) {
			n.log.Warn("the API certificate does not name this host: make the join token with --api-host to include it", "host", h)
		}
	}
	return n.files.save(ca.Raw, nodeCert.Raw, nodeKey, apiCert.Raw, apiKey)
}

func fingerprintBytes(c *x509.Certificate) []byte {
	sum := sha256.Sum256(c.Raw)
	return sum[:]
}

// pinnedTLS trusts exactly the CA with the pinned fingerprint: the server's
// chain must include it and verify to it.
func pinnedTLS(want []byte) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pinned check below
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			var certs []*x509.Certificate
			for _, raw := range rawCerts {
				c, err := x509.ParseCertificate(raw)
				if err != nil {
					return err
				}
				certs = append(certs, c)
			}
			pool := x509.NewCertPool()
			for _, c := range certs {
				if subtle.ConstantTimeCompare(fingerprintBytes(c), want) == 1 {
					pool.AddCert(c)
				}
			}
			if len(certs) == 0 {
				return errors.New("no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			if err != nil {
				return fmt.Errorf("the server does not chain to the pinned cluster CA: %w", err)
			}
			return nil
		},
	}
}
