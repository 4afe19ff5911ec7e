// Package clientip carries the address of the client that sent a request
// from the node that received it to the node that serves it.
//
// A follower forwards ACME to the leader, so the leader's TCP peer is the
// follower, not the client. The follower's proxy puts the client address
// in the Header, and the leader's API believes that header only from a
// peer that proved it is a cluster member (a cluster-CA certificate of a
// current member, over mutual TLS); from anyone else the header is
// deleted before any handler sees it. Handlers read the address with Of,
// never from the header.
package clientip

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Header carries the client address from a follower's proxy to the leader.
const Header = "X-Custos-Client-Ip"

type ctxKey struct{}

// ContextKey is the key NewContext sets, to the address unmapped: a
// context type of the caller's own may answer it instead (the API's
// per-request context does).
func ContextKey() any { return ctxKey{} }

// NewContext returns ctx carrying ip as the client's address.
func NewContext(ctx context.Context, ip netip.Addr) context.Context {
	return context.WithValue(ctx, ctxKey{}, ip.Unmap())
}

// Of returns the client address of r: the one its context carries (set by
// the API from the connection or a trusted proxy), else the host of its
// RemoteAddr. It never reads Header.
func Of(r *http.Request) netip.Addr {
	if ip, ok := r.Context().Value(ctxKey{}).(netip.Addr); ok && ip.IsValid() {
		return ip
	}
	return Remote(r)
}

// Remote returns the host of r.RemoteAddr, the TCP peer; the zero Addr if
// it is not an address.
func Remote(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// Parse reads a Header value: one IP address, nothing else.
func Parse(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 64 {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// Key is the rate-limit key of ip: an IPv4 address as it is, an IPv6
// address by its /64, since one host commonly holds a whole /64.
func Key(ip netip.Addr) string {
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	if !ip.IsValid() {
		return "unknown"
	}
	return ip.String()
}
