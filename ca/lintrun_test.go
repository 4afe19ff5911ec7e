package ca

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// runAll is every lint's result from the CA's runners, by name.
func runAll(rs []lintRunner, zc *zx509.Certificate) map[string]lint.LintResult {
	out := make(map[string]lint.LintResult, len(rs))
	for i := range rs {
		out[rs[i].l.Name] = rs[i].run(zc)
	}
	return out
}

// sameResults compares the CA's results on zc with zlint's, lint by lint.
// A few of zlint's lints name what they find in map order; where the
// details differ, zlint runs that lint again until it gives the CA's
// result, which must be one zlint gives.
func sameResults(t *testing.T, name string, zc *zx509.Certificate, got map[string]lint.LintResult, want *zlint.ResultSet, reg lint.Registry) {
	t.Helper()
	if len(got) != len(want.Results) {
		t.Errorf("%s: %d results; zlint has %d", name, len(got), len(want.Results))
	}
	for lintName, w := range want.Results {
		g, ok := got[lintName]
		if !ok {
			t.Errorf("%s: no result for %s", name, lintName)
			continue
		}
		for range 64 {
			if g.Status == w.Status && g.Details == w.Details {
				break
			}
			w = reg.CertificateLints().ByName(lintName).Execute(zc, reg.GetConfiguration())
		}
		if g.Status != w.Status || g.Details != w.Details {
			t.Errorf("%s: %s: %v %q; zlint: %v %q", name, lintName, g.Status, g.Details, w.Status, w.Details)
		}
	}
}

// The CA's lint runners give, for every lint and every certificate, the
// status and details that zlint.LintCertificateEx gives over the same
// registry (with zlint's own small-key lint): over certificates custos
// issues, zlint's test corpus and certificates made to fail lints, run
// from several goroutines at once.
func TestLintRunnerMatchesZlint(t *testing.T) {
	c, _ := newTestCA(t)
	certs := map[string]*zx509.Certificate{}
	for name, der := range issuedCerts(t, c) {
		certs["issued "+name] = parseZ(t, der)
	}
	for name, der := range badCerts(t) {
		certs["bad "+name] = parseZ(t, der)
	}
	corpus := zlintCorpus(t)
	for name, zc := range corpus {
		certs["zlint "+name] = zc
	}
	if len(corpus) < 500 {
		t.Fatalf("zlint's corpus holds %d certificates; want hundreds", len(corpus))
	}

	fast := 0
	for i := range c.certLints {
		if c.certLints[i].fast() {
			fast++
		}
	}
	if fast < len(c.certLints)-1 {
		t.Fatalf("%d of %d lints run without zlint's framework; want all but at most one", fast, len(c.certLints))
	}

	names := make([]string, 0, len(certs))
	for name := range certs {
		names = append(names, name)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(names); i += 4 {
				zc := certs[names[i]]
				sameResults(t, names[i], zc, runAll(c.certLints, zc), zlint.LintCertificateEx(zc, c.lints), c.lints)
			}
		})
	}
	wg.Wait()

	// The bad certificates do fail, with the errors zlint finds (by name:
	// some details come in map order).
	for name, der := range badCerts(t) {
		zc := parseZ(t, der)
		want := findings(zlint.LintCertificateEx(zc, c.lints)).Errors
		if len(want) == 0 {
			t.Errorf("bad %s: zlint finds no error", name)
		}
		err := c.lintErrors(zc)
		if err == nil {
			t.Errorf("bad %s: no lint error; zlint finds %q", name, want)
			continue
		}
		for _, w := range want {
			if lintName, _, _ := strings.Cut(w, " ("); !strings.Contains(err.Error(), lintName) {
				t.Errorf("bad %s: %v; want the error %s", name, err, lintName)
			}
		}
	}
}

func parseZ(t testing.TB, der []byte) *zx509.Certificate {
	t.Helper()
	zc, err := zx509.ParseCertificate(der)
	must(t, err)
	return zc
}

// issuedCerts are certificates c issues, for keys of every type, and the
// placeholder-signed copy that the lints see.
func issuedCerts(t *testing.T, c *CA) map[string][]byte {
	out := map[string][]byte{}
	iss, err := c.Sign(bg, "web", csrFor(t, p256(t), "a.example.com", []string{"b.example.com"}, []net.IP{net.ParseIP("10.1.2.3")}, "spiffe://example.org/ns/a/sa/b"), SignOptions{})
	must(t, err)
	out["sign p256"] = iss.Certificate.Raw
	for _, kt := range []string{"ecdsa-p384", "ed25519", "rsa-2048"} {
		iss, err := c.Issue(bg, "web", IssueRequest{CommonName: kt + ".example.com", KeyType: kt})
		must(t, err)
		out["issue "+kt] = iss.Certificate.Raw
	}
	set, err := c.issuers(bg)
	must(t, err)
	out["intermediate"] = set.active.cert.Raw
	for i, ca := range set.active.chain {
		out[fmt.Sprint("chain ", i)] = ca.Raw
	}
	r, err := c.ReadRole(bg, "web")
	must(t, err)
	pub := p256(t).Public()
	tmpl, err := c.template(&r, request{pub: pub, cn: "lint.example.com"}, false)
	must(t, err)
	tbs, err := c.lintTBS(set.active.cert, tmpl, pub)
	must(t, err)
	der, err := tbs.lintCertificate()
	must(t, err)
	out["placeholder signature"] = der
	return out
}

// badCerts are certificates that fail lints of a private CA, each for
// another reason, from lints of every kind (the configured ones too).
func badCerts(t *testing.T) map[string][]byte {
	key := p256(t)
	now := time.Now().Truncate(time.Second)
	base := func() *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(1000), Subject: pkix.Name{CommonName: "bad.example.com"}, NotBefore: now, NotAfter: now.Add(time.Hour),
			DNSNames: []string{"bad.example.com"}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true,
		}
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	small := ecdsaKeyOf(certFor(t, elliptic.P256(), big.NewInt(3), false))
	small384 := ecdsaKeyOf(certFor(t, elliptic.P384(), big.NewInt(5), true))
	cases := map[string]struct {
		edit func(*x509.Certificate)
		pub  crypto.PublicKey
	}{
		"cert sign without CA": {edit: func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }},
		"CA without cert sign": {edit: func(c *x509.Certificate) { c.IsCA = true }},
		"bad DNS SAN": {edit: func(c *x509.Certificate) {
			c.DNSNames = []string{"a..example.com", "*.*.example.com", "-x-.example.com"}
		}},
		"empty DNS SAN":         {edit: func(c *x509.Certificate) { c.DNSNames = []string{""} }},
		"no subject, no SAN":    {edit: func(c *x509.Certificate) { c.Subject, c.DNSNames = pkix.Name{}, nil }},
		"long common name":      {edit: func(c *x509.Certificate) { c.Subject.CommonName = strings.Repeat("x", 70) }},
		"zero serial":           {edit: func(c *x509.Certificate) { c.SerialNumber = big.NewInt(0) }},
		"long serial":           {edit: func(c *x509.Certificate) { c.SerialNumber = new(big.Int).Lsh(big.NewInt(1), 170) }},
		"ends before it starts": {edit: func(c *x509.Certificate) { c.NotAfter = c.NotBefore.Add(-time.Hour) }},
		"HTML entity":           {edit: func(c *x509.Certificate) { c.Subject.Organization = []string{"A &amp; B"} }},
		"old and bad": {edit: func(c *x509.Certificate) {
			c.NotBefore, c.DNSNames = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), []string{"a..b"}
		}},
		"small key":       {pub: small},
		"small P-384 key": {pub: small384},
		"RSA 1024":        {pub: &rsa1024.PublicKey},
	}
	out := map[string][]byte{}
	for name, tc := range cases {
		tmpl := base()
		if tc.edit != nil {
			tc.edit(tmpl)
		}
		pub := tc.pub
		if pub == nil {
			pub = p256(t).Public()
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
		if err != nil {
			t.Fatalf("bad %s: %v", name, err)
		}
		out[name] = der
	}
	return out
}

// zlintCorpus is the certificates of zlint's own tests, which fail its
// lints in every way, from the module in use.
func zlintCorpus(t *testing.T) map[string]*zx509.Certificate {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/zmap/zlint/v3").Output()
	if err != nil {
		t.Fatalf("find zlint's module: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(dir)), "testdata", "*.pem"))
	must(t, err)
	out := map[string]*zx509.Certificate{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err)
		for {
			var block *pem.Block
			if block, b = pem.Decode(b); block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			if zc, err := zx509.ParseCertificate(block.Bytes); err == nil {
				out[filepath.Base(f)] = zc
				break
			}
		}
	}
	return out
}

// statefulLint keeps, in a field, how many certificates it has seen:
// zlint makes a new one per certificate, so it always reports 1.
type statefulLint struct {
	Seen  int
	Label string
}

func (l *statefulLint) CheckApplies(*zx509.Certificate) bool { return true }

func (l *statefulLint) Execute(*zx509.Certificate) *lint.LintResult {
	l.Seen++
	return &lint.LintResult{Status: lint.Error, Details: fmt.Sprint(l.Label, l.Seen)}
}

// configuredLint is statefulLint, configured.
type configuredLint struct{ statefulLint }

func (l *configuredLint) Configure() any { return l }

// mapLint keeps its state in a map, which a copy shares.
type mapLint struct{ seen map[string]int }

func (l *mapLint) CheckApplies(*zx509.Certificate) bool { return true }

func (l *mapLint) Execute(c *zx509.Certificate) *lint.LintResult {
	l.seen["x"]++
	return &lint.LintResult{Status: lint.Warn, Details: fmt.Sprint(l.seen["x"])}
}

// changingLint is made differently each time.
type changingLint struct{ N int }

func (l *changingLint) CheckApplies(*zx509.Certificate) bool { return true }

func (l *changingLint) Execute(*zx509.Certificate) *lint.LintResult {
	return &lint.LintResult{Status: lint.Pass}
}

// emptyLint panics, or not applies, or applies.
type emptyLint struct{}

func (emptyLint) CheckApplies(c *zx509.Certificate) bool { return c.Subject.CommonName != "na" }

func (emptyLint) Execute(c *zx509.Certificate) *lint.LintResult {
	if c.Subject.CommonName == "panic" {
		panic("boom")
	}
	return &lint.LintResult{Status: lint.Pass}
}

// Lints with state get a fresh instance for every certificate, as in
// zlint: a copy of a configured one when their state is plain values,
// zlint's own path when not (a map) or when Lint() does not make the same
// instance every time; lints without state are shared. Panics, NA and NE
// are zlint's.
func TestLintRunnerFreshState(t *testing.T) {
	cfg, err := lint.NewConfigFromString("[w_configured]\nLabel = \"configured \"\n")
	must(t, err)
	made := 0
	mk := func(name string, src lint.LintSource, effective time.Time, impl func() lint.CertificateLintInterface) *lint.CertificateLint {
		return &lint.CertificateLint{LintMetadata: lint.LintMetadata{Name: name, Source: src, EffectiveDate: effective}, Lint: impl}
	}
	lints := []*lint.CertificateLint{
		mk("e_stateful", lint.RFC5280, time.Time{}, func() lint.CertificateLintInterface { return &statefulLint{Label: "stateful "} }),
		mk("w_configured", lint.Community, time.Time{}, func() lint.CertificateLintInterface { return &configuredLint{} }),
		mk("w_map", lint.RFC5280, time.Time{}, func() lint.CertificateLintInterface { return &mapLint{seen: map[string]int{}} }),
		mk("e_changing", lint.RFC5280, time.Time{}, func() lint.CertificateLintInterface {
			made++
			return &changingLint{made}
		}),
		mk("e_empty", lint.RFC5280, time.Time{}, func() lint.CertificateLintInterface { return &emptyLint{} }),
		mk("e_future", lint.RFC5280, time.Now().Add(time.Hour), func() lint.CertificateLintInterface { return &emptyLint{} }),
		mk("e_cabf", lint.CABFBaselineRequirements, time.Time{}, func() lint.CertificateLintInterface { return &emptyLint{} }),
	}
	rs := newLintRunners(lints, cfg)
	wantFast := map[string]bool{"e_stateful": true, "w_configured": true, "e_empty": true, "e_future": true}
	for i := range rs {
		if rs[i].fast() != wantFast[rs[i].l.Name] {
			t.Errorf("%s: fast %v; want %v", rs[i].l.Name, rs[i].fast(), wantFast[rs[i].l.Name])
		}
	}
	for _, cn := range []string{"a", "na", "panic", "b", "b"} {
		zc := certForKey(t, &p256(t).PublicKey)
		zc.Subject.CommonName = cn
		for i := range rs {
			l := rs[i].l
			got, want := rs[i].run(zc), l.Execute(zc, cfg)
			if got.Status != want.Status || got.Details != want.Details {
				t.Errorf("%s on %q: %v %q; zlint: %v %q", l.Name, cn, got.Status, got.Details, want.Status, want.Details)
			}
		}
	}
}
