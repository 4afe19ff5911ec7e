package testutil

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeAddr returns a loopback address whose port was free when it was
// chosen, for a server a test starts later.
//
// The port is taken below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range): a port handed out by a listen on port 0
// and closed again comes from that range, and until the server binds it
// any outgoing connection of any process may take it as its source port
// (a node restarted on its old address, or started after the others have
// begun talking, then fails with "address already in use"). Below the
// range only another test choosing at random could take it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	const first = 10000
	for range 100 {
		port := first + rand.IntN(low-first)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	t.Fatal("testutil: no free port below the ephemeral range")
	return ""
}

// ephemeralLow is the lowest port of the kernel's ephemeral range, or
// 32768 where it cannot be read.
func ephemeralLow() int {
	const fallback = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return fallback
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 11000 {
		return fallback
	}
	return n
}
