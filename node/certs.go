package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The node's TLS files, under DataDir/tls. Private keys are 0600.
const (
	caFile      = "ca.pem"
	nodeFile    = "node.pem"
	nodeKeyFile = "node-key.pem"
	apiFile     = "api.pem"
	apiKeyFile  = "api-key.pem"
)

const (
	caValidity = 10 * 365 * 24 * time.Hour
	// certBackdate is how far before its issue a certificate is valid, for
	// clocks a little behind.
	certBackdate = 5 * time.Minute
)

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// newCACert makes the self-signed cluster CA certificate for signer.
func newCACert(signer crypto.Signer, name string, now time.Time) (*x509.Certificate, error) {
	sn, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"custos cluster"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// issue signs a leaf certificate for the node id. A cluster-port
// certificate names only the node ID (the cluster port checks exactly
// that); an API certificate also names the hosts clients use.
func issue(ca *x509.Certificate, signer crypto.Signer, pub crypto.PublicKey, id string, hosts []string, cluster bool, now time.Time, ttl time.Duration) ([]byte, error) {
	sn, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    now.Add(-certBackdate),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if cluster {
		tmpl.DNSNames = []string{id}
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	} else {
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if h != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, signer)
	if err != nil {
		return nil, err
	}
	// Check the signature with the CA's public key before handing it out.
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("issued certificate does not verify: %w", err)
	}
	return der, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Fingerprint is the hex SHA-256 of a certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// tlsFiles reads and writes the node's TLS files; ttl is the lifetime of
// the certificates it issues.
type tlsFiles struct {
	dir string
	ttl time.Duration
}

func (f tlsFiles) path(name string) string { return filepath.Join(f.dir, name) }

func (f tlsFiles) exist() bool {
	for _, name := range []string{nodeFile, commitFile} {
		if _, err := os.Stat(f.path(name)); err == nil {
			return true
		}
	}
	return false
}

// write stores a file of the TLS directory atomically.
func (f tlsFiles) write(name string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	return writeFileAtomic(f.path(name), data, mode)
}

// writeFileAtomic writes a file through a synced temporary file and a rename,
// so that a crash leaves the old content or the new, never a part.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := out.Write(data); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// material is the node's loaded TLS state.
type material struct {
	ca    *x509.Certificate
	caPEM []byte
	pool  *x509.CertPool
	node  tls.Certificate
	api   tls.Certificate
}

func (f tlsFiles) load() (*material, error) {
	if err := f.recover(); err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(f.path(caFile))
	if err != nil {
		return nil, err
	}
	ca, err := parseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caFile, err)
	}
	m := &material{ca: ca, caPEM: caPEM, pool: x509.NewCertPool()}
	m.pool.AddCert(ca)
	if m.node, err = tls.LoadX509KeyPair(f.path(nodeFile), f.path(nodeKeyFile)); err != nil {
		return nil, err
	}
	if m.api, err = tls.LoadX509KeyPair(f.path(apiFile), f.path(apiKeyFile)); err != nil {
		return nil, err
	}
	// Serve the CA with the API certificate, so a client pinning the CA
	// fingerprint sees it in the chain.
	m.api.Certificate = append(m.api.Certificate, ca.Raw)
	return m, nil
}

// save writes a full set: CA certificate, node and API key pairs. The set
// changes as a whole: every file is written beside its old one as .next,
// a commit marker makes the new set the one to use, and only then are the
// files renamed into place. load finishes a committed set that a crash
// interrupted, and drops one that was not committed.
func (f tlsFiles) save(caDER, nodeDER []byte, nodeKey *ecdsa.PrivateKey, apiDER []byte, apiKey *ecdsa.PrivateKey) error {
	nk, err := pemKey(nodeKey)
	if err != nil {
		return err
	}
	ak, err := pemKey(apiKey)
	if err != nil {
		return err
	}
	for _, w := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{nodeKeyFile, nk, 0o600}, {nodeFile, pemCert(nodeDER), 0o644},
		{apiKeyFile, ak, 0o600}, {apiFile, pemCert(apiDER), 0o644},
		{caFile, pemCert(caDER), 0o644},
	} {
		if err := f.write(w.name+nextSuffix, w.data, w.mode); err != nil {
			return fmt.Errorf("write %s: %w", w.name, err)
		}
	}
	if err := f.write(commitFile, nil, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", commitFile, err)
	}
	return f.finish()
}

const (
	nextSuffix = ".next"
	commitFile = "commit"
)

var setFiles = []string{nodeKeyFile, nodeFile, apiKeyFile, apiFile, caFile}

// finish renames a committed set into place; it may run again after a
// crash in the middle.
func (f tlsFiles) finish() error {
	for _, name := range setFiles {
		err := os.Rename(f.path(name+nextSuffix), f.path(name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("install %s: %w", name, err)
		}
	}
	if err := syncDir(f.dir); err != nil {
		return err
	}
	if err := os.Remove(f.path(commitFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(f.dir)
}

// recover completes or drops a set that save left half-written.
func (f tlsFiles) recover() error {
	if _, err := os.Stat(f.path(commitFile)); err == nil {
		return f.finish()
	}
	for _, name := range setFiles {
		if err := os.Remove(f.path(name + nextSuffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// issueSet makes fresh node and API key pairs for id, signed by the CA, and
// saves them with the CA certificate.
func (f tlsFiles) issueSet(ca *x509.Certificate, signer crypto.Signer, id string, hosts []string, now time.Time) error {
	nodeKey, err := newKey()
	if err != nil {
		return err
	}
	apiKey, err := newKey()
	if err != nil {
		return err
	}
	nodeDER, err := issue(ca, signer, nodeKey.Public(), id, nil, true, now, f.ttl)
	if err != nil {
		return err
	}
	apiDER, err := issue(ca, signer, apiKey.Public(), id, hosts, false, now, f.ttl)
	if err != nil {
		return err
	}
	return f.save(ca.Raw, nodeDER, nodeKey, apiDER, apiKey)
}

// csrPEM makes a certificate request for id with the given host names.
func csrPEM(key *ecdsa.PrivateKey, id string, hosts []string) (string, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// Renewal. Each node renews its own cluster and API certificates at two
// thirds of their lifetime (Config.NodeCertTTL), signing them with the
// cluster CA key through its key manager, so only an unsealed node can.
// New keys every time; the names stay those of the current certificates,
// so a joined node keeps exactly what its join token allowed. The new
// certificates go into the API listener and the cluster port at once
// (both read them through an atomic pointer); open connections keep
// theirs. A node sealed past its certificates' expiry can no longer reach
// its peers: remove it and join it again.

// renewAt is when cert is due: at two thirds of its lifetime, or now if it
// outlives the configured lifetime (the setting was lowered).
func renewAt(cert *x509.Certificate, ttl time.Duration, now time.Time) time.Time {
	if cert.NotAfter.Sub(now) > ttl+time.Minute {
		return now
	}
	issued := cert.NotBefore.Add(certBackdate)
	return issued.Add(cert.NotAfter.Sub(issued) * 2 / 3)
}

func leafOf(c tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// certHosts lists the DNS names and IP addresses a certificate names.
func certHosts(c *x509.Certificate) []string {
	hosts := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	return hosts
}

// renewalDue is when the first of the node's certificates is due.
func (m *material) renewalDue(ttl time.Duration, now time.Time) (time.Time, error) {
	nodeLeaf, err := leafOf(m.node)
	if err != nil {
		return time.Time{}, err
	}
	apiLeaf, err := leafOf(m.api)
	if err != nil {
		return time.Time{}, err
	}
	due := renewAt(nodeLeaf, ttl, now)
	if a := renewAt(apiLeaf, ttl, now); a.Before(due) {
		due = a
	}
	return due, nil
}

// renewCerts renews the node's certificates when due, for as long as the
// node runs.
func (n *Node) renewCerts() {
	defer n.wg.Done()
	check := min(max(n.cfg.NodeCertTTL/20, 100*time.Millisecond), time.Minute)
	var lastWarn time.Time
	base, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		select {
		case <-n.closing:
			stop()
		case <-base.Done():
		}
	}()
	for {
		wait := check
		now := time.Now()
		due, err := n.mat.Load().renewalDue(n.cfg.NodeCertTTL, now)
		if err == nil && !due.After(now) {
			ctx, cancel := context.WithTimeout(base, 30*time.Second)
			err = n.renewNow(ctx)
			cancel()
		} else if err == nil && due.Sub(now) < wait {
			wait = due.Sub(now)
		}
		if err != nil && time.Since(lastWarn) > 10*time.Minute {
			n.log.Warn("node certificates are due for renewal and could not be renewed", "error", err)
			lastWarn = time.Now()
		}
		select {
		case <-n.closing:
			return
		case <-time.After(wait):
		}
	}
}

// renewNow issues a new pair of node certificates with the names of the
// current ones and puts them in use.
func (n *Node) renewNow(ctx context.Context) error {
	svc, err := n.Services()
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	mat := n.mat.Load()
	signer, err := svc.KMS.Signer(ctx, clusterCAKey, 0)
	if err != nil {
		return fmt.Errorf("renew: cluster CA key: %w", err)
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(mat.ca.PublicKey) {
		return errors.New("renew: the node's CA certificate is not the cluster CA's")
	}
	apiLeaf, err := leafOf(mat.api)
	if err != nil {
		return err
	}
	nodeKey, err := newKey()
	if err != nil {
		return err
	}
	apiKey, err := newKey()
	if err != nil {
		return err
	}
	// The clock is read here, not when the renewal was found due: getting
	// the signer may have waited for the cluster.
	now := time.Now()
	nodeDER, err := issue(mat.ca, signer, nodeKey.Public(), n.cfg.NodeID, nil, true, now, n.cfg.NodeCertTTL)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	apiDER, err := issue(mat.ca, signer, apiKey.Public(), n.cfg.NodeID, certHosts(apiLeaf), false, now, n.cfg.NodeCertTTL)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := n.files.save(mat.ca.Raw, nodeDER, nodeKey, apiDER, apiKey); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := n.reloadTLS(); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	n.log.Info("renewed the node certificates")
	return nil
}
