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
	"net/http"
	"strings"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

// RaftStatus reports the cluster as this node sees it.
func (n *Node) RaftStatus(context.Context) (api.RaftStatus, error) { return n.store.Status(), nil }

// RemovePeer removes a server from the cluster.
func (n *Node) RemovePeer(ctx context.Context, id string) error { return n.store.RemoveServer(ctx, id) }

// StepDown makes the leader hand leadership to another voter. On a
// follower it is refused: ask the leader.
func (n *Node) StepDown(context.Context) error {
	if !n.store.IsLeader() {
		return fmt.Errorf("%w: step-down must be sent to the leader", kms.ErrInvalid)
	}
	return n.store.TransferLeadership()
}

// SnapshotSave streams a consistent backup of the whole store. It holds
// only ciphertexts: everything was written through the barrier.
func (n *Node) SnapshotSave(ctx context.Context, w io.Writer) error {
	_, err := n.store.Backup(ctx, w)
	return err
}

// SnapshotRestore replaces the cluster's state with a backup; it must be
// sent to the leader. A backup from another cluster needs force, and then
// brings that cluster's barrier: every node seals (see afterRestore) and
// opens with that cluster's unseal keys.
func (n *Node) SnapshotRestore(ctx context.Context, r io.Reader, force bool) error {
	if !n.store.IsLeader() {
		return fmt.Errorf("%w: snapshot restore must be sent to the leader", kms.ErrInvalid)
	}
	return n.store.Restore(ctx, r, force)
}

// joinRecord is a join token as stored: only its hash is the key.
type joinRecord struct {
	ExpiresAt time.Time `json:"expires_at"`
}

func joinKey(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return []byte(joinPrefix + hex.EncodeToString(sum[:]))
}

// CreateJoinToken makes a one-time token that lets a new node join.
func (n *Node) CreateJoinToken(ctx context.Context, req api.JoinTokenRequest) (api.JoinTokenResponse, error) {
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 24*time.Hour {
			return api.JoinTokenResponse{}, fmt.Errorf("%w: ttl must be a duration up to 24h", kms.ErrInvalid)
		}
		ttl = d
	}
	caPEM, err := n.barrier.Get(ctx, tableSys, []byte(recClusterCA))
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
	rec, _ := json.Marshal(joinRecord{ExpiresAt: time.Now().Add(ttl).UTC()})
	if err := n.barrier.Put(ctx, tableSys, joinKey(tok), rec); err != nil {
		return api.JoinTokenResponse{}, err
	}
	return api.JoinTokenResponse{Token: tok, ExpiresAt: time.Now().Add(ttl).UTC(), CAFingerprint: Fingerprint(ca)}, nil
}

var errJoinToken = fmt.Errorf("%w: the join token is unknown, used or expired", kms.ErrForbidden)

// Join admits a new node: it spends the join token, signs the node's
// certificates with the cluster CA and adds the node as a voter.
func (n *Node) Join(ctx context.Context, req api.JoinRequest) (api.JoinResponse, error) {
	svc, err := n.Services()
	if err != nil {
		return api.JoinResponse{}, err
	}
	if !nodeIDRE.MatchString(req.NodeID) || req.ClusterAddr == "" || len(req.ClusterAddr) > 256 {
		return api.JoinResponse{}, fmt.Errorf("%w: node_id and cluster_addr are required", kms.ErrInvalid)
	}
	nodeCSR, err := parseCSR(req.NodeCSR, req.NodeID)
	if err != nil {
		return api.JoinResponse{}, err
	}
	apiCSR, err := parseCSR(req.APICSR, req.NodeID)
	if err != nil {
		return api.JoinResponse{}, err
	}
	if err := n.spendJoinToken(ctx, req.Token); err != nil {
		return api.JoinResponse{}, err
	}
	caPEM, err := n.barrier.Get(ctx, tableSys, []byte(recClusterCA))
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
	nodeDER, err := issue(ca, signer, nodeCSR.PublicKey, req.NodeID, nil, true, time.Now())
	if err != nil {
		return api.JoinResponse{}, err
	}
	hosts := append([]string{req.NodeID}, apiCSR.DNSNames...)
	for _, ip := range apiCSR.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	apiDER, err := issue(ca, signer, apiCSR.PublicKey, req.NodeID, hosts, false, time.Now())
	if err != nil {
		return api.JoinResponse{}, err
	}
	// The new node comes in as a non-voter, so that a node that never
	// starts cannot take the quorum away; it promotes itself once it has
	// caught up (promoteSelf).
	if err := n.store.AddNonvoter(ctx, req.NodeID, req.ClusterAddr); err != nil {
		return api.JoinResponse{}, err
	}
	return api.JoinResponse{NodeCert: string(pemCert(nodeDER)), APICert: string(pemCert(apiDER)), CACert: string(caPEM)}, nil
}

// spendJoinToken deletes the token's record if it is there and current:
// compare-and-delete, so two joins cannot spend one token.
func (n *Node) spendJoinToken(ctx context.Context, tok string) error {
	if !strings.HasPrefix(tok, "cjt_") || len(tok) > 128 {
		return errJoinToken
	}
	key := joinKey(tok)
	rec, err := n.barrier.Get(ctx, tableSys, key)
	if errors.Is(err, raftstore.ErrNotFound) {
		return errJoinToken
	}
	if err != nil {
		return err
	}
	res, err := n.barrier.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpCAS, Table: tableSys, Key: key, Old: rec, Delete: true}})
	if err != nil {
		return err
	}
	if !res.Succeeded {
		return errJoinToken
	}
	var jr joinRecord
	if err := json.Unmarshal(rec, &jr); err != nil || time.Now().After(jr.ExpiresAt) {
		return errJoinToken
	}
	return nil
}

func parseCSR(p, id string) (*x509.CertificateRequest, error) {
	blk, _ := pem.Decode([]byte(p))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: a PEM certificate request is required", kms.ErrInvalid)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate request: %v", kms.ErrInvalid, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: certificate request signature does not verify", kms.ErrInvalid)
	}
	if csr.Subject.CommonName != id {
		return nil, fmt.Errorf("%w: certificate request is for %q, not node %q", kms.ErrInvalid, csr.Subject.CommonName, id)
	}
	return csr, nil
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

// promoteSelf makes a newly joined node a voter once it has caught up with
// the leader. The request goes to the leader over the cluster port, with
// this node's certificate.
func (n *Node) promoteSelf() {
	defer n.wg.Done()
	for {
		select {
		case <-n.closing:
			return
		case <-time.After(200 * time.Millisecond):
		}
		st := n.store.Status()
		if st.LeaderID == "" || st.AppliedIndex == 0 || st.AppliedIndex+64 < st.CommitIndex {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := n.store.AddVoter(ctx, n.cfg.NodeID, n.store.Addr())
		cancel()
		if err == nil {
			return
		}
		n.log.Warn("promotion to voter", "error", err)
	}
}
