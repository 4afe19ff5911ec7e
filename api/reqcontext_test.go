package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/custos-pki/custos/internal/clientip"

	"github.com/custos-pki/custos/secrets"
)

// The request's context carries its state, and says the state is current
// for the secret store (secrets.WithStateCurrent) only once the middleware
// set it, also through the contexts derived from it.
func TestReqContext(t *testing.T) {
	type other struct{}
	c := &reqContext{Context: context.WithValue(context.Background(), other{}, 7)}
	derived, cancel := context.WithCancel(context.WithValue(c, other{}, 8))
	defer cancel()
	for _, ctx := range []context.Context{c, derived} {
		if reqState(ctx) != &c.st {
			t.Fatal("reqState does not find the request's state")
		}
		if v := ctx.Value(secrets.StateCurrentKey()); v != nil {
			t.Fatalf("state current before the token was checked: %v", v)
		}
	}
	if v := c.Value(other{}); v != 7 {
		t.Errorf("parent's value: %v, want 7", v)
	}
	c.st.stateCurrent = true
	c.st.clientIP, c.st.clientIPSet = netip.MustParseAddr("192.0.2.7"), true
	for _, ctx := range []context.Context{c, derived} {
		if v, _ := ctx.Value(secrets.StateCurrentKey()).(bool); !v {
			t.Error("state not current after the token was checked")
		}
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil) // RemoteAddr 192.0.2.1
		if ip := clientip.Of(r); ip != c.st.clientIP {
			t.Errorf("client address %v, want %v", ip, c.st.clientIP)
		}
	}
}
