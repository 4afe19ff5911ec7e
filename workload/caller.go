package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// peerCredentials is the gRPC transport "security" of the socket: it does
// no handshake, it records who connected.
type peerCredentials struct{}

var _ credentials.TransportCredentials = peerCredentials{}

// peerInfo is what the kernel told about a connection's peer.
type peerInfo struct {
	uid, gid uint32
	pid      int32
	start    uint64 // process start time, to detect a reused pid
}

func (peerInfo) AuthType() string { return "custos-peercred" }

func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, status.Error(codes.Unimplemented, "server side only")
}

func (peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uid, gid, pid, err := peerCred(conn)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	start, err := processStart(pid)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, peerInfo{uid: uid, gid: gid, pid: pid, start: start}, nil
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "custos-peercred"}
}
func (peerCredentials) Clone() credentials.TransportCredentials { return peerCredentials{} }

// OverrideServerName is part of the interface; there is no name to override.
func (peerCredentials) OverrideServerName(string) error { return nil }

// caller is an attested caller: its credentials and what was learnt from
// them.
type caller struct {
	peerInfo
	path   string // executable, "" when it could not be read
	sha256 string // of the executable, computed on demand
}

// attest identifies the caller of an RPC.
func attest(ctx context.Context) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer information")
	}
	pi, ok := p.AuthInfo.(peerInfo)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer credentials")
	}
	c := &caller{peerInfo: pi}
	// Reading another user's /proc/<pid>/exe needs privilege: without it the
	// caller has no path selector, and only uid and gid selectors can match.
	c.path, _ = processExe(pi.pid)
	if start, err := processStart(pi.pid); err != nil || start != pi.start {
		return nil, status.Error(codes.PermissionDenied, "the calling process has exited")
	}
	return c, nil
}

// matches reports whether the caller satisfies a canonical selector.
func (c *caller) matches(s string) bool {
	sel, err := ParseSelector(s)
	if err != nil {
		return false
	}
	switch sel.Type {
	case "uid":
		return sel.Value == strconv.FormatUint(uint64(c.uid), 10)
	case "gid":
		return sel.Value == strconv.FormatUint(uint64(c.gid), 10)
	case "user":
		u, err := user.LookupId(strconv.FormatUint(uint64(c.uid), 10))
		return err == nil && u.Username == sel.Value
	case "group":
		g, err := user.LookupGroupId(strconv.FormatUint(uint64(c.gid), 10))
		return err == nil && g.Name == sel.Value
	case "path":
		return c.path != "" && c.path == sel.Value
	case "sha256":
		return c.exeHash() != "" && c.exeHash() == sel.Value
	}
	return false
}

// matchesAll reports whether every selector of e holds.
func (c *caller) matchesAll(e Entry) bool {
	for _, s := range e.Selectors {
		if !c.matches(s) {
			return false
		}
	}
	return len(e.Selectors) > 0
}

// exeHash hashes the executable through /proc/<pid>/exe, which stays the
// file the process runs even if the path was replaced since.
func (c *caller) exeHash() string {
	if c.sha256 != "" || c.path == "" {
		return c.sha256
	}
	f, err := os.Open("/proc/" + strconv.Itoa(int(c.pid)) + "/exe")
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	if start, err := processStart(c.pid); err != nil || start != c.start {
		return "" // the process exited while it was hashed
	}
	c.sha256 = hex.EncodeToString(h.Sum(nil))
	return c.sha256
}
