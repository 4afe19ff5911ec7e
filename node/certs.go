package node

import (
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
	caValidity   = 10 * 365 * 24 * time.Hour
	nodeValidity = 365 * 24 * time.Hour
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
func issue(ca *x509.Certificate, signer crypto.Signer, pub crypto.PublicKey, id string, hosts []string, cluster bool, now time.Time) ([]byte, error) {
	sn, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(nodeValidity),
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

// tlsFiles reads and writes the node's TLS files.
type tlsFiles struct{ dir string }

func (f tlsFiles) path(name string) string { return filepath.Join(f.dir, name) }

func (f tlsFiles) exist() bool {
	_, err := os.Stat(f.path(nodeFile))
	return err == nil
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

// save writes a full set: CA certificate, node and API key pairs.
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
		if err := f.write(w.name, w.data, w.mode); err != nil {
			return fmt.Errorf("write %s: %w", w.name, err)
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
	nodeDER, err := issue(ca, signer, nodeKey.Public(), id, nil, true, now)
	if err != nil {
		return err
	}
	apiDER, err := issue(ca, signer, apiKey.Public(), id, hosts, false, now)
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
