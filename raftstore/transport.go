package raftstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// TLS material for the cluster port. Every node's certificate is issued by
// the cluster CA (kept apart from the workload CA) and names the node's Raft
// server ID as its common name and as a DNS name, for both server and client
// authentication.
type TLSMaterial struct {
	Certificate tls.Certificate
	RootCAs     *x509.CertPool
}

func (m TLSMaterial) validate(id string) error {
	if len(m.Certificate.Certificate) == 0 || m.RootCAs == nil {
		return errors.New("TLS: a node certificate and the cluster CA are required")
	}
	leaf, err := x509.ParseCertificate(m.Certificate.Certificate[0])
	if err != nil {
		return fmt.Errorf("TLS: node certificate: %w", err)
	}
	if leaf.Subject.CommonName != id {
		return fmt.Errorf("TLS: node certificate is for %q, not for node ID %q", leaf.Subject.CommonName, id)
	}
	return nil
}

// Connection kinds: the first byte a dialer writes after the handshake.
const (
	connRaft    byte = 'R'
	connForward byte = 'M' // multiplexed forwarding; the one-request-at-a-time 'F' is gone
)

// DialFunc opens a plain TCP connection; the store adds TLS on top. Tests use
// it to put a fault-injecting layer between nodes.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// mux serves Raft and request forwarding on one TLS listener.
type mux struct {
	id         string
	ln         net.Listener
	serverTLS  *tls.Config
	tlsm       atomic.Pointer[TLSMaterial]
	dial       DialFunc
	expectedID func(addr string) (string, bool)
	// admit decides whether an authenticated peer may open a connection;
	// until it is set (Raft is starting) every connection is refused.
	admit atomic.Pointer[admitFunc]

	raftCh    chan net.Conn
	forwardCh chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

const handshakeTimeout = 5 * time.Second

func newMux(id string, ln net.Listener, tlsm TLSMaterial, dial DialFunc, expectedID func(string) (string, bool)) *mux {
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	m := &mux{
		id: id, ln: ln, dial: dial, expectedID: expectedID,
		raftCh:    make(chan net.Conn),
		forwardCh: make(chan net.Conn),
		done:      make(chan struct{}),
	}
	m.tlsm.Store(&tlsm)
	m.serverTLS = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cur := m.tlsm.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{cur.Certificate},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    cur.RootCAs,
				VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
					return checkNodeCert(chains)
				},
			}, nil
		},
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

// checkNodeCert requires a verified chain whose leaf names a node.
func checkNodeCert(chains [][]*x509.Certificate) error {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return ErrPeerIdentity
	}
	leaf := chains[0][0]
	if leaf.Subject.CommonName == "" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != leaf.Subject.CommonName {
		return fmt.Errorf("%w: not a node certificate", ErrPeerIdentity)
	}
	return nil
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go m.handshake(c)
	}
}

// handshake runs the TLS handshake and reads the connection kind, off the
// accept loop so a slow peer cannot hold it up.
func (m *mux) handshake(raw net.Conn) {
	c := tls.Server(raw, m.serverTLS)
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	var kind [1]byte
	if err := c.Handshake(); err != nil {
		c.Close()
		return
	}
	if _, err := c.Read(kind[:]); err != nil {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	peer := peerID(c)
	if !m.mayConnect(peer) {
		c.Close()
		return
	}
	var ch chan net.Conn
	var conn net.Conn = c
	switch kind[0] {
	case connRaft:
		ch = m.raftCh
		conn = &memberConn{Conn: c, m: m, peer: peer, checked: time.Now()}
	case connForward:
		ch = m.forwardCh
	default:
		c.Close()
		return
	}
	select {
	case ch <- conn:
	case <-m.done:
		c.Close()
	}
}

// admitFunc reports whether a peer may connect (Store.mayConnect).
type admitFunc struct{ ok func(id string) bool }

func (m *mux) mayConnect(id string) bool {
	a := m.admit.Load()
	return a != nil && id != "" && a.ok(id)
}

// memberConn is a Raft connection that closes itself once its peer is no
// longer a member, so that a removed node cannot go on using a connection
// it opened before its removal.
type memberConn struct {
	net.Conn
	m       *mux
	peer    string
	checked time.Time
}

// memberRecheck is how often a Raft connection re-checks its peer; Raft
// reads from a buffered reader, so this is per buffer, not per message.
const memberRecheck = 200 * time.Millisecond

func (c *memberConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	// Checked when the data has come: a read may have waited a long time.
	if now := time.Now(); n > 0 && now.Sub(c.checked) > memberRecheck {
		if !c.m.mayConnect(c.peer) {
			c.Conn.Close()
			return 0, fmt.Errorf("%w: %q is no longer a member", ErrPeerIdentity, c.peer)
		}
		c.checked = now
	}
	return n, err
}

// dialPeer connects to the node with server ID wantID at addr and checks that
// its certificate names that ID.
func (m *mux) dialPeer(ctx context.Context, addr, wantID string, kind byte) (net.Conn, error) {
	raw, err := m.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	cur := m.tlsm.Load()
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cur.Certificate},
		RootCAs:      cur.RootCAs,
		ServerName:   wantID,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if err := checkNodeCert(chains); err != nil {
				return err
			}
			if got := chains[0][0].Subject.CommonName; got != wantID {
				return fmt.Errorf("%w: %s presented a certificate for %q", ErrPeerIdentity, addr, got)
			}
			return nil
		},
	}
	c := tls.Client(raw, cfg)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		var cve *tls.CertificateVerificationError
		if errors.As(err, &cve) || errors.Is(err, ErrPeerIdentity) {
			return nil, fmt.Errorf("%w: %v", ErrPeerIdentity, err)
		}
		return nil, err
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func (m *mux) close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

// peerID returns the server ID a mux connection's peer authenticated as.
func peerID(c net.Conn) string {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	m  *mux
	ch chan net.Conn
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.m.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.m.ln.Addr() }

// raftLayer is the raft.StreamLayer of the mux.
type raftLayer struct{ chanListener }

var _ raft.StreamLayer = (*raftLayer)(nil)

func (l *raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, ok := l.m.expectedID(string(addr))
	if !ok {
		return nil, fmt.Errorf("%w: no server with address %s in the configuration", ErrPeerIdentity, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.m.dialPeer(ctx, string(addr), id, connRaft)
}
