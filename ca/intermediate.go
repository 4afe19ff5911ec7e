package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"slices"
	"time"
)

// RotateIntermediate makes a new intermediate, signed by the root in the
// KMS, and makes it active. The old one is retired: it signs nothing more
// but its CRL and OCSP answers are kept until it expires. With an external
// root it fails with ErrExternalRoot.
func (c *CA) RotateIntermediate(ctx context.Context) ([]*x509.Certificate, error) {
	set, err := c.updateState(ctx, func(st *state) error {
		if st.Active == "" {
			return ErrNotInitialized
		}
		if st.RootKey == "" {
			return ErrExternalRoot
		}
		cur, err := parseState(st, nil)
		if err != nil {
			return err
		}
		root := cur.active.chain[len(cur.active.chain)-1]
		rootSigner, err := c.kms.Signer(ctx, st.RootKey, 0)
		if err != nil {
			return err
		}
		if !samePublicKey(root.PublicKey, rootSigner.Public()) {
			return fmt.Errorf("ca: the active chain does not end at the root key %s", st.RootKey)
		}
		rec, err := c.newIntermediate(ctx, st.Next, st.CommonName, st.KeyType, root, rootSigner, st.IntermediateTTL)
		if err != nil {
			return err
		}
		st.retire(c.now())
		st.Issuers, st.Active, st.Next = append(st.Issuers, rec), rec.ID, st.Next+1
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rotate intermediate: %w", err)
	}
	c.firstCRL(ctx, set.active.id)
	return slices.Clone(set.active.chain), nil
}

// retire marks the active intermediate retired.
func (st *state) retire(now time.Time) {
	for i := range st.Issuers {
		if st.Issuers[i].ID == st.Active {
			st.Issuers[i].Retired = now
		}
	}
}

// IntermediateCSR returns, in PEM, a certificate request for a new
// intermediate key, to be signed by an external root and installed with
// SetIntermediate. It works before Init too. Until SetIntermediate, every
// call returns a request for the same pending key.
func (c *CA) IntermediateCSR(ctx context.Context) ([]byte, error) {
	set, err := c.updateState(ctx, func(st *state) error {
		if st.Pending != nil {
			return errNoChange
		}
		_, version, err := c.ensureKey(ctx, intKeyName(st.Next), st.KeyType)
		if err != nil {
			return err
		}
		st.Pending = &pendingKey{
			ID: intID(st.Next), Key: intKeyName(st.Next), KeyVersion: version,
			CommonName: fmt.Sprintf("%s Intermediate %d", st.CommonName, st.Next),
		}
		st.Next++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("intermediate csr: %w", err)
	}
	p := set.st.Pending
	signer, err := c.kms.Signer(ctx, p.Key, p.KeyVersion)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: p.CommonName}}, signer)
	if err != nil {
		return nil, fmt.Errorf("intermediate csr: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, fmt.Errorf("intermediate csr: the signature does not verify: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// SetIntermediate installs the certificate of the pending key (see
// IntermediateCSR) as the active intermediate. certPEM holds the
// intermediate first, then its issuers up to the root; the root may be left
// out when it is one this CA already has. The certificate must be a CA
// certificate for the pending key that may sign certificates and CRLs and
// is valid now; the chain must verify. The previous intermediate is retired.
func (c *CA) SetIntermediate(ctx context.Context, certPEM []byte) error {
	certs, err := parsePEMCerts(certPEM)
	if err != nil {
		return err
	}
	cert := certs[0]
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return fmt.Errorf("%w: the certificate is not a CA certificate", ErrInvalid)
	case cert.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
		return fmt.Errorf("%w: the certificate's key usage must allow signing certificates and CRLs", ErrInvalid)
	}
	set, err := c.updateState(ctx, func(st *state) error {
		p := st.Pending
		if p == nil {
			return fmt.Errorf("%w: no intermediate key is pending: call IntermediateCSR first", ErrInvalid)
		}
		pub, err := c.kms.PublicKey(ctx, p.Key, p.KeyVersion)
		if err != nil {
			return err
		}
		if !samePublicKey(cert.PublicKey, pub) {
			return fmt.Errorf("%w: the certificate is not for the pending intermediate key", ErrInvalid)
		}
		chain, err := c.verifyChain(st, certs)
		if err != nil {
			return err
		}
		rec := issuerRecord{ID: p.ID, Key: p.Key, KeyVersion: p.KeyVersion}
		for _, cc := range chain {
			rec.Chain = append(rec.Chain, cc.Raw)
		}
		if st.RootKey != "" {
			rootPub, err := c.kms.PublicKey(ctx, st.RootKey, 0)
			if err != nil {
				return err
			}
			if !samePublicKey(chain[len(chain)-1].PublicKey, rootPub) {
				st.RootKey = "" // from now on the root is external
			}
		}
		st.retire(c.now())
		st.Issuers, st.Active, st.Pending = append(st.Issuers, rec), rec.ID, nil
		return nil
	})
	if err != nil {
		return fmt.Errorf("set intermediate: %w", err)
	}
	c.firstCRL(ctx, set.active.id)
	return nil
}

// verifyChain completes certs with a known root if it lacks one and checks
// that it verifies now; it returns the chain from certs[0] to the root.
func (c *CA) verifyChain(st *state, certs []*x509.Certificate) ([]*x509.Certificate, error) {
	chain := slices.Clone(certs)
	last := chain[len(chain)-1]
	if last.CheckSignatureFrom(last) != nil { // not self-signed: find its root
		known, err := parseState(st, nil)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(known.roots, func(r *x509.Certificate) bool { return last.CheckSignatureFrom(r) == nil })
		if i < 0 {
			return nil, fmt.Errorf("%w: the chain must end at a self-signed root, or at an issuer of a root this CA has", ErrInvalid)
		}
		chain = append(chain, known.roots[i])
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	for _, cc := range chain[1 : len(chain)-1] {
		inter.AddCert(cc)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: c.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("%w: the chain does not verify: %v", ErrInvalid, err)
	}
	if c.now().Add(c.cfg.MaxTTL).After(chain[0].NotAfter) {
		return nil, fmt.Errorf("%w: the intermediate expires within MaxTTL (%v)", ErrInvalid, c.cfg.MaxTTL)
	}
	return chain, nil
}

// parsePEMCerts parses every CERTIFICATE block of b; there must be one.
func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %q, want CERTIFICATE", ErrInvalid, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate: %v", ErrInvalid, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no PEM certificate", ErrInvalid)
	}
	return certs, nil
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
