package stepca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// Step's tables of issued certificates.
const (
	bucketCerts        = "acme_certs"              // certificate ID -> acmeCert; step's: {leaf PEM, intermediates PEM, ...}
	bucketCertBySerial = "acme_serial_certs_index" // serial (decimal) -> {certificateID} (step's records only)
	bucketX509         = "x509_certs"              // serial (decimal) -> DER (step's authority, without a CertificateReader)
	bucketX509Data     = "x509_certs_data"         // serial (decimal) -> {provisioner} (idem)
)

// certCollectBatch is how many certificates one transaction of
// CollectCertificates removes.
const certCollectBatch = 256

// CollectCertificates deletes step's records of certificates that expired
// more than retention ago, which step keeps for ever: its ACME certificate
// records with their serial index entries, and its authority's copy of
// every certificate it signed with the provisioner data. They serve
// certificate downloads, ACME revocation and renewal, none of which means
// anything for an expired certificate; custos' own inventory (package ca)
// keeps its record by its own retention, and step's list of revoked
// serials is kept. A record whose certificate does not parse is left
// alone. Deletes go through Raft in transactions of certCollectBatch
// certificates. Run it on the leader. It returns the number of ACME
// certificate records and of authority records removed.
func (s *Server) CollectCertificates(ctx context.Context, retention time.Duration) (acme, authority int, err error) {
	if retention < 0 {
		return 0, 0, fmt.Errorf("stepca: collect certificates: retention %v must not be negative", retention)
	}
	if acme, err = s.collectACMECerts(ctx, retention); err != nil {
		return acme, 0, err
	}
	authority, err = s.collectAuthorityCerts(ctx, retention)
	return acme, authority, err
}

// batchDeleter applies deletes in transactions of certCollectBatch
// certificates.
type batchDeleter struct {
	s       *Server
	ops     []raftstore.Op
	pending int
	removed int
}

// add queues the deletes of one certificate.
func (d *batchDeleter) add(ctx context.Context, ops ...raftstore.Op) error {
	d.ops = append(d.ops, ops...)
	d.pending++
	if d.pending == certCollectBatch {
		return d.flush(ctx)
	}
	return nil
}

func (d *batchDeleter) flush(ctx context.Context) error {
	if len(d.ops) == 0 {
		return nil
	}
	if _, err := d.s.cfg.Storage.Txn(ctx, d.ops); err != nil {
		return fmt.Errorf("stepca: collect certificates: %w", err)
	}
	d.removed += d.pending
	d.ops, d.pending = d.ops[:0], 0
	return nil
}

// collectAuthorityCerts deletes step's authority records of certificates
// that expired before the retention.
func (s *Server) collectAuthorityCerts(ctx context.Context, retention time.Duration) (int, error) {
	cutoff := s.cfg.Clock.Now().Add(-retention)
	tCerts, tData := TablePrefix+bucketX509, TablePrefix+bucketX509Data
	d := &batchDeleter{s: s}
	err := listAll(ctx, s.cfg.Storage, tCerts, func(kv raftstore.KV) error {
		c, err := x509.ParseCertificate(kv.Value)
		if err != nil || !c.NotAfter.Before(cutoff) {
			return nil
		}
		return d.add(ctx,
			raftstore.Op{Kind: raftstore.OpDelete, Table: tCerts, Key: kv.Key},
			raftstore.Op{Kind: raftstore.OpDelete, Table: tData, Key: kv.Key})
	})
	if err != nil {
		return d.removed, err
	}
	return d.removed, d.flush(ctx)
}

// collectACMECerts deletes step's ACME certificate records of certificates
// that expired before the retention, with their serial index entries.
func (s *Server) collectACMECerts(ctx context.Context, retention time.Duration) (int, error) {
	cutoff := s.cfg.Clock.Now().Add(-retention)
	tCerts, tSerials := TablePrefix+bucketCerts, TablePrefix+bucketCertBySerial
	d := &batchDeleter{s: s}
	err := listAll(ctx, s.cfg.Storage, tCerts, func(kv raftstore.KV) error {
		if rec, err := unmarshalACMECert(kv.Value); err == nil && rec.V == acmeCertVersion {
			if rec.NotAfter == 0 || !time.Unix(rec.NotAfter, 0).Before(cutoff) {
				return nil
			}
			return d.add(ctx, raftstore.Op{Kind: raftstore.OpDelete, Table: tCerts, Key: kv.Key})
		}
		leaf, ok := acmeLeaf(kv.Value)
		if !ok || !leaf.NotAfter.Before(cutoff) {
			return nil
		}
		// Step writes a certificate record once and never changes it.
		return d.add(ctx,
			raftstore.Op{Kind: raftstore.OpDelete, Table: tCerts, Key: kv.Key},
			raftstore.Op{Kind: raftstore.OpDelete, Table: tSerials, Key: []byte(leaf.SerialNumber.String())})
	})
	if err != nil {
		return d.removed, err
	}
	return d.removed, d.flush(ctx)
}

// acmeLeaf parses the leaf of one of step's ACME certificate records.
func acmeLeaf(v []byte) (*x509.Certificate, bool) {
	var rec struct {
		Leaf []byte `json:"leaf"`
	}
	if json.Unmarshal(v, &rec) != nil {
		return nil, false
	}
	block, _ := pem.Decode(rec.Leaf)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, false
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil || c.SerialNumber == nil {
		return nil, false
	}
	return c, true
}
