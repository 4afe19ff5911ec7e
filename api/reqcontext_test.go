package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/custos-pki/custos/internal/clientip"
)

// The request's context carries its state, and the client address once the
// middleware settled it, also through the contexts derived from it.
func TestReqContext(t *testing.T) {
	type other struct{}
	c := &reqContext{Context: context.WithValue(context.Background(), other{}, 7)}
	derived, cancel := context.WithCancel(context.WithValue(c, other{}, 8))
	defer cancel()
	for _, ctx := range []context.Context{c, derived} {
		if reqState(ctx) != &c.st {
			t.Fatal("reqState does not find the request's state")
		}
		if v := ctx.Value(clientip.ContextKey()); v != nil {
			t.Fatalf("client address before it was settled: %v", v)
		}
	}
	if v := c.Value(other{}); v != 7 {
		t.Errorf("parent's value: %v, want 7", v)
	}
	c.st.clientIP, c.st.clientIPSet = netip.MustParseAddr("192.0.2.7"), true
	for _, ctx := range []context.Context{c, derived} {
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil) // RemoteAddr 192.0.2.1
		if ip := clientip.Of(r); ip != c.st.clientIP {
			t.Errorf("client address %v, want %v", ip, c.st.clientIP)
		}
	}
}
