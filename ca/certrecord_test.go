package ca

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// A record round-trips through the binary form, which is smaller than the
// JSON one earlier versions wrote.
func TestCertRecordBinary(t *testing.T) {
	c, _ := newTestCA(t)
	got, err := c.Sign(bg, "web", csrFor(t, p256(t), "www.example.com", nil, nil), SignOptions{})
	must(t, err)
	now := time.Now().UTC().Truncate(time.Second)
	for name, rec := range map[string]certRecord{
		"valid":   {Serial: got.Serial, Issuer: "int-1", Source: "rest", Role: "web", NotAfter: got.Certificate.NotAfter, Recorded: now, DER: got.Certificate.Raw},
		"revoked": {Serial: got.Serial, Issuer: "int-1", Source: "acme", NotAfter: got.Certificate.NotAfter, Recorded: now, RevokedAt: now.Add(time.Hour), Reason: 4, DER: got.Certificate.Raw},
	} {
		raw, err := rec.marshal()
		must(t, err)
		back, err := unmarshalRecord(raw)
		must(t, err)
		if back.Serial != rec.Serial || back.Issuer != rec.Issuer || back.Source != rec.Source || back.Role != rec.Role ||
			!back.NotAfter.Equal(rec.NotAfter) || !back.Recorded.Equal(rec.Recorded) || !back.RevokedAt.Equal(rec.RevokedAt) ||
			back.Reason != rec.Reason || !bytes.Equal(back.DER, rec.DER) {
			t.Errorf("%s: %+v, want %+v", name, back, rec)
		}
		if js := jsonRecord(rec); len(raw) > len(js)*3/4 {
			t.Errorf("%s: binary record %d bytes, JSON %d", name, len(raw), len(js))
		}
	}
	for name, raw := range map[string][]byte{
		"empty": {}, "unknown version": {0x02, 0}, "truncated": {recordV1, 3, 'a'}, "bad JSON": []byte("{"),
	} {
		if _, err := unmarshalRecord(raw); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	bad := certRecord{Serial: "01", RevokedAt: now, Reason: 300}
	if _, err := bad.marshal(); err == nil {
		t.Error("reason 300 encoded")
	}
}

// jsonRecord is a record as earlier versions stored it, spelled out so that
// the test keeps that format whatever certRecord's tags become.
func jsonRecord(r certRecord) []byte {
	s := fmt.Sprintf(`{"serial":%q,"issuer":%q,"source":%q,`, r.Serial, r.Issuer, r.Source)
	if r.Role != "" {
		s += fmt.Sprintf(`"role":%q,`, r.Role)
	}
	s += fmt.Sprintf(`"not_after":%q,"recorded":%q,`, r.NotAfter.Format(time.RFC3339), r.Recorded.Format(time.RFC3339))
	if !r.RevokedAt.IsZero() {
		s += fmt.Sprintf(`"revoked_at":%q,"reason":%d,`, r.RevokedAt.Format(time.RFC3339), r.Reason)
	}
	return []byte(s + fmt.Sprintf(`"der":%q}`, base64.StdEncoding.EncodeToString(r.DER)))
}

// Certificates recorded as JSON by earlier versions are still read,
// listed, recognised when recorded again, and revoked.
func TestCertRecordJSONStillRead(t *testing.T) {
	c, _ := newTestCA(t)
	got, err := c.Sign(bg, "web", csrFor(t, p256(t), "old.example.com", nil, nil), SignOptions{})
	must(t, err)
	recorded := c.now().Add(-time.Hour)
	old := jsonRecord(certRecord{Serial: got.Serial, Issuer: "int-1", Source: "rest", Role: "web", NotAfter: got.Certificate.NotAfter, Recorded: recorded, DER: got.Certificate.Raw})
	_, err = c.store.Txn(bg, []raftstore.Op{{Kind: raftstore.OpPut, Table: tableCerts, Key: []byte(got.Serial), Value: old}})
	must(t, err)

	cert, err := c.Get(bg, got.Serial)
	must(t, err)
	if !bytes.Equal(cert.Certificate.Raw, got.Certificate.Raw) || cert.Role != "web" || cert.Status != StatusValid || !cert.Recorded.Equal(recorded) {
		t.Fatalf("old record read as %+v", cert)
	}
	if page, err := c.List(bg, Filter{SAN: "old.example.com"}); err != nil || len(page.Certs) != 1 {
		t.Fatalf("List: %v %v", page, err)
	}
	must(t, c.Record(bg, got.Certificate, "rest", "web")) // the same certificate: a no-op
	revoked, err := c.Revoke(bg, got.Serial, 1)
	must(t, err)
	if revoked.Status != StatusRevoked || !revoked.Recorded.Equal(recorded) {
		t.Fatalf("revoked: %+v", revoked)
	}
	raw, err := c.store.Get(bg, tableCerts, []byte(got.Serial))
	must(t, err)
	if raw[0] != recordV2 {
		t.Fatal("a revoked record is not rewritten in the binary form")
	}
	if cert, err = c.Get(bg, got.Serial); err != nil || cert.Status != StatusRevoked || cert.RevocationReason != 1 {
		t.Fatalf("after revocation: %+v %v", cert, err)
	}
}

// FuzzCertRecord feeds arbitrary stored bytes to the decoder: no panics,
// and a binary record that decodes encodes back to the same bytes.
func FuzzCertRecord(f *testing.F) {
	now := time.Unix(1_800_000_000, 0).UTC()
	for _, r := range []certRecord{
		{Serial: "0a", Issuer: "int-1", Source: "rest", Role: "web", NotAfter: now, Recorded: now, DER: fakeDER(0x0a)},
		{Serial: "8b", Issuer: "int-2", Source: "acme", NotAfter: now, Recorded: now, RevokedAt: now, Reason: 1, DER: fakeDER(0x8b)},
	} {
		raw, err := r.marshal()
		must(f, err)
		f.Add(raw)
		f.Add(v1Record(r))
		f.Add(jsonRecord(r))
	}
	f.Add([]byte{recordV1})
	f.Add([]byte{recordV2})
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := unmarshalRecord(raw)
		if err != nil || raw[0] == '{' {
			return
		}
		again, err := r.marshal()
		if raw[0] == recordV1 {
			// Rewritten in the current form, if its serial is the DER's.
			if err == nil {
				if back, err := unmarshalRecord(again); err != nil || back.Serial != r.Serial || !bytes.Equal(back.DER, r.DER) {
					t.Fatalf("decoded %+v, rewritten as %+v (%v)", r, back, err)
				}
			}
			return
		}
		if err != nil || !bytes.Equal(again, raw) {
			t.Fatalf("decoded %+v, encodes to %x (%v), want %x", r, again, err, raw)
		}
	})
}

// fakeDER is the start of a certificate with this one-byte serial: as
// much as the records read of it.
func fakeDER(serial byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
			b.AddASN1BigInt(new(big.Int).SetUint64(uint64(serial)))
		})
	})
	return b.BytesOrPanic()
}

// v1Record is a record in the first binary form, spelled out so that the
// test keeps that format.
func v1Record(r certRecord) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddUint8(recordV1)
	for _, s := range []string{r.Serial, r.Issuer, r.Source, r.Role} {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
	}
	b.AddUint64(uint64(r.NotAfter.Unix()))
	b.AddUint64(uint64(r.Recorded.Unix()))
	if r.RevokedAt.IsZero() {
		b.AddUint8(0)
	} else {
		b.AddUint8(1)
		b.AddUint64(uint64(r.RevokedAt.Unix()))
		b.AddUint8(uint8(r.Reason))
	}
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.DER) })
	return b.BytesOrPanic()
}

// Records of the first binary form, which held the serial, are still read,
// and a revocation rewrites them in the current form.
func TestCertRecordV1StillRead(t *testing.T) {
	c, _ := newTestCA(t)
	got, err := c.Sign(bg, "web", csrFor(t, p256(t), "v1.example.com", nil, nil), SignOptions{})
	must(t, err)
	rec := certRecord{Serial: got.Serial, Issuer: "int-1", Source: "rest", Role: "web", NotAfter: got.Certificate.NotAfter, Recorded: c.now(), DER: got.Certificate.Raw}
	_, err = c.store.Txn(bg, []raftstore.Op{{Kind: raftstore.OpPut, Table: tableCerts, Key: []byte(got.Serial), Value: v1Record(rec)}})
	must(t, err)
	cert, err := c.Get(bg, got.Serial)
	must(t, err)
	if cert.Serial != got.Serial || !bytes.Equal(cert.Certificate.Raw, got.Certificate.Raw) || cert.Role != "web" || cert.Status != StatusValid {
		t.Fatalf("v1 record read as %+v", cert)
	}
	_, err = c.Revoke(bg, got.Serial, 1)
	must(t, err)
	raw, err := c.store.Get(bg, tableCerts, []byte(got.Serial))
	must(t, err)
	if raw[0] != recordV2 || len(raw) >= len(v1Record(rec)) {
		t.Fatalf("a revoked v1 record is rewritten as %x", raw[:1])
	}
	if cert, err = c.Get(bg, got.Serial); err != nil || cert.Serial != got.Serial || cert.Status != StatusRevoked {
		t.Fatalf("after revocation: %+v %v", cert, err)
	}
}

// Serials are of the size asked, positive, and grow with time, so that the
// tables keyed by serial are written at their ends.
func TestNewSerialGrowsWithTime(t *testing.T) {
	for _, size := range []int{14, 16, 20} {
		a, err := NewSerial(size)
		must(t, err)
		time.Sleep(2 * time.Millisecond) // the next millisecond
		b, err := NewSerial(size)
		must(t, err)
		if len(a.Bytes()) != size || len(b.Bytes()) != size || a.Sign() <= 0 {
			t.Fatalf("serials of %d and %d bytes, want %d", len(a.Bytes()), len(b.Bytes()), size)
		}
		if sa, sb := serialString(a), serialString(b); sa >= sb {
			t.Fatalf("%s is not before %s", sa, sb)
		}
	}
	for _, size := range []int{0, 13, 21} {
		if _, err := NewSerial(size); err == nil {
			t.Errorf("a serial of %d bytes", size)
		}
	}
}
