package node

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/custos-pki/custos/api"
)

// serveVault starts the Vault-compatible API listener (Config.VaultAddr),
// if configured: HTTPS with the API's certificate, serving the Vault API at
// /v1/ (it is also served under /vault/ on the API port).
func (n *Node) serveVault(srv *api.Server, tlsCfg *tls.Config) error {
	if n.cfg.VaultAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.VaultAddr)
	if err != nil {
		return fmt.Errorf("node: Vault API listen: %w", err)
	}
	n.vaultLn = ln
	n.vaultHTTP = &http.Server{
		Handler:           srv.VaultHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	n.serveHTTP("Vault API", n.vaultHTTP, tls.NewListener(ln, tlsCfg))
	return nil
}

// VaultURL is the URL of the Vault API listener, or "" without one.
func (n *Node) VaultURL() string {
	if n.vaultLn == nil {
		return ""
	}
	return "https://" + n.vaultLn.Addr().String()
}
