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

// Step's tables of issued ACME certificates.
const (
	bucketCerts        = "acme_certs"              // certificate ID -> {leaf PEM, intermediates PEM, ...}
	bucketCertBySerial = "acme_serial_certs_index" // serial (decimal) -> {certificateID}
)

// certCollectBatch is how many certificates one transaction of
// CollectCertificates removes.
const certCollectBatch = 256

// CollectCertificates deletes step's records of ACME certificates that
// expired more than retention ago, with their serial index entries; step
// keeps them for ever. They serve certificate downloads and ACME
// revocation, neither of which means anything for an expired certificate;
// custos' own inventory (package ca) keeps its record by its own retention.
// A record whose leaf does not parse is left alone. Deletes go through Raft
// in transactions of certCollectBatch certificates. Run it on the leader.
func (s *Server) CollectCertificates(ctx context.Context, retention time.Duration) (int, error) {
	if retention < 0 {
		return 0, fmt.Errorf("stepca: collect certificates: retention %v must not be negative", retention)
	}
	cutoff := s.cfg.Clock.Now().Add(-retention)
	tCerts, tSerials := TablePrefix+bucketCerts, TablePrefix+bucketCertBySerial
	var ops []raftstore.Op
	removed, pending := 0, 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, err := s.cfg.Storage.Txn(ctx, ops); err != nil {
			return fmt.Errorf("stepca: collect certificates: %w", err)
		}
		removed += pending
		ops, pending = ops[:0], 0
		return nil
	}
	err := listAll(ctx, s.cfg.Storage, tCerts, func(kv raftstore.KV) error {
		leaf, ok := acmeLeaf(kv.Value)
		if !ok || !leaf.NotAfter.Before(cutoff) {
			return nil
		}
		// Step writes a certificate record once and never changes it.
		ops = append(ops,
			raftstore.Op{Kind: raftstore.OpDelete, Table: tCerts, Key: kv.Key},
			raftstore.Op{Kind: raftstore.OpDelete, Table: tSerials, Key: []byte(leaf.SerialNumber.String())})
		pending++
		if pending == certCollectBatch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return removed, err
	}
	return removed, flush()
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
