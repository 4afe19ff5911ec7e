package stepca

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/smallstep/certificates/acme"
)

// Limits of one http-01 validation.
const (
	// maxRedirects is how many redirects a validation follows.
	maxRedirects = 10
	// maxChallengeBody is the most of a response body the validator
	// reads: a key authorisation is under 200 bytes.
	maxChallengeBody = 4 << 10
	// maxKeyAuth is the longest body handed to step-ca as it came.
	maxKeyAuth = 256
	// echoBytes is how much of any other body reaches step-ca (and so its
	// errors and logs), escaped.
	echoBytes = 64
	// maxHeaderBytes bounds the response headers.
	maxHeaderBytes = 16 << 10
)

// ErrValidatorDenied is the error of a connection the ACME validator
// refuses to make: to a denied address, or to a port that is not a
// challenge port.
var ErrValidatorDenied = errors.New("stepca: the ACME validator may not connect there")

// AlwaysDenied returns the address ranges the ACME validator never connects
// to, whatever the configuration: the unspecified addresses (0.0.0.0/8,
// ::), which reach the host itself, and link-local addresses (169.254.0.0/16
// with the cloud metadata service at 169.254.169.254, and fe80::/10).
func AlwaysDenied() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("::/128"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("fe80::/10"),
	}
}

// nat64 is the well-known NAT64 prefix (RFC 6052): an address in it reaches
// the IPv4 address in its last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// validator is the acme.Client step-ca's challenge validation uses, with
// every DNS query sent to one resolver and the challenge ports set:
// step-ca's own client uses the system resolver, and its ports are package
// variables (acme.InsecurePortHTTP01), which custos does not touch. It is
// put in each request's context by the Server.
//
// It connects only to the challenge ports (80 and 443, mapped to the
// configured ones) and never to a denied address: each address a name
// resolves to is checked when it is dialled, for every request, redirect
// and tls-alpn-01 handshake, so a name that resolves elsewhere on a second
// lookup (DNS rebinding) gains nothing.
type validator struct {
	resolver string // host:port; empty: the system resolver
	httpPort uint16
	tlsPort  uint16
	timeout  time.Duration
	deny     denyList
	http     *http.Client
}

var _ acme.Client = (*validator)(nil)

func newValidator(cfg Config) *validator {
	v := &validator{
		resolver: cfg.DNSResolver,
		httpPort: uint16(cfg.HTTP01Port),
		tlsPort:  uint16(cfg.TLSALPN01Port),
		timeout:  cfg.ValidationTimeout,
		deny:     newDenyList(cfg.ValidatorDeny, cfg.ListenAddrs),
	}
	v.http = &http.Client{
		Timeout: v.timeout,
		Transport: &http.Transport{
			Proxy:                  nil, // validation goes to the named host, never a proxy
			DialContext:            v.dial,
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: maxHeaderBytes,
			// A redirect to https is followed as step-ca does: the
			// challenge response is checked, not the certificate.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as step-ca's validator
		},
		CheckRedirect: v.checkRedirect,
	}
	return v
}

// checkRedirect follows at most maxRedirects redirects, to http or https
// on a challenge port.
func (v *validator) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrValidatorDenied, maxRedirects)
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return fmt.Errorf("%w: redirect to scheme %q: only http and https", ErrValidatorDenied, s)
	}
	if p := req.URL.Port(); p != "" {
		if _, err := v.port(p); err != nil {
			return fmt.Errorf("redirect: %w", err)
		}
	}
	return nil
}

// Get fetches an http-01 challenge response. Port 80 is HTTP01Port.
//
// It reads at most maxChallengeBody bytes of the body and hands step-ca
// (which reads the body whole, and puts it in its error when it does not
// match) either a body that may be a key authorisation, as it came, or a
// short escaped prefix of any other, which cannot match.
func (v *validator) Get(url string) (*http.Response, error) {
	resp, err := v.http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body []byte
	if resp.StatusCode < 400 { // step-ca does not read the body of an error
		if body, err = readChallenge(resp.Body); err != nil {
			return nil, fmt.Errorf("read the response: %w", err)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// readChallenge reads an http-01 response body: a key authorisation is
// passed as it came (base64url and a dot, with white space around it); any
// other body is replaced by a note with its first echoBytes bytes, quoted.
func readChallenge(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxChallengeBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxChallengeBody {
		return fmt.Appendf(nil, "(a body over %d bytes, starting %s)", maxChallengeBody, quotePrefix(b)), nil
	}
	if t := bytes.TrimSpace(b); len(t) <= maxKeyAuth && isKeyAuth(t) {
		return b, nil
	}
	return fmt.Appendf(nil, "(not a key authorization: %s)", quotePrefix(b)), nil
}

func quotePrefix(b []byte) string {
	if len(b) > echoBytes {
		return strconv.QuoteToASCII(string(b[:echoBytes])) + "..."
	}
	return strconv.QuoteToASCII(string(b))
}

// isKeyAuth reports whether b is made of the characters of a key
// authorisation: base64url and the dot between token and thumbprint.
func isKeyAuth(b []byte) bool {
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// LookupTxt returns the TXT records at name, each record's strings joined.
func (v *validator) LookupTxt(name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
	defer cancel()
	if v.resolver == "" {
		return net.DefaultResolver.LookupTXT(ctx, name)
	}
	rrs, err := v.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}

// TLSDial connects for a tls-alpn-01 validation. Port 443 is TLSALPN01Port.
func (v *validator) TLSDial(network, addr string, config *tls.Config) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
	defer cancel()
	raw, err := v.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, config)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

// port maps a challenge port to the configured one (80 to HTTP01Port, 443
// to TLSALPN01Port); a configured port stays itself; any other is refused.
func (v *validator) port(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%w: port %q", ErrValidatorDenied, s)
	case p == 80:
		return v.httpPort, nil
	case p == 443:
		return v.tlsPort, nil
	case uint16(p) == v.httpPort || uint16(p) == v.tlsPort:
		return uint16(p), nil
	}
	return 0, fmt.Errorf("%w: port %d: only 80 and 443", ErrValidatorDenied, p)
}

// dial connects to addr, its host resolved through the resolver and its
// port mapped to the configured challenge ports, to the first resolved
// address that is not denied and answers.
func (v *validator) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := v.port(ps)
	if err != nil {
		return nil, err
	}
	ips, err := v.lookupIP(ctx, strings.TrimSuffix(host, "."))
	if err != nil {
		return nil, err
	}
	// The check is made again on the socket's address (Control), so
	// nothing between here and connect(2) can change where it goes.
	d := net.Dialer{Timeout: v.timeout, Control: v.control}
	var errs []error
	for _, ip := range ips {
		to := netip.AddrPortFrom(ip, port)
		if err := v.deny.check(to); err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := d.DialContext(ctx, network, to.String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// control refuses a socket whose address is denied.
func (v *validator) control(_, address string, _ syscall.RawConn) error {
	to, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: address %q", ErrValidatorDenied, address)
	}
	return v.deny.check(to)
}

func (v *validator) lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	if v.resolver == "" {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		return addrs, nil
	}
	var ips []netip.Addr
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := v.query(ctx, host, qt)
		if err != nil {
			return nil, err
		}
		for _, rr := range rrs {
			var ip net.IP
			switch a := rr.(type) {
			case *dns.A:
				ip = a.A
			case *dns.AAAA:
				ip = a.AAAA
			}
			if addr, ok := netip.AddrFromSlice(ip); ok {
				ips = append(ips, addr.Unmap())
			}
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("no A or AAAA records for %s", host)
	}
	return ips, nil
}

// query asks the resolver, over UDP and over TCP when the answer is
// truncated. A name that does not exist has no records.
func (v *validator) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	c := &dns.Client{Timeout: v.timeout}
	in, _, err := c.ExchangeContext(ctx, m, v.resolver)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, v.resolver)
	}
	if err != nil {
		return nil, fmt.Errorf("dns %s %s: %w", dns.TypeToString[qtype], name, err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return in.Answer, nil
	}
	return nil, fmt.Errorf("dns %s %s: %s", dns.TypeToString[qtype], name, dns.RcodeToString[in.Rcode])
}

// denyList is where the validator may not connect: address ranges, and
// this node's listeners.
type denyList struct {
	prefixes []netip.Prefix
	own      map[netip.AddrPort]bool
	// anyLocal are the ports of listeners on an unspecified address: on
	// those ports every address of this host is denied.
	anyLocal map[uint16]bool
	// localAddrs returns the addresses of this host's interfaces.
	localAddrs func() []netip.Addr
}

func newDenyList(extra []netip.Prefix, listeners []netip.AddrPort) denyList {
	d := denyList{own: map[netip.AddrPort]bool{}, anyLocal: map[uint16]bool{}, localAddrs: interfaceAddrs}
	for _, p := range append(AlwaysDenied(), extra...) {
		d.prefixes = append(d.prefixes, normalPrefix(p))
	}
	for _, l := range listeners {
		ip := l.Addr().WithZone("").Unmap()
		if ip.IsUnspecified() {
			d.anyLocal[l.Port()] = true
			continue
		}
		d.own[netip.AddrPortFrom(ip, l.Port())] = true
	}
	return d
}

// check returns an error wrapping ErrValidatorDenied if to is denied.
func (d denyList) check(to netip.AddrPort) error {
	ip, port := to.Addr().WithZone("").Unmap(), to.Port()
	addrs := []netip.Addr{ip}
	if nat64.Contains(ip) {
		b := ip.As16()
		addrs = append(addrs, netip.AddrFrom4([4]byte(b[12:])))
	}
	for _, a := range addrs {
		for _, p := range d.prefixes {
			if p.Contains(a) {
				return fmt.Errorf("%w: %s is in the denied range %s", ErrValidatorDenied, ip, p)
			}
		}
	}
	if d.own[netip.AddrPortFrom(ip, port)] || d.anyLocal[port] && d.isLocal(ip) {
		return fmt.Errorf("%w: %s is this node's own listener", ErrValidatorDenied, netip.AddrPortFrom(ip, port))
	}
	return nil
}

func (d denyList) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	for _, a := range d.localAddrs() {
		if a == ip {
			return true
		}
	}
	return false
}

// interfaceAddrs returns the addresses of this host's interfaces, read at
// each call: they may change while the node runs.
func interfaceAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// normalPrefix writes an IPv4-mapped prefix (::ffff:10.0.0.0/104) as the
// IPv4 prefix it covers, since addresses are checked unmapped.
func normalPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}
