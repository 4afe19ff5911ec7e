package node

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/ca/stepca"
)

// inventory adapts package ca to what step-ca tells and asks: it records
// every certificate step issues and every revocation it performs in the one
// inventory, and answers whether a certificate was revoked elsewhere.
type inventory struct{ *ca.CA }

var (
	_ stepca.RevocationRecorder = inventory{}
	_ stepca.RevocationChecker  = inventory{}
	_ stepca.OriginTeller       = inventory{}
	_ stepca.CertificateReader  = inventory{}
	_ stepca.RecordPreparer     = inventory{}
)

// PrepareRecord gives step-ca the record of a certificate it signed for
// an ACME order, so that the finalisation writes it with the order.
func (i inventory) PrepareRecord(ctx context.Context, cert *x509.Certificate, source, role string) (stepca.PreparedRecord, error) {
	p, err := i.CA.PrepareRecord(ctx, cert, source, role)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Certificate gives step-ca a recorded certificate, so that it need not
// keep copies of its own.
func (i inventory) Certificate(ctx context.Context, serial *big.Int) (*x509.Certificate, error) {
	c, err := i.Get(ctx, hex.EncodeToString(serial.Bytes()))
	if errors.Is(err, ca.ErrNotFound) {
		return nil, stepca.ErrNotRecorded
	}
	if err != nil {
		return nil, err
	}
	return c.Certificate, nil
}

// Origin tells step-ca the source and role a certificate was recorded
// under, so that a renewal is checked against the policy that issued it.
func (i inventory) Origin(ctx context.Context, serial *big.Int) (stepca.Origin, error) {
	c, err := i.Get(ctx, hex.EncodeToString(serial.Bytes()))
	if errors.Is(err, ca.ErrNotFound) {
		return stepca.Origin{}, stepca.ErrNotRecorded
	}
	if err != nil {
		return stepca.Origin{}, err
	}
	return stepca.Origin{Source: c.Source, Role: c.Role, Revoked: c.Status == ca.StatusRevoked}, nil
}

func (i inventory) RecordRevocation(ctx context.Context, serial *big.Int, reason int, _ string) error {
	_, err := i.Revoke(ctx, hex.EncodeToString(serial.Bytes()), reason)
	if errors.Is(err, ca.ErrAlreadyRevoked) {
		return nil
	}
	return err
}

func (i inventory) IsRevoked(ctx context.Context, serial *big.Int) (bool, error) {
	c, err := i.Get(ctx, hex.EncodeToString(serial.Bytes()))
	if errors.Is(err, ca.ErrNotFound) {
		return false, nil
	}
	return err == nil && c.Status == ca.StatusRevoked, err
}

// startStep embeds step-ca (ACME and step's API) once the CA has issuers.
func (n *Node) startStep(ctx context.Context, c *ca.CA) (*stepca.Server, error) {
	if _, err := c.Roots(ctx); err != nil {
		return nil, nil // not initialised yet: Init starts it
	}
	pw, err := n.stepPassword(ctx)
	if err != nil {
		return nil, err
	}
	cfg := stepca.DefaultConfig()
	cfg.Storage, cfg.Issuer, cfg.Roots, cfg.Recorder, cfg.Roles = n.barrier, c.Issuer, c.Roots, inventory{c}, c
	cfg.Template = c.SetURLs
	cfg.SignTemplate = c.SignTemplate
	cfg.BaseURL = n.cfg.ACMEBaseURL
	cfg.Hosts, cfg.FederatedRoots = n.stepHosts, n.clusterCARoots
	cfg.DNSResolver = n.cfg.ACMEResolver
	if n.cfg.ACMEHTTP01Port != 0 {
		cfg.HTTP01Port = n.cfg.ACMEHTTP01Port
	}
	if n.cfg.ACMETLSALPN01Port != 0 {
		cfg.TLSALPN01Port = n.cfg.ACMETLSALPN01Port
	}
	cfg.ValidatorDeny, _ = n.cfg.validatorDeny() // checked by Validate at start
	cfg.ListenAddrs = n.cfg.ownAddrs(ctx, n.boundAddrs()...)
	cfg.JWKProvisioner, cfg.JWKPassword = "custos", pw
	cfg.RateLimits = n.cfg.Limits.ACME
	return stepca.New(ctx, cfg)
}

// stepPassword returns the JWK provisioner password, made once and kept in
// the sys table so that every node opens the same key.
func (n *Node) stepPassword(ctx context.Context) ([]byte, error) {
	pw := make([]byte, 32)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	enc := []byte(hex.EncodeToString(pw))
	return n.sys().stepJWKPassword(ctx, enc)
}

// acmeCollectGrace is how long after their expiry ACME orders and
// authorisations are kept. RFC 8555 gives an expired order or
// authorisation no use (7.1.3, 7.1.4: it is invalid once expired), and
// step-ca, unlike Boulder, never reuses an authorisation for a later
// order; the hour absorbs clock skew between nodes.
const acmeCollectGrace = time.Hour

// collectACME deletes expired ACME orders, authorisations and challenges,
// on the leader, now and then.
func (n *Node) collectACME(ctx context.Context, s *stepca.Server) {
	n.onLeaderEvery(ctx, time.Hour, "ACME collection", func(ctx context.Context) error {
		_, err := s.Collect(ctx, acmeCollectGrace)
		return err
	})
}
