package stepca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"path"
	"reflect"
	"testing"

	stepacme "github.com/smallstep/certificates/acme"
	acmenosql "github.com/smallstep/certificates/acme/db/nosql"
	"golang.org/x/crypto/acme"
)

// TestGetAccount: an account read through the decode cache is the one
// step's code reads; a change of the stored record (a deactivation) is
// seen at the next read; a caller changing its account changes nobody
// else's.
func TestGetAccount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &acme.Client{Key: key, DirectoryURL: e.directory(), HTTPClient: e.ts.Client()}
	reg, err := c.Register(ctx, &acme.Account{Contact: []string{"mailto:ops@example.com"}}, acme.AcceptTOS)
	if err != nil {
		t.Fatal(err)
	}
	id := path.Base(reg.URI)
	d := e.srv.acmeDB
	step, err := acmenosql.New(d.raw)
	if err != nil {
		t.Fatal(err)
	}
	want, err := step.GetAccount(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Contact) != 1 || want.Key == nil {
		t.Fatalf("step's account: %+v", want)
	}
	got, err := d.GetAccount(ctx, id)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("GetAccount = %+v, %v; step reads %+v", got, err, want)
	}
	again, err := d.GetAccount(ctx, id)
	if err != nil || again == got || again.Key != got.Key {
		t.Fatalf("a second read of unchanged bytes: %p %p, key %p %p, %v (want a new account sharing the decoded key)", again, got, again.Key, got.Key, err)
	}
	got.Contact[0], got.Status = "mailto:changed@example.com", stepacme.StatusDeactivated
	if again, _ := d.GetAccount(ctx, id); !reflect.DeepEqual(again, want) {
		t.Fatalf("a caller's change reached the next read: %+v", again)
	}
	kid, err := stepacme.KeyToID(want.Key)
	if err != nil {
		t.Fatal(err)
	}
	if byKey, err := d.GetAccountByKeyID(ctx, kid); err != nil || !reflect.DeepEqual(byKey, want) {
		t.Fatalf("GetAccountByKeyID = %+v, %v", byKey, err)
	}

	if err := c.DeactivateReg(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := d.GetAccount(ctx, id)
	if err != nil || after.Status != stepacme.StatusDeactivated {
		t.Fatalf("after deactivation GetAccount = %+v, %v", after, err)
	}
	if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("deactivated.test")); err == nil {
		t.Fatal("a deactivated account made an order")
	}

	for name, f := range map[string]func() error{
		"GetAccount":        func() error { _, err := d.GetAccount(ctx, "no-such-account"); return err },
		"GetAccountByKeyID": func() error { _, err := d.GetAccountByKeyID(ctx, "no-such-key"); return err },
	} {
		if err := f(); !errors.Is(err, stepacme.ErrNotFound) {
			t.Errorf("%s of a missing account = %v, want acme.ErrNotFound", name, err)
		}
	}
}

// BenchmarkGetAccount reads one account as every JWS request does, with
// step's code ("step": read and decode) and with GetAccount ("cached":
// read, compare, copy).
func BenchmarkGetAccount(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	reg, err := e.newACMEClient(b).GetReg(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	id := path.Base(reg.URI)
	step, err := acmenosql.New(e.srv.acmeDB.raw)
	if err != nil {
		b.Fatal(err)
	}
	for name, get := range map[string]func(context.Context, string) (*stepacme.Account, error){"step": step.GetAccount, "cached": e.srv.acmeDB.GetAccount} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := get(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
