package stepca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/kms"
	"golang.org/x/crypto/acme"
)

var _ OriginTeller = (*recorder)(nil)

// Origin answers from the recorder as the node's inventory does.
func (r *recorder) Origin(_ context.Context, serial *big.Int) (Origin, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.certs[serial.String()]
	if !ok {
		return Origin{}, ErrNotRecorded
	}
	_, revoked := r.revoked[serial.String()]
	return Origin{Source: c.source, Role: c.role, Revoked: revoked}, nil
}

func (e *env) dir(prov string) string { return e.ts.URL + "/acme/" + prov + "/directory" }

// client is an ACME client of provisioner prov, not registered, that does
// not retry.
func (e *env) client(prov string, key crypto.Signer) *acme.Client {
	if key == nil {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return &acme.Client{Key: key, DirectoryURL: e.dir(prov), HTTPClient: e.ts.Client(),
		RetryBackoff: func(int, *http.Request, *http.Response) time.Duration { return -1 }}
}

func (e *env) register(t *testing.T, prov string, eab *acme.ExternalAccountBinding) *acme.Client {
	t.Helper()
	c := e.client(prov, nil)
	if _, err := c.Register(context.Background(), &acme.Account{ExternalAccountBinding: eab}, acme.AcceptTOS); err != nil {
		t.Fatalf("register at %s: %v", prov, err)
	}
	return c
}

func (e *env) provisioner(t *testing.T, p ACMEProvisioner) {
	t.Helper()
	if _, err := e.srv.CreateACMEProvisioner(context.Background(), p); err != nil {
		t.Fatalf("create provisioner %s: %v", p.Name, err)
	}
}

// wantProblem checks that err is an RFC 8555 problem of type typ.
func wantProblem(t *testing.T, err error, typ string) {
	t.Helper()
	var ae *acme.Error
	if !errors.As(err, &ae) || ae.ProblemType != "urn:ietf:params:acme:error:"+typ {
		t.Fatalf("error %v, want problem %s", err, typ)
	}
}

// TestACMEProvisionerNamePolicy: a name not allowed, a denied name and a
// wildcard the provisioner does not allow get rejectedIdentifier at
// new-order; allowed names are issued.
func TestACMEProvisionerNamePolicy(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.provisioner(t, ACMEProvisioner{Name: "locked", AllowedNames: []string{".web.test", "127.0.0.0/8"}, DeniedNames: []string{"admin.web.test"}})
	c := e.register(t, "locked", nil)
	for _, id := range []acme.AuthzID{
		{Type: "dns", Value: "other.test"},           // not allowed
		{Type: "dns", Value: "admin.web.test"},       // denied
		{Type: "dns", Value: "*.web.test"},           // wildcard not allowed
		{Type: "ip", Value: "192.0.2.1"},             // not allowed
		{Type: "dns", Value: "a.web.test.evil.test"}, // a suffix is not a parent
	} {
		_, err := c.AuthorizeOrder(ctx, []acme.AuthzID{{Type: "dns", Value: "ok.web.test"}, id})
		wantProblem(t, err, "rejectedIdentifier")
	}
	chain, err := e.issue(ctx, c, "http-01", append(acme.DomainIDs("ok.web.test"), acme.IPIDs("127.0.0.1")...))
	if err != nil {
		t.Fatalf("allowed names: %v", err)
	}
	if r, ok := e.rec.get(chain[0].SerialNumber.String()); !ok || r.source != SourceACME || r.role != "locked" {
		t.Errorf("recorded %+v", r)
	}

	// Deny wins over a wildcard that would cover a denied name.
	e.provisioner(t, ACMEProvisioner{Name: "wild", AllowWildcards: true, DeniedNames: []string{"admin.web.test"}})
	w := e.register(t, "wild", nil)
	_, err = w.AuthorizeOrder(ctx, acme.DomainIDs("*.web.test"))
	wantProblem(t, err, "rejectedIdentifier")
	if _, err := w.AuthorizeOrder(ctx, acme.DomainIDs("*.other.test")); err != nil {
		t.Errorf("allowed wildcard: %v", err)
	}

	// A narrower policy holds at finalize for an order made before.
	o, err := c.AuthorizeOrder(ctx, acme.DomainIDs("late.web.test"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.solve(ctx, c, o, "http-01"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.UpdateACMEProvisioner(ctx, ACMEProvisioner{Name: "locked", AllowedNames: []string{"ok.web.test"}}); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.CreateOrderCert(ctx, o.FinalizeURL, newCSR(nil, acme.DomainIDs("late.web.test")), true)
	wantProblem(t, err, "rejectedIdentifier")
}

// TestACMEProvisionerEAB: a provisioner with require_eab refuses an account
// without a binding (externalAccountRequired) and one with another
// provisioner's key.
func TestACMEProvisionerEAB(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.provisioner(t, ACMEProvisioner{Name: "team-a", RequireEAB: true})
	e.provisioner(t, ACMEProvisioner{Name: "team-b", RequireEAB: true})
	ka, err := e.srv.CreateEABKey(ctx, "team-a", "")
	if err != nil {
		t.Fatal(err)
	}
	kb, err := e.srv.CreateEABKey(ctx, "team-b", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.CreateEABKey(ctx, "nobody", ""); !errors.Is(err, kms.ErrNotFound) {
		t.Errorf("EAB key of an unknown provisioner: %v", err)
	}
	_, err = e.client("team-b", nil).Register(ctx, &acme.Account{}, acme.AcceptTOS)
	wantProblem(t, err, "externalAccountRequired")
	_, err = e.client("team-b", nil).Register(ctx, &acme.Account{ExternalAccountBinding: &acme.ExternalAccountBinding{KID: ka.KeyID, Key: ka.HMACKey}}, acme.AcceptTOS)
	if err == nil {
		t.Fatal("team-a's key registered an account at team-b")
	}
	c := e.register(t, "team-b", &acme.ExternalAccountBinding{KID: kb.KeyID, Key: kb.HMACKey})
	if _, err := e.issue(ctx, c, "http-01", acme.DomainIDs("b.test")); err != nil {
		t.Fatal(err)
	}
	// The open default provisioner is untouched.
	e.register(t, "acme", nil)

	// Deleting a provisioner deletes its keys and its directory.
	if err := e.srv.DeleteACMEProvisioner(ctx, "team-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client("team-a", nil).Discover(ctx); err == nil {
		t.Error("a deleted provisioner still has a directory")
	}
	if _, err := e.srv.CreateACMEProvisioner(ctx, ACMEProvisioner{Name: "team-a", RequireEAB: true}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client("team-a", nil).Register(ctx, &acme.Account{ExternalAccountBinding: &acme.ExternalAccountBinding{KID: ka.KeyID, Key: ka.HMACKey}}, acme.AcceptTOS)
	if err == nil {
		t.Error("a key of a deleted provisioner works for a new one of that name")
	}
}

// TestACMEProvisionerKeyAndLifetime: a key type the provisioner does not
// allow is badCSR at finalize, a lifetime over its maximum is refused, and
// orders without notAfter get at most the maximum.
func TestACMEProvisionerKeyAndLifetime(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.provisioner(t, ACMEProvisioner{Name: "short", MaxLifetime: time.Hour, KeyTypes: []string{"ecdsa-p384"}})
	c := e.register(t, "short", nil)
	ids := acme.DomainIDs("k.test")
	order := func(opts ...acme.OrderOption) *acme.Order {
		o, err := c.AuthorizeOrder(ctx, ids, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.solve(ctx, c, o, "http-01"); err != nil {
			t.Fatal(err)
		}
		return o
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, _, err := c.CreateOrderCert(ctx, order().FinalizeURL, newCSR(p256, ids), true)
	wantProblem(t, err, "badCSR")

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	o := order(acme.WithOrderNotAfter(time.Now().Add(2 * time.Hour)))
	_, _, err = c.CreateOrderCert(ctx, o.FinalizeURL, newCSR(p384, ids), true)
	wantProblem(t, err, "rejectedIdentifier")

	der, _, err := c.CreateOrderCert(ctx, order().FinalizeURL, newCSR(p384, ids), true)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der[0])
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d > time.Hour+2*time.Minute {
		t.Errorf("lifetime %v over the provisioner's 1h", d)
	}
}

// renew posts to step's /renew over mutual TLS with chain and key.
func (e *env) renew(t *testing.T, chain []*x509.Certificate, key crypto.Signer) (int, *x509.Certificate) {
	t.Helper()
	tr := e.ts.Client().Transport.(*http.Transport).Clone()
	tc := tls.Certificate{PrivateKey: key}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	tr.TLSClientConfig.Certificates = []tls.Certificate{tc}
	resp, err := (&http.Client{Transport: tr}).Post(e.ts.URL+"/renew", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out signResponse
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&out) != nil {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, out.chain(t)[0]
}

// TestACMERenewalFollowsProvisioner: step's /renew of an ACME certificate
// is checked against its provisioner as it stands: refused once the
// provisioner no longer allows its name, once it is deleted, and once the
// certificate is revoked.
func TestACMERenewalFollowsProvisioner(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.provisioner(t, ACMEProvisioner{Name: "svc", AllowedNames: []string{".svc.test"}})
	c := e.register(t, "svc", nil)
	issue := func(name string) ([]*x509.Certificate, crypto.Signer) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ids := acme.DomainIDs(name)
		o, err := c.AuthorizeOrder(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.solve(ctx, c, o, "http-01"); err != nil {
			t.Fatal(err)
		}
		der, _, err := c.CreateOrderCert(ctx, o.FinalizeURL, newCSR(key, ids), true)
		if err != nil {
			t.Fatal(err)
		}
		chain, _ := parseChain(der)
		return chain, key
	}
	a, akey := issue("a.svc.test")
	b, bkey := issue("b.svc.test")
	st, renewed := e.renew(t, a, akey)
	if st != http.StatusCreated {
		t.Fatalf("renewal under the provisioner as issued: %d", st)
	}
	if r, ok := e.rec.get(renewed.SerialNumber.String()); !ok || r.source != SourceACME || r.role != "svc" {
		t.Errorf("renewal recorded %+v, want the origin of the certificate renewed", r)
	}
	if _, err := e.srv.UpdateACMEProvisioner(ctx, ACMEProvisioner{Name: "svc", AllowedNames: []string{"b.svc.test"}}); err != nil {
		t.Fatal(err)
	}
	before := e.rec.count()
	if st, _ := e.renew(t, a, akey); st != http.StatusForbidden {
		t.Errorf("renewal of a name the provisioner no longer allows: %d", st)
	}
	if st, _ := e.renew(t, b, bkey); st != http.StatusCreated {
		t.Errorf("renewal of a name still allowed: %d", st)
	}
	_ = e.rec.RecordRevocation(ctx, b[0].SerialNumber, 1, "")
	if st, _ := e.renew(t, b, bkey); st != http.StatusForbidden {
		t.Errorf("renewal of a revoked certificate: %d", st)
	}
	b2, b2key := issue("b.svc.test")
	if err := e.srv.DeleteACMEProvisioner(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.renew(t, b2, b2key); st != http.StatusForbidden {
		t.Errorf("renewal after the provisioner was deleted: %d", st)
	}
	if got := e.rec.count(); got != before+2 {
		t.Errorf("%d certificates recorded after the refusals, want %d", got, before+2)
	}
}

// TestACMEProvisionerOnAnotherNode: a provisioner made through one node is
// served by another over the same storage, without a restart.
func TestACMEProvisionerOnAnotherNode(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, ts2 := e.start(t, e.cfg)
	if _, err := e.srv.CreateACMEProvisioner(ctx, ACMEProvisioner{Name: "later", AllowedNames: []string{"x.test"}}); err != nil {
		t.Fatal(err)
	}
	c := &acme.Client{DirectoryURL: ts2.URL + "/acme/later/directory", HTTPClient: ts2.Client()}
	c.Key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := c.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatalf("second node: %v", err)
	}
	_, err := c.AuthorizeOrder(ctx, acme.DomainIDs("y.test"))
	wantProblem(t, err, "rejectedIdentifier")
}

func TestACMEProvisionerValidation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for name, p := range map[string]ACMEProvisioner{
		"bad name":       {Name: "Bad/Name"},
		"bad entry":      {Name: "x", AllowedNames: []string{"a..b"}},
		"star inside":    {Name: "x", AllowedNames: []string{"a.*.b"}},
		"bad CIDR":       {Name: "x", DeniedNames: []string{"10.0.0.0/33"}},
		"short lifetime": {Name: "x", MaxLifetime: time.Minute},
		"long lifetime":  {Name: "x", MaxLifetime: 10000 * time.Hour},
		"bad key type":   {Name: "x", KeyTypes: []string{"dsa"}},
		"missing role":   {Name: "x", Role: "web"},
	} {
		if _, err := e.srv.CreateACMEProvisioner(ctx, p); !errors.Is(err, kms.ErrInvalid) {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	if _, err := e.srv.CreateACMEProvisioner(ctx, ACMEProvisioner{Name: "acme"}); !errors.Is(err, kms.ErrConflict) {
		t.Errorf("second provisioner named acme: %v", err)
	}
	if _, err := e.srv.UpdateACMEProvisioner(ctx, ACMEProvisioner{Name: "none"}); !errors.Is(err, kms.ErrNotFound) {
		t.Errorf("update of a missing provisioner: %v", err)
	}
	if err := e.srv.DeleteACMEProvisioner(ctx, "none"); !errors.Is(err, kms.ErrNotFound) {
		t.Errorf("delete of a missing provisioner: %v", err)
	}
	// The default provisioner is made once: deleted, it stays deleted.
	if err := e.srv.DeleteACMEProvisioner(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	srv2, _ := e.start(t, e.cfg)
	if _, err := srv2.ACMEProvisioner(ctx, "acme"); !errors.Is(err, kms.ErrNotFound) {
		t.Errorf("the deleted default provisioner came back: %v", err)
	}
}

// FuzzACMEProvisioner: whatever JSON a provisioner is written with, it is
// refused or normalized to a form that normalizes to itself.
func FuzzACMEProvisioner(f *testing.F) {
	f.Add([]byte(`{"name":"a","allowed_names":[".example.com","*.x.test","10.0.0.0/8"],"denied_names":["b.example.com"],"max_lifetime":3600000000000}`))
	f.Add([]byte(`{"name":"a","key_types":["rsa"],"role":"web"}`))
	f.Add([]byte(`{"name":"","allowed_names":["::1/129"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p ACMEProvisioner
		if json.Unmarshal(b, &p) != nil {
			return
		}
		if p.normalize(90*24*time.Hour) != nil {
			return
		}
		q := p
		if err := q.normalize(90 * 24 * time.Hour); err != nil {
			t.Fatalf("normalized provisioner refused: %v", err)
		}
		for _, n := range []string{"a.example.com", "*.x.test", "b.example.com"} {
			_ = p.names().CheckDNSName(n)
		}
	})
}

// TestACMEOrderPolicyNeedsAccount: the policy refuses a name with
// rejectedIdentifier only to a request signed by an account of that
// provisioner; a request signed by another key with the account's kid, or
// by an account of another provisioner, is refused by step-ca whatever it
// asks for, so the policy cannot be probed, and no order is made.
func TestACMEOrderPolicyNeedsAccount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.provisioner(t, ACMEProvisioner{Name: "locked", AllowedNames: []string{".web.test"}})
	e.provisioner(t, ACMEProvisioner{Name: "open"})
	c := e.register(t, "locked", nil)
	if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("other.test")); err == nil {
		t.Fatal("the account's own order for a refused name was made")
	} else {
		wantProblem(t, err, "rejectedIdentifier")
	}

	forged := e.client("locked", nil)
	forged.KID = c.KID
	other := e.register(t, "open", nil)
	cross := e.client("locked", other.Key)
	cross.KID = other.KID
	for name, cl := range map[string]*acme.Client{"another key": forged, "another provisioner's account": cross} {
		for _, id := range []string{"other.test", "ok.web.test"} {
			o, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(id))
			if err == nil {
				t.Fatalf("%s: order for %s made: %s", name, id, o.URI)
			}
			var ae *acme.Error
			if errors.As(err, &ae) && ae.ProblemType == "urn:ietf:params:acme:error:rejectedIdentifier" {
				t.Fatalf("%s: order for %s answered by the policy: %v", name, id, err)
			}
		}
	}
}
