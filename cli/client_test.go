package cli

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "https://127.0.0.1:8443", want: "https://127.0.0.1:8443"},
		{in: "https://custos.example:8443/", want: "https://custos.example:8443"},
		{in: "127.0.0.1:8443", want: "https://127.0.0.1:8443"},
		{in: "http://127.0.0.1:8443", err: "HTTPS only"},
		{in: "", err: "no server address"},
		{in: "https://user:pw@host:1", err: "must be https://host:port"},
		{in: "https://host:1/?x=1", err: "must be https://host:port"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := parseAddr(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseAddr(%q) = %v, %v; want error with %q", tc.in, u, err, tc.err)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("parseAddr(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
			}
		})
	}
}

func newTestClient(t *testing.T, f *fakeAPI, token string) *client {
	t.Helper()
	c, err := newClient(clientConfig{Addr: f.srv.URL, Token: token, CACert: f.caFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

func TestClientCall(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/echo", http.StatusOK, map[string]any{"n": 1})
	c := newTestClient(t, f, "s3cret")

	var out struct{ N int }
	if err := c.call(context.Background(), http.MethodPost, "/v1/echo", map[string]string{"a": "b"}, &out); err != nil {
		t.Fatal(err)
	}
	r := f.last("POST /v1/echo")
	if out.N != 1 || r.Token != "s3cret" || r.ContentType != "application/json" || string(r.Body) != `{"a":"b"}` {
		t.Fatalf("out %+v, request %+v", out, r)
	}

	// No token: no header.
	anon := newTestClient(t, f, "")
	if err := anon.call(context.Background(), http.MethodPost, "/v1/echo", nil, nil); err != nil {
		t.Fatal(err)
	}
	if rs := f.requests("POST /v1/echo"); rs[1].Token != "" || len(rs[1].Body) != 0 {
		t.Fatalf("anonymous request %+v", rs[1])
	}
}

func TestClientErrors(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("GET /v1/api-error", http.StatusForbidden, apiErrorDoc("permission_denied", "no policy grants read"))
	f.reply("GET /v1/proxy", http.StatusBadGateway, []byte("<html>bad gateway</html>"))
	f.reply("GET /v1/health", http.StatusServiceUnavailable, map[string]any{"sealed": true})
	f.on("GET /v1/redirect", func(recorded) (int, any) { return http.StatusFound, nil })
	big := bytes.Repeat([]byte("x"), maxResponseBytes+10)
	f.reply("GET /v1/big", http.StatusOK, append(append([]byte(`"`), big...), '"'))
	c := newTestClient(t, f, "tok")
	ctx := context.Background()

	err := c.call(ctx, http.MethodGet, "/v1/api-error", nil, nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Code != "permission_denied" || ae.RequestID != "req-1" {
		t.Fatalf("api error: %#v", err)
	}
	if got, want := err.Error(), "no policy grants read (code permission_denied, request req-1)"; got != want {
		t.Fatalf("error text %q, want %q", got, want)
	}

	err = c.call(ctx, http.MethodGet, "/v1/proxy", nil, nil)
	if !errors.As(err, &ae) || ae.Code != "" || err.Error() != "server answered 502 Bad Gateway (request req-header)" {
		t.Fatalf("proxy error: %v", err)
	}

	// A status the caller accepts is an answer.
	var h struct{ Sealed bool }
	if err := c.call(ctx, http.MethodGet, "/v1/health", nil, &h, http.StatusServiceUnavailable); err != nil || !h.Sealed {
		t.Fatalf("accepted status: %v %+v", err, h)
	}
	if err := c.call(ctx, http.MethodGet, "/v1/health", nil, &h); !errors.As(err, &ae) {
		t.Fatalf("unaccepted 503: %v", err)
	}

	// Redirects are not followed: the token would go along.
	f.reply("GET /v1/elsewhere", http.StatusOK, map[string]any{})
	if err := c.call(ctx, http.MethodGet, "/v1/redirect", nil, nil); err == nil || !strings.Contains(err.Error(), "does not follow redirects") {
		t.Fatalf("redirect: %v", err)
	}
	if got := len(f.requests("GET /v1/elsewhere")); got != 0 {
		t.Fatalf("the redirect was followed")
	}

	var s string
	if err := c.call(ctx, http.MethodGet, "/v1/big", nil, &s); !errors.Is(err, errTooLarge) {
		t.Fatalf("big response: %v", err)
	}
}

func TestClientTLS(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("GET /v1/x", http.StatusOK, map[string]any{})
	ctx := context.Background()

	// Without the CA: the system roots do not trust the test server.
	c, err := newClient(clientConfig{Addr: f.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	err = c.call(ctx, http.MethodGet, "/v1/x", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "--ca-cert") {
		t.Fatalf("untrusted server: %v", err)
	}

	// The client never speaks anything older than TLS 1.2.
	if v := c.hc.Transport.(*http.Transport).TLSClientConfig.MinVersion; v < 0x0303 {
		t.Fatalf("MinVersion %x", v)
	}

	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newClient(clientConfig{Addr: f.srv.URL, CACert: bad}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("bad CA file: %v", err)
	}
	if _, err := newClient(clientConfig{Addr: f.srv.URL, CACert: bad + ".missing"}); err == nil {
		t.Fatal("missing CA file accepted")
	}
}

func TestClientStreams(t *testing.T) {
	f := newFakeAPI(t)
	snap := bytes.Repeat([]byte{0, 1, 2, 0xff}, 100_000)
	f.reply("GET /v1/sys/raft/snapshot", http.StatusOK, snap)
	f.reply("POST /v1/sys/raft/snapshot", http.StatusNoContent, nil)
	c := newTestClient(t, f, "tok")
	ctx := context.Background()

	var buf bytes.Buffer
	if err := c.download(ctx, "/v1/sys/raft/snapshot", &buf); err != nil || !bytes.Equal(buf.Bytes(), snap) {
		t.Fatalf("download: %v, %d bytes", err, buf.Len())
	}
	if err := c.upload(ctx, "/v1/sys/raft/snapshot", bytes.NewReader(snap), int64(len(snap))); err != nil {
		t.Fatal(err)
	}
	r := f.last("POST /v1/sys/raft/snapshot")
	if !bytes.Equal(r.Body, snap) || r.ContentType != "application/octet-stream" {
		t.Fatalf("upload: %d bytes, %s", len(r.Body), r.ContentType)
	}
}
