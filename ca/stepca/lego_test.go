package stepca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"
)

type legoUser struct {
	key crypto.Signer
	reg *legoacme.ExtendedAccount
}

func (u *legoUser) GetEmail() string                           { return "" }
func (u *legoUser) GetRegistration() *legoacme.ExtendedAccount { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.Signer               { return u.key }

// dnsProvider publishes lego's dns-01 records on the test DNS server.
type dnsProvider struct{ ch *challenges }

func (p dnsProvider) Present(ctx context.Context, domain, _, keyAuth string) error {
	info := dns01.GetChallengeInfo(ctx, domain, keyAuth)
	p.ch.setTXT(info.EffectiveFQDN, info.Value, true)
	return nil
}

func (p dnsProvider) CleanUp(ctx context.Context, domain, _, keyAuth string) error {
	info := dns01.GetChallengeInfo(ctx, domain, keyAuth)
	p.ch.setTXT(info.EffectiveFQDN, info.Value, false)
	return nil
}

func (p dnsProvider) Timeout() (time.Duration, time.Duration) {
	return 10 * time.Second, 50 * time.Millisecond
}

// TestACMEWithLego issues a wildcard certificate over dns-01 with lego,
// renews it, and revokes it.
func TestACMEWithLego(t *testing.T) {
	// lego would follow CNAMEs with the system resolver; the test zone is
	// only on the test DNS server.
	t.Setenv("LEGO_DISABLE_CNAME_SUPPORT", "true")
	e := newEnv(t)
	ctx := context.Background()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	user := &legoUser{key: key}
	cfg := lego.NewConfig(user)
	cfg.CADirURL = e.directory()
	cfg.HTTPClient = e.ts.Client()
	client, err := lego.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The validator asks the test DNS server; lego's own propagation check
	// would ask the system's, so it only waits.
	if err := client.Challenge.SetDNS01Provider(dnsProvider{e.ch}, dns01.PropagationWait(0, true)); err != nil {
		t.Fatal(err)
	}
	if user.reg, err = client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
		t.Fatalf("register: %v", err)
	}

	domains := []string{"wild.test", "*.wild.test"}
	res, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: domains, Bundle: true, KeyType: certcrypto.EC256})
	if err != nil {
		t.Fatalf("obtain: %v", err)
	}
	chain, err := certcrypto.ParsePEMBundle(res.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	e.ca.verify(t, chain)
	got := slices.Clone(chain[0].DNSNames)
	slices.Sort(got)
	if !slices.Equal(got, []string{"*.wild.test", "wild.test"}) {
		t.Errorf("DNS names %v", got)
	}
	if r, ok := e.rec.get(chain[0].SerialNumber.String()); !ok || r.source != SourceACME {
		t.Errorf("not recorded as an ACME issuance: %+v %v", r, ok)
	}

	renewed, err := client.Certificate.Renew(ctx, *res, &certificate.RenewOptions{Bundle: true, KeyType: certcrypto.EC256})
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	rchain, err := certcrypto.ParsePEMBundle(renewed.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	e.ca.verify(t, rchain)
	if rchain[0].SerialNumber.Cmp(chain[0].SerialNumber) == 0 {
		t.Fatal("renewal returned the same certificate")
	}

	if err := client.Certificate.Revoke(ctx, renewed.Certificate); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, ok := e.rec.revocation(rchain[0].SerialNumber.String()); !ok {
		t.Error("revocation not recorded")
	}
	if err := client.Certificate.Revoke(ctx, renewed.Certificate); err == nil {
		t.Error("a second revocation succeeded")
	}
}
