package stepca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

// responder is an HTTP server whose answer a test chooses, counting the
// requests it gets.
type responder struct {
	port int
	hits atomic.Int64
	mu   sync.Mutex
	h    http.HandlerFunc
}

// newResponder serves on addr (host:port, port 0 for any).
func newResponder(t *testing.T, addr string) *responder {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &responder{port: l.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		r.mu.Lock()
		h := r.h
		r.mu.Unlock()
		if h == nil {
			http.NotFound(w, req)
			return
		}
		h(w, req)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *responder) set(h http.HandlerFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h = h
}

func serve(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) }
}

func redirectTo(url string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, url+r.URL.Path, http.StatusFound) }
}

// attempt orders id, answers its challenge of type typ with prepare (given
// the token and key authorisation), accepts it, and returns the challenge
// and the authorisation step-ca then reports.
func (e *env) attempt(t *testing.T, c *acme.Client, id acme.AuthzID, typ string, prepare func(token, keyAuth string)) (*acme.Challenge, *acme.Authorization) {
	t.Helper()
	ctx := context.Background()
	order, err := c.AuthorizeOrder(ctx, []acme.AuthzID{id})
	if err != nil {
		t.Fatal(err)
	}
	z, err := c.GetAuthorization(ctx, order.AuthzURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	var chal *acme.Challenge
	for _, ch := range z.Challenges {
		if ch.Type == typ {
			chal = ch
		}
	}
	if chal == nil {
		t.Fatalf("no %s challenge", typ)
	}
	ka, err := c.HTTP01ChallengeResponse(chal.Token)
	if err != nil {
		t.Fatal(err)
	}
	prepare(chal.Token, ka)
	got, err := c.Accept(ctx, chal)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	if z, err = c.GetAuthorization(ctx, z.URI); err != nil {
		t.Fatal(err)
	}
	return got, z
}

// refused checks that a challenge failed cleanly: not valid, with a short
// error, its authorisation not valid, and nothing issued.
func (e *env) refused(t *testing.T, ch *acme.Challenge, z *acme.Authorization) {
	t.Helper()
	if ch.Status == acme.StatusValid || z.Status == acme.StatusValid {
		t.Fatalf("challenge %s, authorization %s: want neither valid", ch.Status, z.Status)
	}
	if ch.Error == nil {
		t.Fatal("the challenge carries no error")
	}
	if msg := ch.Error.Error(); len(msg) > 512 {
		t.Errorf("challenge error of %d bytes: %.200q", len(msg), msg)
	}
	if n := e.rec.count(); n != 0 {
		t.Errorf("%d certificates issued", n)
	}
}

// TestValidatorRedirects: an http-01 redirect to a denied address or to a
// port other than the challenge ports is not followed (the target never
// sees a request), and the challenge fails; a redirect within the rules is
// followed.
func TestValidatorRedirects(t *testing.T) {
	front := newResponder(t, "127.0.0.1:0")
	// 127.0.0.2 is denied in this test, on the challenge port.
	inside, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(front.port)))
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	inside.Close()
	denied := newResponder(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(front.port)))
	otherPort := newResponder(t, "127.0.0.1:0")
	e := newEnv(t, func(c *Config) {
		c.HTTP01Port = front.port
		c.ValidatorDeny = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	c := e.newACMEClient(t)
	prefix := "/.well-known/acme-challenge/"

	t.Run("to a denied address", func(t *testing.T) {
		front.set(redirectTo("http://127.0.0.2"))
		ch, z := e.attempt(t, c, acme.AuthzID{Type: "dns", Value: "denied.test"}, "http-01", func(_, ka string) { denied.set(serve(ka)) })
		e.refused(t, ch, z)
		if n := denied.hits.Load(); n != 0 {
			t.Errorf("the denied address got %d requests", n)
		}
	})
	t.Run("to another port", func(t *testing.T) {
		front.set(redirectTo("http://127.0.0.1:" + strconv.Itoa(otherPort.port)))
		ch, z := e.attempt(t, c, acme.AuthzID{Type: "dns", Value: "port.test"}, "http-01", func(_, ka string) { otherPort.set(serve(ka)) })
		e.refused(t, ch, z)
		if n := otherPort.hits.Load(); n != 0 {
			t.Errorf("the other port got %d requests", n)
		}
	})
	t.Run("within the rules", func(t *testing.T) {
		var ka atomic.Value
		front.set(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, prefix) {
				http.Redirect(w, r, "http://moved.test/elsewhere", http.StatusMovedPermanently)
				return
			}
			_, _ = w.Write([]byte(ka.Load().(string)))
		})
		ch, _ := e.attempt(t, c, acme.AuthzID{Type: "dns", Value: "ok.test"}, "http-01", func(_, k string) { ka.Store(k) })
		if ch.Status != acme.StatusValid {
			t.Fatalf("challenge %s (%v) after an allowed redirect", ch.Status, ch.Error)
		}
	})
}

// TestValidatorLargeBody: a 100 MiB challenge response (streamed by the
// responder, never held) fails the challenge after a few KiB, and the
// leader does not allocate for it.
func TestValidatorLargeBody(t *testing.T) {
	const size = 100 << 20
	front := newResponder(t, "127.0.0.1:0")
	var written atomic.Int64
	front.set(func(w http.ResponseWriter, _ *http.Request) {
		buf := bytes.Repeat([]byte("A"), 32<<10)
		for written.Load() < size {
			n, err := w.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	e := newEnv(t, func(c *Config) { c.HTTP01Port = front.port })
	c := e.newACMEClient(t)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ch, z := e.attempt(t, c, acme.AuthzID{Type: "dns", Value: "big.test"}, "http-01", func(string, string) {})
	runtime.ReadMemStats(&after)

	e.refused(t, ch, z)
	if ch.Status != acme.StatusInvalid {
		t.Errorf("challenge %s, want invalid", ch.Status)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 32<<20 {
		t.Errorf("validation allocated %d MiB", d>>20)
	}
	if w := written.Load(); w >= size {
		t.Errorf("the whole body (%d bytes) was read", w)
	}
}

// TestValidatorDeniedTargets: a name resolving to a denied address, an IP
// identifier in a denied range and this node's own listeners are refused,
// for http-01 and tls-alpn-01 alike, and never contacted.
func TestValidatorDeniedTargets(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cases := []struct {
		name string
		id   acme.AuthzID
		typ  string
		cfg  func(c *Config, ch *challenges)
	}{
		{"name, http-01", acme.AuthzID{Type: "dns", Value: "a.test"}, "http-01",
			func(c *Config, _ *challenges) { c.ValidatorDeny = loopback }},
		{"name, tls-alpn-01", acme.AuthzID{Type: "dns", Value: "b.test"}, "tls-alpn-01",
			func(c *Config, _ *challenges) { c.ValidatorDeny = loopback }},
		{"IP identifier, http-01", acme.AuthzID{Type: "ip", Value: "127.0.0.1"}, "http-01",
			func(c *Config, _ *challenges) { c.ValidatorDeny = loopback }},
		{"IP identifier, tls-alpn-01", acme.AuthzID{Type: "ip", Value: "127.0.0.1"}, "tls-alpn-01",
			func(c *Config, _ *challenges) { c.ValidatorDeny = loopback }},
		{"own listener on every address, http-01", acme.AuthzID{Type: "dns", Value: "c.test"}, "http-01",
			func(c *Config, ch *challenges) {
				c.ListenAddrs = []netip.AddrPort{netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(ch.httpPort))}
			}},
		{"own listener, tls-alpn-01", acme.AuthzID{Type: "dns", Value: "d.test"}, "tls-alpn-01",
			func(c *Config, ch *challenges) {
				c.ListenAddrs = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:" + strconv.Itoa(ch.tlsPort))}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := newChallenges(t)
			e := newEnv(t, func(c *Config) {
				c.DNSResolver, c.HTTP01Port, c.TLSALPN01Port = ch.dnsAddr, ch.httpPort, ch.tlsPort
				tc.cfg(c, ch)
			})
			c := e.newACMEClient(t)
			got, z := e.attempt(t, c, tc.id, tc.typ, func(token, ka string) {
				ch.setHTTP(token, ka)
				cert, err := c.TLSALPN01ChallengeCert(token, tc.id.Value)
				if err != nil {
					t.Fatal(err)
				}
				ch.setALPN(tc.id.Value, &cert)
				ch.setALPN("1.0.0.127.in-addr.arpa", &cert) // the SNI of an IP identifier (RFC 8738)
			})
			e.refused(t, got, z)
		})
	}
}

// TestValidatorClient checks the client on its own: the addresses it never
// dials, whatever the configuration, and the redirect limit.
func TestValidatorClient(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ValidationTimeout = 30 * time.Second
	v := newValidator(cfg)
	for _, u := range []string{
		"http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://0.0.0.0/",
		"http://[::]/", "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::a9fe:a9fe]/",
	} {
		start := time.Now()
		if _, err := v.Get(u); !errors.Is(err, ErrValidatorDenied) {
			t.Errorf("GET %s: %v, want ErrValidatorDenied", u, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("GET %s took %v: it tried to connect", u, d)
		}
	}
	if _, err := v.TLSDial("tcp", "169.254.169.254:443", nil); !errors.Is(err, ErrValidatorDenied) {
		t.Errorf("tls-alpn-01 to 169.254.169.254: %v, want ErrValidatorDenied", err)
	}
	if _, err := v.TLSDial("tcp", "192.0.2.1:22", nil); !errors.Is(err, ErrValidatorDenied) {
		t.Errorf("tls-alpn-01 to port 22: %v, want ErrValidatorDenied", err)
	}

	// /hop/n redirects n more times, then answers.
	r := newResponder(t, "127.0.0.1:0")
	r.set(func(w http.ResponseWriter, req *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(req.URL.Path, "/hop/"))
		if n == 0 {
			_, _ = w.Write([]byte("token.thumbprint\n"))
			return
		}
		http.Redirect(w, req, fmt.Sprintf("/hop/%d", n-1), http.StatusFound)
	})
	cfg.HTTP01Port = r.port
	v = newValidator(cfg)
	resp, err := v.Get(fmt.Sprintf("http://127.0.0.1/hop/%d", maxRedirects))
	if err != nil {
		t.Fatalf("%d redirects: %v", maxRedirects, err)
	}
	if b := readAll(t, resp); b != "token.thumbprint\n" {
		t.Errorf("body %q", b)
	}
	if _, err := v.Get(fmt.Sprintf("http://127.0.0.1/hop/%d", maxRedirects+1)); !errors.Is(err, ErrValidatorDenied) {
		t.Errorf("%d redirects: %v, want ErrValidatorDenied", maxRedirects+1, err)
	}
	r.set(serve("<html>\x00\x1b[31m" + strings.Repeat("x", 200)))
	resp, err = v.Get("http://127.0.0.1/page")
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp); len(b) > 200 || strings.ContainsAny(b, "\x00\x1b") {
		t.Errorf("a body not a key authorization reaches step-ca as %q", b)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDenyList: ranges, mapped and NAT64 forms, and own listeners.
func TestDenyList(t *testing.T) {
	d := newDenyList(
		[]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104"), netip.MustParsePrefix("2001:db8::/32")},
		[]netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:8443"), netip.MustParseAddrPort("192.0.2.7:443")},
	)
	d.localAddrs = func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("192.0.2.9")} }
	for addr, want := range map[string]bool{
		"169.254.169.254:80":           true,
		"[::ffff:169.254.169.254]:80":  true,
		"[64:ff9b::a9fe:a9fe]:80":      true,
		"[fe80::1%eth0]:80":            true,
		"0.0.0.0:80":                   true,
		"0.1.2.3:80":                   true,
		"[::]:443":                     true,
		"10.2.3.4:80":                  true,
		"[2001:db8::1]:443":            true,
		"127.0.0.1:8443":               true,
		"[::1]:8443":                   true,
		"192.0.2.9:8443":               true,
		"192.0.2.7:443":                true,
		"127.0.0.1:80":                 false,
		"192.0.2.7:80":                 false,
		"192.0.2.8:8443":               false,
		"172.16.0.1:443":               false,
		"[fd00::1]:443":                false,
		"[64:ff9b::a00:1]:80":          true, // 10.0.0.1 through NAT64
		"[64:ff9b::c000:201]:80":       false,
		"[::ffff:192.168.1.1]:443":     false,
		"[2001:db9::1]:443":            false,
		"[fe80::1%25lo]:443":           true,
		"[::ffff:0.0.0.0]:80":          true,
		"[64:ff9b::7f00:1]:8443":       false, // not this host: a NAT64 gateway's
		"[::ffff:127.0.0.1]:8443":      true,
		"[::ffff:192.0.2.9]:8443":      true,
		"[::ffff:192.0.2.7]:443":       true,
		"[::ffff:10.255.255.255]:1234": true,
	} {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if err := d.check(ap); (err != nil) != want {
			t.Errorf("%s: denied %v, want %v (%v)", addr, err != nil, want, err)
		}
	}
}

// FuzzReadChallenge: step-ca gets either a body that may be a key
// authorisation, as it came, or a short printable note.
func FuzzReadChallenge(f *testing.F) {
	f.Add([]byte("token.thumbprint\n"))
	f.Add([]byte("<html>\x00\xff"))
	f.Add(bytes.Repeat([]byte("a"), maxChallengeBody+1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := readChallenge(bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(out, in) && len(bytes.TrimSpace(in)) <= maxKeyAuth && isKeyAuth(bytes.TrimSpace(in)) {
			return
		}
		if len(out) > 400 {
			t.Fatalf("a note of %d bytes", len(out))
		}
		for _, c := range out {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("note %q holds an unprintable byte", out)
			}
		}
		if isKeyAuth(bytes.TrimSpace(out)) {
			t.Fatalf("note %q could pass for a key authorization", out)
		}
	})
}
