package stepca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
	stepacme "github.com/smallstep/certificates/acme"
	acmenosql "github.com/smallstep/certificates/acme/db/nosql"
	"github.com/smallstep/certificates/db"
	"golang.org/x/crypto/acme"
)

// issueWithURL issues a certificate for name and returns its chain as
// downloaded at finalisation and its URL.
func (e *env) issueWithURL(t *testing.T, c *acme.Client, name string) ([][]byte, string) {
	der, url, _ := e.issueOrder(t, c, name)
	return der, url
}

// issueOrder is issueWithURL that also returns the order's authorizations.
func (e *env) issueOrder(t *testing.T, c *acme.Client, name string) ([][]byte, string, []string) {
	t.Helper()
	ctx := context.Background()
	ids := acme.DomainIDs(name)
	order, err := c.AuthorizeOrder(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.solve(ctx, c, order, "http-01"); err != nil {
		t.Fatal(err)
	}
	der, url, err := c.CreateOrderCert(ctx, order.FinalizeURL, newCSR(nil, ids), true)
	if err != nil {
		t.Fatal(err)
	}
	return der, url, order.AuthzURLs
}

func sameChain(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d certificates, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: certificate %d differs", what, i)
		}
	}
}

func chainDER(c *stepacme.Certificate) [][]byte {
	out := [][]byte{c.Leaf.Raw}
	for _, x := range c.Intermediates {
		out = append(out, x.Raw)
	}
	return out
}

// TestACMECompactCertificate: an ACME certificate is stored as its
// account, order and a reference to its issuing chain (stored once), with
// no serial index entry and no copy in step's authority tables; the
// download returns the leaf and the issuing chain, byte for byte, at
// finalisation and later.
func TestACMECompactCertificate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	der, url, authzs := e.issueOrder(t, c, "compact.test")
	der2, _ := e.issueWithURL(t, c, "compact2.test")

	// A valid authorization keeps the challenge that was validated
	// (RFC 8555, 7.1.4); the others are deleted.
	az, err := c.GetAuthorization(ctx, authzs[0])
	if err != nil {
		t.Fatal(err)
	}
	if az.Status != acme.StatusValid || len(az.Challenges) != 1 || az.Challenges[0].Type != "http-01" || az.Challenges[0].Status != acme.StatusValid {
		t.Errorf("valid authorization: %s, %d challenges", az.Status, len(az.Challenges))
	}
	if n := e.rows(t, bucketChallenges); n != 2 {
		t.Errorf("%d challenges stored after two orders, want 2", n)
	}

	_, issuing, err := e.ca.issuer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der[0])
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{leaf.Raw}
	for _, x := range issuingChain(issuing) {
		want = append(want, x.Raw)
	}
	sameChain(t, "finalisation", der, want)
	again, err := c.FetchCert(ctx, url, true)
	if err != nil {
		t.Fatal(err)
	}
	sameChain(t, "download", again, want)

	for _, b := range []string{bucketCertBySerial, bucketX509, bucketX509Data} {
		if n := e.rows(t, b); n != 0 {
			t.Errorf("%s: %d records, want none", b, n)
		}
	}
	if n := e.rows(t, bucketCerts); n != 2 {
		t.Errorf("%d ACME certificate records, want 2", n)
	}
	if n, err := e.b.List(ctx, ChainTable, raftstore.ListOptions{}); err != nil || len(n.Items) != 1 {
		t.Errorf("chains: %v, %v; want one", n, err)
	}
	raw, err := e.b.Get(ctx, TablePrefix+bucketCerts, []byte(certID(leaf.SerialNumber)))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 100 || raw[0] != acmeCertBinary {
		t.Errorf("ACME certificate record of %d bytes: %x", len(raw), raw)
	}

	// Step's readers: by ID, by serial, and its authority's.
	byID, err := e.srv.acmeDB.GetCertificate(ctx, certID(leaf.SerialNumber))
	if err != nil {
		t.Fatal(err)
	}
	bySerial, err := e.srv.acmeDB.GetCertificateBySerial(ctx, leaf.SerialNumber.String())
	if err != nil {
		t.Fatal(err)
	}
	sameChain(t, "by ID", chainDER(byID), want)
	sameChain(t, "by serial", chainDER(bySerial), want)
	if byID.AccountID == "" || byID.AccountID != bySerial.AccountID || byID.OrderID == "" || byID.OrderID != bySerial.OrderID {
		t.Errorf("account %q/%q, order %q/%q", byID.AccountID, bySerial.AccountID, byID.OrderID, bySerial.OrderID)
	}
	got, err := e.srv.authDB.GetCertificate(leaf.SerialNumber.String())
	if err != nil || !bytes.Equal(got.Raw, leaf.Raw) {
		t.Fatalf("authority's certificate: %v", err)
	}
	data, err := e.srv.authDB.GetCertificateData(leaf.SerialNumber.String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.srv.Authority().LoadProvisionerByName("acme")
	if err != nil {
		t.Fatal(err)
	}
	if data.Provisioner == nil || *data.Provisioner != (db.ProvisionerData{ID: p.GetID(), Name: p.GetName(), Type: p.GetType().String()}) {
		t.Errorf("provisioner data %+v, want %s %s %s", data.Provisioner, p.GetID(), p.GetName(), p.GetType())
	}

	// Revocation by the account reads the certificate by serial.
	second, _ := x509.ParseCertificate(der2[0])
	if err := c.RevokeCert(ctx, nil, second.Raw, acme.CRLReasonSuperseded); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, ok := e.rec.revocation(second.SerialNumber.String()); !ok {
		t.Error("revocation not recorded")
	}
	// Another account may not download it.
	other := e.newACMEClient(t)
	if _, err := other.FetchCert(ctx, url, true); err == nil {
		t.Error("another account downloaded the certificate")
	}
}

// TestACMELegacyCertificateRecords: records step wrote before (JSON of
// PEM with a serial index entry; the authority's copy and provisioner
// data) are still read: download, revocation, and step's authority.
func TestACMELegacyCertificateRecords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	der, _ := e.issueWithURL(t, c, "legacy.test")
	leaf, err := x509.ParseCertificate(der[0])
	if err != nil {
		t.Fatal(err)
	}
	id := certID(leaf.SerialNumber)
	cur, err := e.srv.acmeDB.GetCertificate(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// Replace the record with the one step's code writes.
	old := &stepacme.Certificate{AccountID: cur.AccountID, OrderID: cur.OrderID, Leaf: cur.Leaf, Intermediates: cur.Intermediates}
	if _, err := e.b.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpDelete, Table: TablePrefix + bucketCerts, Key: []byte(id)}}); err != nil {
		t.Fatal(err)
	}
	step, err := acmenosql.New(e.srv.acmeDB.raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := step.CreateCertificate(ctx, old); err != nil {
		t.Fatal(err)
	}
	if old.ID == id || e.rows(t, bucketCertBySerial) != 1 {
		t.Fatalf("step's record: ID %s, %d serial entries", old.ID, e.rows(t, bucketCertBySerial))
	}
	byID, err := e.srv.acmeDB.GetCertificate(ctx, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameChain(t, "legacy by ID", chainDER(byID), der)
	bySerial, err := e.srv.acmeDB.GetCertificateBySerial(ctx, leaf.SerialNumber.String())
	if err != nil || bySerial.ID != old.ID {
		t.Fatalf("legacy by serial: %+v, %v", bySerial, err)
	}
	got, err := c.FetchCert(ctx, e.ts.URL+"/acme/acme/certificate/"+old.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	sameChain(t, "legacy download", got, der)
	if _, err := e.srv.acmeDB.GetCertificate(ctx, id); err == nil {
		t.Error("deleted record still read")
	}

	// The authority's copies, of a certificate the inventory does not know.
	e.rec.mu.Lock()
	delete(e.rec.certs, leaf.SerialNumber.String())
	e.rec.mu.Unlock()
	p, err := e.srv.Authority().LoadProvisionerByName("acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := (&db.DB{DB: e.srv.acmeDB.raw}).StoreCertificateChain(p, leaf); err != nil {
		t.Fatal(err)
	}
	crt, err := e.srv.authDB.GetCertificate(leaf.SerialNumber.String())
	if err != nil || !bytes.Equal(crt.Raw, leaf.Raw) {
		t.Fatalf("legacy authority certificate: %v", err)
	}
	data, err := e.srv.authDB.GetCertificateData(leaf.SerialNumber.String())
	if err != nil || data.Provisioner == nil || data.Provisioner.ID != p.GetID() {
		t.Fatalf("legacy provisioner data %+v, %v", data, err)
	}

	// Revocation by the account, through step's serial index.
	if err := c.RevokeCert(ctx, nil, leaf.Raw, acme.CRLReasonKeyCompromise); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if revoked, _ := e.srv.Authority().IsRevoked(leaf.SerialNumber.String()); !revoked {
		t.Error("step-ca does not see the revocation")
	}
}

// writeLegacy replaces the record of an ACME certificate with the ones
// step's code writes: its ACME record and serial entry, and its
// authority's copy and provisioner data.
func (e *env) writeLegacy(ctx context.Context, cur *stepacme.Certificate) error {
	if _, err := e.b.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpDelete, Table: TablePrefix + bucketCerts, Key: []byte(cur.ID)}}); err != nil {
		return err
	}
	step, err := acmenosql.New(e.srv.acmeDB.raw)
	if err != nil {
		return err
	}
	old := &stepacme.Certificate{AccountID: cur.AccountID, OrderID: cur.OrderID, Leaf: cur.Leaf, Intermediates: cur.Intermediates}
	if err := step.CreateCertificate(ctx, old); err != nil {
		return err
	}
	p, err := e.srv.Authority().LoadProvisionerByName("acme")
	if err != nil {
		return err
	}
	return (&db.DB{DB: e.srv.acmeDB.raw}).StoreCertificateChain(p, cur.Leaf)
}

// TestACMEJSONCertificateRecords: records custos stored as JSON before the
// binary form are still read, downloaded and collected.
func TestACMEJSONCertificateRecords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	der, url := e.issueWithURL(t, c, "json.test")
	leaf, err := x509.ParseCertificate(der[0])
	if err != nil {
		t.Fatal(err)
	}
	id := certID(leaf.SerialNumber)
	raw, err := e.b.Get(ctx, TablePrefix+bucketCerts, []byte(id))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := unmarshalACMECert(raw)
	if err != nil || rec.Account == "" || rec.Order == "" || rec.Chain == "" || rec.NotAfter != leaf.NotAfter.Unix() {
		t.Fatalf("stored record %+v, %v", rec, err)
	}
	old, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpPut, Table: TablePrefix + bucketCerts, Key: []byte(id), Value: old}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.FetchCert(ctx, url, true)
	if err != nil {
		t.Fatal(err)
	}
	sameChain(t, "download of a JSON record", got, der)
	bySerial, err := e.srv.acmeDB.GetCertificateBySerial(ctx, leaf.SerialNumber.String())
	if err != nil || bySerial.AccountID != rec.Account || bySerial.OrderID != rec.Order {
		t.Fatalf("by serial: %+v, %v", bySerial, err)
	}
	e.clock.Advance(time.Until(leaf.NotAfter) + time.Hour)
	if n, _, err := e.srv.CollectCertificates(ctx, time.Minute); err != nil || n != 1 || e.rows(t, bucketCerts) != 0 {
		t.Fatalf("collect: %d removed, %v; %d left", n, err, e.rows(t, bucketCerts))
	}
}

func TestACMECertRecordRoundTrip(t *testing.T) {
	for _, rec := range []acmeCert{
		{V: acmeCertVersion, Account: "acc", Order: "ord", NotAfter: 1767225600, Chain: "00112233445566778899aabbccddeeff"},
		{V: acmeCertVersion, Account: "a", Order: "o", NotAfter: -1, Leaf: []byte{0x30, 0x03, 0x02, 0x01, 0x01}},
	} {
		raw, err := rec.marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := unmarshalACMECert(raw)
		if err != nil || !reflect.DeepEqual(back, rec) {
			t.Fatalf("%+v reads back as %+v, %v", rec, back, err)
		}
	}
	for _, bad := range []acmeCert{{Chain: "not hex"}, {Chain: "0011"}, {Account: strings.Repeat("a", 256)}} {
		if _, err := bad.marshal(); err == nil {
			t.Errorf("%+v encoded", bad)
		}
	}
}

// FuzzACMECertRecord: what decodes encodes back to the same bytes.
func FuzzACMECertRecord(f *testing.F) {
	good, _ := (&acmeCert{Account: "acc", Order: "ord", NotAfter: 1, Chain: "00112233445566778899aabbccddeeff"}).marshal()
	f.Add(good)
	f.Add([]byte{acmeCertBinary})
	f.Add([]byte(`{"v":2,"a":"x","o":"y","n":5}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		rec, err := unmarshalACMECert(raw)
		if err != nil || len(raw) == 0 || raw[0] != acmeCertBinary {
			return
		}
		again, err := rec.marshal()
		if err != nil || !bytes.Equal(again, raw) {
			t.Fatalf("%x decodes to %+v, which encodes to %x (%v)", raw, rec, again, err)
		}
	})
}
