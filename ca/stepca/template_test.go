package stepca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
)

// TestTemplateCompletesEveryPath: Config.Template sees the completed
// template and the issuer before the linter, on step's /sign and /renew
// (ACME finalize goes through the same signer), what it sets is signed,
// and an error refuses the certificate.
func TestTemplateCompletesEveryPath(t *testing.T) {
	var refuse atomic.Bool
	var e *env
	e = newEnv(t, withJWK, func(c *Config) {
		c.Template = func(_ context.Context, tpl, issuer *x509.Certificate) error {
			if !issuer.Equal(e.ca.inter) || tpl.SerialNumber == nil || tpl.NotAfter.IsZero() {
				return errors.New("incomplete template or wrong issuer")
			}
			if refuse.Load() {
				return errors.New("refused by the template")
			}
			tpl.OCSPServer = []string{"http://pki.test/ocsp"}
			return nil
		}
		c.Linter = func(_ context.Context, tpl *x509.Certificate) error {
			if !slices.Equal(tpl.OCSPServer, []string{"http://pki.test/ocsp"}) {
				return errors.New("linted before the template was applied")
			}
			return nil
		}
	})
	cli := &stepCLI{t: t, base: e.ts.URL, hc: e.ts.Client()}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var signed signResponse
	if st := cli.do("POST", "/1.0/sign", map[string]string{"csr": csrPEM(t, key, "svc.test"),
		"ott": cli.token("custos-jwk", testJWKPassword, "svc.test", e.ts.URL+"/1.0/sign")}, &signed); st != 201 {
		t.Fatalf("sign: %d", st)
	}
	chain := signed.chain(t)
	if !slices.Equal(chain[0].OCSPServer, []string{"http://pki.test/ocsp"}) {
		t.Fatalf("signed certificate's OCSP %q", chain[0].OCSPServer)
	}

	tr := e.ts.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{chain[0].Raw, chain[1].Raw}, PrivateKey: key}}
	mtls := &stepCLI{t: t, base: e.ts.URL, hc: &http.Client{Transport: tr}}
	var renewed signResponse
	if st := mtls.do("POST", "/1.0/renew", nil, &renewed); st != 201 {
		t.Fatalf("renew: %d", st)
	}
	if r := renewed.chain(t)[0]; !slices.Equal(r.OCSPServer, []string{"http://pki.test/ocsp"}) {
		t.Fatalf("renewed certificate's OCSP %q", r.OCSPServer)
	}

	refuse.Store(true)
	before := e.rec.count()
	if st := mtls.do("POST", "/1.0/renew", nil, nil); st < 400 {
		t.Fatalf("renewal the template refused: %d", st)
	}
	if e.rec.count() != before {
		t.Fatal("a certificate the template refused was recorded")
	}
}
