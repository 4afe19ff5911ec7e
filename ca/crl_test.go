package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"runtime"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// The streaming encoder writes what crypto/x509 writes, byte for byte,
// for every issuer key type custos offers.
func TestCRLEncodingMatchesCryptoX509(t *testing.T) {
	keys := map[string]func() (crypto.Signer, error){
		"p256": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
		"p384": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) },
		"rsa":  func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
	}
	now := time.Now().UTC().Truncate(time.Second)
	entries := []x509.RevocationListEntry{
		{SerialNumber: big.NewInt(1), RevocationTime: now.Add(-time.Hour), ReasonCode: 0},
		{SerialNumber: new(big.Int).SetBytes(bytes.Repeat([]byte{0xff}, 16)), RevocationTime: now, ReasonCode: 1},
		{SerialNumber: new(big.Int).SetBytes(bytes.Repeat([]byte{0x7f}, 20)), RevocationTime: now, ReasonCode: 10},
		{SerialNumber: big.NewInt(0x80), RevocationTime: time.Date(2051, 1, 2, 3, 4, 5, 0, time.UTC), ReasonCode: 4},
	}
	for name, gen := range keys {
		t.Run(name, func(t *testing.T) {
			key, err := gen()
			must(t, err)
			issuer := selfSignedCA(t, key)
			for _, n := range []int{0, len(entries)} {
				tmpl := &x509.RevocationList{Number: big.NewInt(1 << 40), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), RevokedCertificateEntries: entries[:n]}
				want, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
				must(t, err)
				wantCRL, err := x509.ParseRevocationList(want)
				must(t, err)

				sig, err := signatureFor(key.Public())
				must(t, err)
				e := newCRLEntries()
				for _, x := range entries[:n] {
					must(t, e.add([]byte(serialString(x.SerialNumber)), x.RevocationTime, x.ReasonCode))
				}
				tbs, err := crlTemplate{issuer: issuer, number: 1 << 40, thisUpdate: now, nextUpdate: now.Add(24 * time.Hour)}.tbs(sig, e)
				must(t, err)
				if !bytes.Equal(tbs, wantCRL.RawTBSRevocationList) {
					t.Fatalf("%d entries: TBS differs from crypto/x509's\n got %x\nwant %x", n, tbs, wantCRL.RawTBSRevocationList)
				}
				der, err := signCRL(tbs, sig, issuer, key)
				must(t, err)
				got := parseCRL(t, der, issuer)
				if len(got.RevokedCertificateEntries) != n || got.SignatureAlgorithm != wantCRL.SignatureAlgorithm {
					t.Fatalf("parsed %d entries, algorithm %v", len(got.RevokedCertificateEntries), got.SignatureAlgorithm)
				}
			}
		})
	}
	e := newCRLEntries()
	for _, bad := range []string{"", "00ff", "zz", "0102030405060708090a0b0c0d0e0f101112131415"} {
		if err := e.add([]byte(bad), now, 0); err == nil {
			t.Errorf("serial %q accepted", bad)
		}
	}
	if err := e.add([]byte("01"), now, 7); err == nil {
		t.Error("reason 7 accepted")
	}
}

func selfSignedCA(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CRL test CA", Organization: []string{"custos"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return cert
}

// addRevocations writes n revocation index entries for the active issuer
// straight into the store, 1024 to a transaction and a few transactions at
// once (the store commits them together), as if n certificates had been
// revoked; serials are 0x40 followed by the counter, so that none meets a
// real one.
func addRevocations(t testing.TB, c *CA, s *stack, n int) {
	t.Helper()
	set, err := c.issuers(bg)
	must(t, err)
	entry, err := json.Marshal(revEntry{RevokedAt: c.now(), Reason: 1, NotAfter: c.now().Add(48 * time.Hour)})
	must(t, err)
	batches := make(chan int)
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			var err error
			for first := range batches {
				ops := make([]raftstore.Op, 0, raftstore.MaxTxnOps)
				for i := first; i < min(n, first+raftstore.MaxTxnOps); i++ {
					ops = append(ops, raftstore.Op{Kind: raftstore.OpPut, Table: tableIndex, Key: revKey(set.active.id, fmt.Sprintf("40%030x", i+1)), Value: entry})
				}
				if err == nil {
					_, err = s.barrier.Txn(bg, ops)
				}
			}
			errs <- err
		}()
	}
	for first := 0; first < n; first += raftstore.MaxTxnOps {
		batches <- first
	}
	close(batches)
	for range cap(errs) {
		must(t, <-errs)
	}
}

// chunkKeys counts the CRL chunks in the store.
func chunkKeys(t testing.TB, c *CA, issuerID string) int {
	t.Helper()
	n := 0
	must(t, c.scanKeys(bg, tableCRL, chunkPrefix(issuerID), func([]byte) error { n++; return nil }))
	return n
}

// checkLargeCRL revokes one more certificate on top of n generated
// revocations and checks that the leader's CRL, and a follower's, list
// all of them under a higher number, and that old chunks go.
func checkLargeCRL(t *testing.T, n int) {
	c, s := newTestCA(t)
	extra := issue(t, c, "extra.example.com")
	inter := extra.Chain[0]
	before := parseCRL(t, mustCRL(t, c), inter)

	start := time.Now()
	addRevocations(t, c, s, n)
	t.Logf("%d revocation entries written in %v", n, time.Since(start))
	start = time.Now()
	_, err := c.Revoke(bg, extra.Serial, 4)
	must(t, err)
	t.Logf("revocation with a CRL of %d entries: %v", n+1, time.Since(start))

	der := mustCRL(t, c)
	start = time.Now()
	crl := parseCRL(t, der, inter)
	t.Logf("CRL: %d bytes, parsed in %v", len(der), time.Since(start))
	if len(crl.RevokedCertificateEntries) != n+1 || crl.Number.Cmp(before.Number) <= 0 {
		t.Fatalf("CRL number %v (before %v) lists %d entries, want %d", crl.Number, before.Number, len(crl.RevokedCertificateEntries), n+1)
	}
	if _, ok := crlHas(crl, extra.Certificate.SerialNumber); !ok {
		t.Fatal("the real revocation is not listed")
	}
	want, i := new(big.Int), 0
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(extra.Certificate.SerialNumber) == 0 {
			continue
		}
		i++
		want.SetString(fmt.Sprintf("40%030x", i), 16)
		if e.SerialNumber.Cmp(want) != 0 || e.ReasonCode != 1 {
			t.Fatalf("entry %d: serial %x reason %d", i, e.SerialNumber, e.ReasonCode)
		}
	}
	number := crl.Number
	crl = nil
	runtime.GC()

	// A follower (a fresh CA on the same store, which has no copy) reads
	// the chunks and serves the same bytes.
	s.leader.Store(false)
	follower := s.newCA(t, s.newCAArgs())
	if got := mustCRL(t, follower); !bytes.Equal(got, der) {
		t.Fatal("the follower serves another CRL")
	}
	s.leader.Store(true)

	// Another revocation: a higher number, and the old chunks are gone.
	another := issue(t, c, "another.example.com")
	_, err = c.Revoke(bg, another.Serial, 0)
	must(t, err)
	next, err := x509.ParseRevocationList(mustCRL(t, c))
	must(t, err)
	if next.Number.Cmp(number) <= 0 || len(next.RevokedCertificateEntries) != n+2 {
		t.Fatalf("after another revocation: number %v (was %v), %d entries", next.Number, number, len(next.RevokedCertificateEntries))
	}
	set, err := c.issuers(bg)
	must(t, err)
	head, _, stale, err := c.readCRL(bg, set.active.id)
	must(t, err)
	if stale != nil || head.Gen == "" || chunkKeys(t, c, set.active.id) != head.Chunks {
		t.Fatalf("stored: stale %v, gen %q, %d chunk keys for %d chunks", stale != nil, head.Gen, chunkKeys(t, c, set.active.id), head.Chunks)
	}
}

// A CRL larger than the store's largest value (1 MiB, about 14 000
// revocations) is still made, stored and served.
func TestCRLBeyondOneStoreValue(t *testing.T) { checkLargeCRL(t, 30000) }

// A million revocations. Slow (about a minute, several under the race
// detector): skipped with -short and with -race.
func TestCRLOfAMillionRevocations(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("a million revocations: run without -short and -race")
	}
	start := time.Now()
	checkLargeCRL(t, 1_000_000)
	t.Logf("total %v", time.Since(start))
}
