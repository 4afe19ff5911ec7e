package stepca

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/smallstep/certificates/acme"
)

// validator is the acme.Client step-ca's challenge validation uses, with
// every DNS query sent to one resolver and the challenge ports set:
// step-ca's own client uses the system resolver, and its ports are package
// variables (acme.InsecurePortHTTP01), which custos does not touch. It is
// put in each request's context by the Server.
type validator struct {
	resolver string // host:port; empty: the system resolver
	httpPort string
	tlsPort  string
	timeout  time.Duration
	http     *http.Client
}

var _ acme.Client = (*validator)(nil)

func newValidator(resolver string, httpPort, tlsPort int, timeout time.Duration) *validator {
	v := &validator{
		resolver: resolver,
		httpPort: strconv.Itoa(httpPort),
		tlsPort:  strconv.Itoa(tlsPort),
		timeout:  timeout,
	}
	v.http = &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:             nil, // validation goes to the named host, never a proxy
			DialContext:       v.dial,
			DisableKeepAlives: true,
			// A redirect to https is followed as step-ca does: the
			// challenge response is checked, not the certificate.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as step-ca's validator
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
	return v
}

// Get fetches an http-01 challenge response. Port 80 is HTTP01Port.
func (v *validator) Get(url string) (*http.Response, error) { return v.http.Get(url) }

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

// dial connects to addr, its host resolved through the resolver and its
// port mapped to the configured challenge ports.
func (v *validator) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	switch port {
	case "80":
		port = v.httpPort
	case "443":
		port = v.tlsPort
	}
	ips, err := v.lookupIP(ctx, strings.TrimSuffix(host, "."))
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: v.timeout}
	var errs []error
	for _, ip := range ips {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (v *validator) lookupIP(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	if v.resolver == "" {
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		ips := make([]net.IP, len(addrs))
		for i, a := range addrs {
			ips[i] = a.IP
		}
		return ips, nil
	}
	var ips []net.IP
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := v.query(ctx, host, qt)
		if err != nil {
			return nil, err
		}
		for _, rr := range rrs {
			switch a := rr.(type) {
			case *dns.A:
				ips = append(ips, a.A)
			case *dns.AAAA:
				ips = append(ips, a.AAAA)
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
