package node

import (
	"context"
	"crypto/tls"
	"errors"
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
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.vaultHTTP.Serve(tls.NewListener(ln, tlsCfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("Vault API server stopped", "error", err)
		}
	}()
	return nil
}

// stopVault stops the Vault API listener, letting requests in flight finish.
func (n *Node) stopVault() {
	if n.vaultHTTP == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.vaultHTTP.Shutdown(ctx)
}

// VaultURL is the URL of the Vault API listener, or "" without one.
func (n *Node) VaultURL() string {
	if n.vaultLn == nil {
		return ""
	}
	return "https://" + n.vaultLn.Addr().String()
}
