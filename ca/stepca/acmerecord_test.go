package stepca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"golang.org/x/crypto/acme"
)

// inventoryCerts is the table of custos' inventory (package ca).
const inventoryCerts = "ca.certs"

// caInventory is custos' CA as node/acme.go gives it to step-ca.
type caInventory struct{ *ca.CA }

var _ interface {
	Recorder
	RecordPreparer
	CertificateReader
	OriginTeller
} = caInventory{}

func (i caInventory) find(ctx context.Context, serial *big.Int) (ca.Cert, error) {
	c, err := i.Get(ctx, hex.EncodeToString(serial.Bytes()))
	if errors.Is(err, ca.ErrNotFound) {
		err = ErrNotRecorded
	}
	return c, err
}

func (i caInventory) Certificate(ctx context.Context, serial *big.Int) (*x509.Certificate, error) {
	c, err := i.find(ctx, serial)
	return c.Certificate, err
}

func (i caInventory) Origin(ctx context.Context, serial *big.Int) (Origin, error) {
	c, err := i.find(ctx, serial)
	return Origin{Source: c.Source, Role: c.Role, Revoked: c.Status == ca.StatusRevoked}, err
}

func (i caInventory) PrepareRecord(ctx context.Context, cert *x509.Certificate, source, role string) (PreparedRecord, error) {
	p, err := i.CA.PrepareRecord(ctx, cert, source, role)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// caClock stands still, so that two records of one certificate made at
// different times read the same.
type caClock struct{ t time.Time }

func (c caClock) Now() time.Time { return c.t }

// inventoryEnv is an env over custos' CA (its issuer, roots and inventory,
// on the env's storage), whose storage notes its transactions.
func inventoryEnv(t *testing.T) (*env, *writeLog, *ca.CA) {
	t.Helper()
	ctx := context.Background()
	wl := &writeLog{}
	var authority *ca.CA
	e := newEnv(t, func(c *Config) {
		b := c.Storage.(*kms.Barrier)
		wl.Storage, c.Storage = b, wl
		k, err := kms.New(b, kms.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		cfg := ca.DefaultConfig()
		cfg.Storage, cfg.KMS, cfg.Clock, cfg.IsLeader = wl, k, caClock{time.Now()}, func() bool { return true }
		if authority, err = ca.New(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := authority.Init(ctx, ca.InitOptions{}); err != nil {
			t.Fatal(err)
		}
		c.Issuer, c.Roots, c.Recorder = authority.Issuer, authority.Roots, caInventory{authority}
	})
	roots, err := authority.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.ca.root = roots[0] // for e.ca.verify
	wl.take()
	return e, wl, authority
}

// inventoryWrites returns the writes to the inventory's tables among txns,
// and whether they were made with an ACME order.
func inventoryWrites(txns [][]raftstore.Op) (ops []raftstore.Op, withOrder bool) {
	for _, txn := range txns {
		if !slices.ContainsFunc(txn, func(op raftstore.Op) bool { return op.Table == inventoryCerts }) {
			continue
		}
		for _, op := range txn {
			switch op.Table {
			case inventoryCerts, "ca.index":
				ops = append(ops, op)
			case TablePrefix + bucketOrders:
				withOrder = true
			}
		}
	}
	return ops, withOrder
}

// TestACMERecordAsRecord: the inventory record of an ACME certificate,
// written with its order, is the one ca.Record writes for the same
// certificate, byte for byte, with the same index entries.
func TestACMERecordAsRecord(t *testing.T) {
	e, wl, authority := inventoryEnv(t)
	ctx := context.Background()
	chain, err := e.issue(ctx, e.newACMEClient(t), "http-01", acme.DomainIDs("record.test"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	serial := hex.EncodeToString(leaf.SerialNumber.Bytes())
	acmeOps, withOrder := inventoryWrites(wl.takeOps())
	if !withOrder || len(acmeOps) == 0 {
		t.Fatalf("the inventory record was written in a transaction of its own (%d writes)", len(acmeOps))
	}
	acmeRaw, err := wl.Storage.Get(ctx, inventoryCerts, []byte(serial))
	if err != nil {
		t.Fatal(err)
	}
	acmeCert, err := authority.Get(ctx, serial)
	if err != nil {
		t.Fatal(err)
	}
	if acmeCert.Source != SourceACME || acmeCert.Role != "acme" {
		t.Fatalf("recorded under %s/%s, want acme/acme", acmeCert.Source, acmeCert.Role)
	}

	// Remove what the finalisation wrote and record the certificate again.
	var del []raftstore.Op
	for _, op := range acmeOps {
		del = append(del, raftstore.Op{Kind: raftstore.OpDelete, Table: op.Table, Key: op.Key})
	}
	if _, err := wl.Storage.Txn(ctx, del); err != nil {
		t.Fatal(err)
	}
	if _, err := authority.Get(ctx, serial); !errors.Is(err, ca.ErrNotFound) {
		t.Fatalf("after the delete: %v, want not found", err)
	}
	if err := authority.Record(ctx, leaf, acmeCert.Source, acmeCert.Role); err != nil {
		t.Fatal(err)
	}
	recordOps, _ := inventoryWrites(wl.takeOps())
	recordRaw, err := wl.Storage.Get(ctx, inventoryCerts, []byte(serial))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(acmeRaw, recordRaw) {
		t.Errorf("the record differs:\nfinalize %x\nRecord   %x", acmeRaw, recordRaw)
	}
	if len(acmeOps) != len(recordOps) {
		t.Fatalf("finalize wrote %d inventory writes, Record %d", len(acmeOps), len(recordOps))
	}
	for i, a := range acmeOps {
		r := recordOps[i]
		if a.Kind != r.Kind || a.Table != r.Table || !bytes.Equal(a.Key, r.Key) || !bytes.Equal(a.Old, r.Old) || !bytes.Equal(a.Value, r.Value) {
			t.Errorf("write %d: finalize %v %s/%s, Record %v %s/%s, or their values differ", i, a.Kind, a.Table, a.Key, r.Kind, r.Table, r.Key)
		}
	}
	got, err := authority.Get(ctx, serial)
	if err != nil {
		t.Fatal(err)
	}
	if got.Serial != acmeCert.Serial || got.Issuer != acmeCert.Issuer || got.Source != acmeCert.Source || got.Role != acmeCert.Role ||
		got.Status != acmeCert.Status || !got.Recorded.Equal(acmeCert.Recorded) || !bytes.Equal(got.Certificate.Raw, acmeCert.Certificate.Raw) {
		t.Errorf("Get after Record: %+v, after finalize: %+v", got, acmeCert)
	}
}

// TestACMERecordFinalizeFails: a finalisation whose write fails (here a
// storage error on its transaction) still leaves the certificate it
// signed in the inventory, though it is never handed out. The client's
// retry of the finalisation gets another certificate.
func TestACMERecordFinalizeFails(t *testing.T) {
	e, wl, authority := inventoryEnv(t)
	ctx := context.Background()
	var mu sync.Mutex
	var failed []byte // the serial of the finalisation made to fail
	wl.set(func(ops []raftstore.Op) error {
		mu.Lock()
		defer mu.Unlock()
		inv, withOrder := inventoryWrites([][]raftstore.Op{ops})
		if failed != nil || !withOrder {
			return nil
		}
		failed = inv[0].Key
		return errors.New("injected storage failure")
	}, nil)
	chain, err := e.issue(ctx, e.newACMEClient(t), "http-01", acme.DomainIDs("fails.test"))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if failed == nil {
		t.Fatal("no finalisation was made to fail")
	}
	served := hex.EncodeToString(chain[0].SerialNumber.Bytes())
	if served == string(failed) {
		t.Fatalf("the certificate of the failed finalisation (%s) was handed out", failed)
	}
	for _, s := range []string{string(failed), served} {
		c, err := authority.Get(ctx, s)
		if err != nil {
			t.Fatalf("certificate %s: %v", s, err)
		}
		if c.Source != SourceACME {
			t.Errorf("certificate %s recorded under %s", s, c.Source)
		}
	}
}

// TestACMERecordUnclaimed: a record that no finalisation claims in time
// (here its finalisation is held up by a slow storage read) is written
// alone, and the finalisation, when it comes, writes the rest.
func TestACMERecordUnclaimed(t *testing.T) {
	e, wl, authority := inventoryEnv(t)
	ctx := context.Background()
	p := e.srv.authDB.parked
	p.mu.Lock()
	p.claimWithin = time.Millisecond
	p.mu.Unlock()
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	wl.set(nil, func(table string) {
		if table == ChainTable { // in the finalisation, between signing and storing
			<-release
		}
	})
	type result struct {
		chain []*x509.Certificate
		err   error
	}
	done := make(chan result, 1)
	go func() {
		chain, err := e.issue(ctx, e.newACMEClient(t), "http-01", acme.DomainIDs("unclaimed.test"))
		done <- result{chain, err}
	}()
	var recorded []ca.Cert
	for deadline := time.Now().Add(20 * time.Second); len(recorded) == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		page, err := authority.List(ctx, ca.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		recorded = page.Certs
	}
	once.Do(func() { close(release) })
	r := <-done
	if len(recorded) != 1 {
		t.Fatalf("%d certificates recorded while the finalisation was held up, want 1", len(recorded))
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := hex.EncodeToString(r.chain[0].SerialNumber.Bytes()); got != recorded[0].Serial {
		t.Fatalf("served %s, recorded %s", got, recorded[0].Serial)
	}
	if _, withOrder := inventoryWrites(wl.takeOps()); withOrder {
		t.Error("the record was written again with the order")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.m) != 0 {
		t.Errorf("%d records still parked", len(p.m))
	}
}

// TestACMERecordPastCap: past maxParked records parked at once, a
// certificate is recorded when it is signed, in a transaction of its own.
func TestACMERecordPastCap(t *testing.T) {
	e, wl, authority := inventoryEnv(t)
	ctx := context.Background()
	p := e.srv.authDB.parked
	p.mu.Lock()
	p.max = 0
	p.mu.Unlock()
	chain, err := e.issue(ctx, e.newACMEClient(t), "http-01", acme.DomainIDs("cap.test"))
	if err != nil {
		t.Fatal(err)
	}
	if ops, withOrder := inventoryWrites(wl.takeOps()); len(ops) == 0 || withOrder {
		t.Errorf("%d inventory writes, with the order: %v; want them alone", len(ops), withOrder)
	}
	if _, err := authority.Get(ctx, hex.EncodeToString(chain[0].SerialNumber.Bytes())); err != nil {
		t.Fatal(err)
	}
}
