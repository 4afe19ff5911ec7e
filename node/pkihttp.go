package node

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/custos-pki/custos/api"
)

// servePKI starts the plain-HTTP PKI listener (Config.PKIHTTPAddr), if
// configured: roots, chain, issuer certificates, CRLs and OCSP, and no
// other route. Nothing on it is secret and everything it serves is signed,
// so it needs no TLS; it has short timeouts and small bodies, since anyone
// may reach it.
func (n *Node) servePKI(srv *api.Server) error {
	if n.cfg.PKIHTTPAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.PKIHTTPAddr)
	if err != nil {
		return fmt.Errorf("node: PKI HTTP listen: %w", err)
	}
	n.pkiLn = ln
	n.pkiHTTP = &http.Server{
		Handler:           srv.PKIHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	n.serveHTTP("PKI HTTP", n.pkiHTTP, ln)
	return nil
}

// pkiURLBase is the URL base of the OCSP, CA issuers and CRL URLs in the
// certificates this node issues (see Config.PKIURLBase).
func (n *Node) pkiURLBase() string {
	switch {
	case n.cfg.PKIURLBase != "":
		return strings.TrimSuffix(n.cfg.PKIURLBase, "/")
	case n.pkiLn != nil:
		addr := n.cfg.PKIHTTPAddr
		if !namesHost(addr) {
			addr = n.cfg.APIAdvertise // Validate saw that one of them names a host
		}
		host, _, _ := net.SplitHostPort(addr)
		_, port, _ := net.SplitHostPort(n.pkiLn.Addr().String())
		return "http://" + net.JoinHostPort(host, port)
	}
	return "https://" + n.cfg.APIAdvertise
}

// PKIURL is the URL of the plain-HTTP PKI listener, or "" without one.
func (n *Node) PKIURL() string {
	if n.pkiLn == nil {
		return ""
	}
	return "http://" + n.pkiLn.Addr().String()
}
