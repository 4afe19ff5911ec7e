//go:build linux

package workload

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The kernel's account of a Unix socket peer is what identifies a caller.
func TestPeerCredentialsOfARealSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	cli, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv := <-accepted
	_, info, err := peerCredentials{}.ServerHandshake(srv)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	pi := info.(peerInfo)
	if int(pi.uid) != os.Getuid() || int(pi.gid) != os.Getgid() || int(pi.pid) != os.Getpid() || pi.start == 0 {
		t.Fatalf("peer %+v, want uid %d gid %d pid %d", pi, os.Getuid(), os.Getgid(), os.Getpid())
	}
	c := &caller{peerInfo: pi}
	c.path, _ = processExe(pi.pid)
	exe, _ := os.Executable()
	uid := strconv.Itoa(os.Getuid())
	for sel, want := range map[string]bool{
		"unix:uid:" + uid:                         true,
		"unix:uid:" + strconv.Itoa(os.Getuid()+1): false,
		"unix:gid:" + strconv.Itoa(os.Getgid()):   true,
		"unix:path:" + exe:                        true,
		"unix:path:/bin/true":                     false,
		"unix:sha256:" + c.exeHash():              true,
	} {
		if got := c.matches(sel); got != want {
			t.Errorf("matches(%s) = %t, want %t", sel, got, want)
		}
	}
	if c.matchesAll(Entry{Selectors: []string{"unix:uid:" + uid, "unix:path:/bin/true"}}) || c.matchesAll(Entry{}) {
		t.Fatal("an entry matched with a selector that does not hold, or with none")
	}
	if _, _, _, err := peerCred(&net.TCPConn{}); err == nil {
		t.Fatal("peer credentials of a TCP connection")
	}
}
