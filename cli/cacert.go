package cli

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/ca"
	"github.com/spf13/cobra"
)

// The certificate commands of the CA: issue and sign under a role, and the
// inventory (list, show, revoke).

// caIssued is what issue prints: the answer, less the private key when it
// went to a file, and the files written.
type caIssued struct {
	api.CACertificateResponse
	Files []string `json:"files,omitempty"`
}

func (a *app) caIssueCmd() *cobra.Command {
	var (
		req      api.CAIssueRequest
		outDir   string
		printKey bool
	)
	cmd := &cobra.Command{
		Use:   "issue ROLE --common-name CN (--out-dir DIR | --print-key)",
		Short: "Issue a certificate with a key pair custos makes; the key is shown once and not kept",
		Long: "Issue a certificate under ROLE with a key pair custos makes. custos does not keep\n" +
			"the private key: --out-dir DIR writes cert.pem, key.pem (mode 0600) and chain.pem\n" +
			"(intermediate first); --print-key prints certificate, chain and key as PEM.",
		Example: `  custos ca issue web --common-name api.example.com --dns api.example.com --ttl 72h --out-dir /etc/tls/api
  custos ca issue mesh --uri spiffe://example.org/ns/prod/sa/web --print-key > bundle.pem`,
		Args: nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			switch {
			case outDir != "" && printKey:
				return usagef("give one of --out-dir and --print-key")
			case outDir == "" && !printKey:
				return usagef("custos does not keep the private key: give --out-dir DIR to save it, or --print-key to print it")
			}
			if err := checkDuration("ttl", req.TTL); err != nil {
				return err
			}
			if outDir != "" {
				// Before issuing: the key cannot be asked for again.
				if err := os.MkdirAll(outDir, 0o700); err != nil {
					return err
				}
			}
			var resp api.CACertificateResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/issue/"+pathSegment(args[0]), req, &resp); err != nil {
				return err
			}
			p := a.out(cmd)
			if printKey {
				if p.json() {
					return p.print(resp, nil)
				}
				return writePEM(cmd, append(append([]string{resp.Certificate}, resp.Chain...), resp.PrivateKey)...)
			}
			files, err := writeIssued(outDir, resp)
			if err != nil {
				return fmt.Errorf("%w; certificate %s was issued but its key is lost: revoke it", err, resp.Serial)
			}
			resp.PrivateKey = ""
			res := caIssued{CACertificateResponse: resp, Files: files}
			return p.print(res, func(t *table) {
				t.kv("Serial", resp.Serial)
				t.kv("Expires", resp.Expiration)
				t.kv("Certificate", files[0])
				t.kv("Private key", files[1])
				t.kv("Chain", files[2])
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.CommonName, "common-name", "", "the subject's common name")
	f.StringArrayVar(&req.DNSNames, "dns", nil, "DNS name SAN (repeatable)")
	f.StringArrayVar(&req.IPAddresses, "ip", nil, "IP address SAN (repeatable)")
	f.StringArrayVar(&req.URISANs, "uri", nil, "URI SAN, e.g. a SPIFFE ID (repeatable)")
	f.StringVar(&req.TTL, "ttl", "", "lifetime, e.g. 24h (default: the role's)")
	f.StringVar(&req.KeyType, "key-type", "", "key type: "+strings.Join(caKeyTypes, ", ")+" (default ecdsa-p256)")
	f.StringVar(&outDir, "out-dir", "", "write cert.pem, key.pem (0600) and chain.pem to this directory")
	f.BoolVar(&printKey, "print-key", false, "print the private key with the certificate on stdout")
	_ = cmd.RegisterFlagCompletionFunc("key-type", cobra.FixedCompletions(caKeyTypes, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.MarkFlagDirname("out-dir")
	return cmd
}

// writePEM writes PEM blocks to the command's output.
func writePEM(cmd *cobra.Command, blocks ...string) error {
	_, err := io.WriteString(cmd.OutOrStdout(), pemText(blocks...))
	return err
}

// writeIssued writes cert.pem, key.pem (0600) and chain.pem to dir and
// returns their paths.
func writeIssued(dir string, r api.CACertificateResponse) ([]string, error) {
	if r.PrivateKey == "" {
		return nil, errors.New("the server's answer has no private key")
	}
	files := []struct {
		name string
		data string
		perm os.FileMode
	}{
		{"cert.pem", pemText(r.Certificate), 0o644},
		{"key.pem", pemText(r.PrivateKey), 0o600},
		{"chain.pem", pemText(r.Chain...), 0o644},
	}
	var paths []string
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := writeFileAtomic(p, []byte(f.data), f.perm); err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func (a *app) caSignCmd() *cobra.Command {
	var ttl string
	cmd := &cobra.Command{
		Use:   "sign ROLE CSR_FILE|-",
		Short: "Sign a CSR (PEM or DER) under ROLE; prints the certificate and chain",
		Args:  nargs(2, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			if err := checkDuration("ttl", ttl); err != nil {
				return err
			}
			raw, err := readInput(cmd.InOrStdin(), args[1])
			if err != nil {
				return err
			}
			req := api.CASignRequest{CSR: csrPEM(raw), TTL: ttl}
			var resp api.CACertificateResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/sign/"+pathSegment(args[0]), req, &resp); err != nil {
				return err
			}
			if p := a.out(cmd); p.json() {
				return p.print(resp, nil)
			}
			return writePEM(cmd, append([]string{resp.Certificate}, resp.Chain...)...)
		}),
	}
	cmd.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 24h (default: the role's)")
	return cmd
}

// csrPEM returns a CSR as PEM: PEM is sent as it is, a DER CSR is wrapped.
// The server checks the rest.
func csrPEM(raw []byte) string {
	if b, _ := pem.Decode(raw); b != nil {
		return string(raw)
	}
	if _, err := x509.ParseCertificateRequest(raw); err == nil {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: raw}))
	}
	return string(raw)
}

func (a *app) caListCmd() *cobra.Command {
	var (
		expiring, san string
		role, status  string
		serial, after string
		limit         int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List and search the certificates of every issuance path (ACME, REST, step)",
		Example: `  custos ca list --expiring 72h
  custos ca list --role web --status valid --limit 0`,
		Args: nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			if err := checkDuration("expiring", expiring); err != nil {
				return err
			}
			switch ca.Status(status) {
			case "", ca.StatusValid, ca.StatusRevoked, ca.StatusExpired:
			default:
				return usagef("--status %q: use valid, revoked or expired", status)
			}
			if limit < 0 {
				return usagef("--limit %d: want 0 (all) or more", limit)
			}
			q := url.Values{}
			for k, v := range map[string]string{"expiring": expiring, "san": san, "role": role, "status": status, "serial": serial} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var list api.CACertList
			err := pages(after, limit, caMaxPage, func(after string, n int) (int, string, error) {
				setPage(q, after, n)
				var page api.CACertList
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/ca/certs?"+q.Encode(), nil, &page); err != nil {
					return 0, "", err
				}
				list.Certs = append(list.Certs, page.Certs...)
				list.Next = page.Next
				return len(page.Certs), page.Next, nil
			})
			if err != nil {
				return err
			}
			if list.Certs == nil {
				list.Certs = []api.CACert{}
			}
			if err := a.out(cmd).print(list, func(t *table) {
				t.row("SERIAL", "STATUS", "ROLE", "NOT AFTER", "NAMES")
				for _, ct := range list.Certs {
					t.row(ct.Serial, string(ct.Status), ct.Role, ct.NotAfter, certNames(ct))
				}
			}); err != nil {
				return err
			}
			return moreHint(cmd, a.out(cmd), list.Next)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&expiring, "expiring", "", "only certificates that expire within this time, e.g. 72h")
	f.StringVar(&role, "role", "", "only certificates of this role or provisioner")
	f.StringVar(&san, "san", "", "only certificates with this name (common name or SAN)")
	f.StringVar(&status, "status", "", "only certificates in this state: valid, revoked or expired")
	f.StringVar(&serial, "serial", "", "only the certificate with this serial")
	f.IntVar(&limit, "limit", 100, "show at most this many (0: all)")
	f.StringVar(&after, "after", "", "start after this point, as a previous list printed it")
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions([]string{"valid", "revoked", "expired"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// pages fetches pages starting after `after` until there is no next page
// or limit items came (limit 0: no limit). fetch is asked for n items (0:
// the server's page size) and returns how many came and the next cursor.
func pages(after string, limit, maxPage int, fetch func(after string, n int) (int, string, error)) error {
	got := 0
	for {
		n := 0
		if limit > 0 {
			n = min(limit-got, maxPage)
		}
		k, next, err := fetch(after, n)
		if err != nil {
			return err
		}
		got += k
		if next == "" || (limit > 0 && got >= limit) {
			return nil
		}
		after = next
	}
}

// setPage sets the after and limit query parameters.
func setPage(q url.Values, after string, n int) {
	q.Del("after")
	q.Del("limit")
	if after != "" {
		q.Set("after", after)
	}
	if n > 0 {
		q.Set("limit", strconv.Itoa(n))
	}
}

// moreHint tells people, on stderr, how to see the rest of a list; JSON
// has it in "next".
func moreHint(cmd *cobra.Command, p *printer, next string) error {
	if next == "" || p.json() {
		return nil
	}
	_, err := fmt.Fprintf(cmd.ErrOrStderr(), "There are more: run again with --after %s\n", next)
	return err
}

// certNames lists a certificate's common name and SANs, each once.
func certNames(c api.CACert) []string {
	var names []string
	for _, n := range slices.Concat([]string{c.CommonName}, c.DNSNames, c.IPAddresses, c.URISANs) {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

func (a *app) caShowCmd() *cobra.Command {
	var pemOnly bool
	cmd := &cobra.Command{
		Use:   "show SERIAL",
		Short: "Show a certificate of the inventory (serial in hex, colons allowed)",
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			var ct api.CACert
			if err := c.call(cmd.Context(), http.MethodGet, "/v1/ca/certs/"+pathSegment(args[0]), nil, &ct); err != nil {
				return err
			}
			p := a.out(cmd)
			if pemOnly && !p.json() {
				return writePEM(cmd, ct.Certificate)
			}
			return p.print(ct, func(t *table) {
				renderCert(t, ct)
				t.text("")
				t.text("%s", strings.TrimSuffix(ct.Certificate, "\n"))
			})
		}),
	}
	cmd.Flags().BoolVar(&pemOnly, "pem", false, "print only the certificate, in PEM")
	return cmd
}

func renderCert(t *table, c api.CACert) {
	t.kv("Serial", c.Serial)
	t.kv("Status", string(c.Status))
	t.kv("Common name", c.CommonName)
	t.kv("DNS names", c.DNSNames)
	t.kv("IP addresses", c.IPAddresses)
	t.kv("URI SANs", c.URISANs)
	t.kv("Not before", c.NotBefore)
	t.kv("Not after", c.NotAfter)
	t.kv("Issuer", c.Issuer)
	t.kv("Source", c.Source)
	t.kv("Role", c.Role)
	if c.Status == ca.StatusRevoked || !c.RevokedAt.IsZero() {
		t.kv("Revoked at", c.RevokedAt)
		t.kv("Revocation reason", reasonName(c.RevocationReason))
	}
}

// caReasons are the RFC 5280 CRLReason names the CA accepts (not 7,
// unused, nor 8, removeFromCRL, which is for delta CRLs).
var caReasons = []struct {
	name string
	code int
}{
	{"unspecified", 0}, {"keyCompromise", 1}, {"cACompromise", 2}, {"affiliationChanged", 3},
	{"superseded", 4}, {"cessationOfOperation", 5}, {"certificateHold", 6},
	{"privilegeWithdrawn", 9}, {"aACompromise", 10},
}

// parseReason takes a reason name in any case, with or without - or _.
func parseReason(s string) (int, error) {
	norm := func(s string) string { return strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s)) }
	names := make([]string, len(caReasons))
	for i, r := range caReasons {
		if norm(r.name) == norm(s) {
			return r.code, nil
		}
		names[i] = r.name
	}
	return 0, usagef("--reason %q: use one of %s", s, strings.Join(names, ", "))
}

func reasonName(code int) string {
	for _, r := range caReasons {
		if r.code == code {
			return r.name
		}
	}
	return "reason " + strconv.Itoa(code)
}

func (a *app) caRevokeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke SERIAL [--reason NAME]",
		Short: "Revoke a certificate; it appears in the next CRL and OCSP answers revoked",
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			code, err := parseReason(reason)
			if err != nil {
				return err
			}
			var ct api.CACert
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/revoke", api.CARevokeRequest{Serial: args[0], Reason: code}, &ct); err != nil {
				return err
			}
			return a.out(cmd).line(ct, "Revoked %s (%s) at %s", ct.Serial, reasonName(ct.RevocationReason), cell(ct.RevokedAt))
		}),
	}
	names := make([]string, len(caReasons))
	for i, r := range caReasons {
		names[i] = r.name
	}
	cmd.Flags().StringVar(&reason, "reason", "unspecified", "RFC 5280 reason: "+strings.Join(names, ", "))
	_ = cmd.RegisterFlagCompletionFunc("reason", cobra.FixedCompletions(names, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
