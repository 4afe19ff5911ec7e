package cli

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// caKeyTypes are the key types issue can generate.
var caKeyTypes = []string{"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"}

// caMaxPage is the largest page the inventory answers.
const caMaxPage = 1000

func (a *app) caCmd() *cobra.Command {
	return group("ca", "Run the certificate authority: roots, roles, issuance, inventory and revocation",
		a.caInitCmd(),
		a.caACMECmd(),
		a.caStepCmd(),
		a.caFetchCmd("roots", "Print the root certificates (DER: the active root only)", "/v1/ca/roots", "certificates", false),
		a.caFetchCmd("chain", "Print the active issuing chain, intermediate first", "/v1/ca/chain", "certificates", false),
		a.caFetchCmd("crl", "Print the CRL of the active intermediate, or of an earlier one", "/v1/ca/crl", "crl", true),
		group("role", "Write, read, list and delete the roles REST issuance follows",
			a.caRoleWriteCmd(),
			&cobra.Command{
				Use:   "read NAME",
				Short: "Show a role",
				Args:  nargs(1, 1),
				RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
					var r api.CARole
					if err := c.call(cmd.Context(), http.MethodGet, caRolePath(args[0]), nil, &r); err != nil {
						return err
					}
					return a.out(cmd).print(r, func(t *table) { renderRole(t, r) })
				}),
			},
			&cobra.Command{
				Use:   "list",
				Short: "List the roles",
				Args:  nargs(0, 0),
				RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
					var resp api.ListResponse
					if err := c.call(cmd.Context(), http.MethodGet, "/v1/ca/roles", nil, &resp); err != nil {
						return err
					}
					return a.out(cmd).print(resp, func(t *table) {
						for _, k := range resp.Keys {
							t.text("%s", k)
						}
					})
				}),
			},
			&cobra.Command{
				Use:   "delete NAME",
				Short: "Delete a role; certificates it issued stay valid",
				Args:  nargs(1, 1),
				RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
					if err := c.call(cmd.Context(), http.MethodDelete, caRolePath(args[0]), nil, nil); err != nil {
						return err
					}
					return a.out(cmd).line(nil, "Deleted role %s", args[0])
				}),
			},
		),
		a.caIssueCmd(),
		a.caSignCmd(),
		a.caListCmd(),
		a.caShowCmd(),
		a.caRevokeCmd(),
		a.caWorkloadCmd(),
		group("intermediate", "Have the intermediate signed by an external root, or rotate it",
			a.caIntermediateCSRCmd(),
			a.caChainCmd("set FILE|-", "Install the intermediate an external root signed (PEM: it, then its issuers up to the root)",
				"/v1/ca/intermediate/set", 1),
			a.caChainCmd("rotate", "Make a new intermediate; the old one stays for verification until its certificates expire",
				"/v1/ca/intermediate/rotate", 0),
		),
	)
}

func caRolePath(name string) string { return "/v1/ca/roles/" + pathSegment(name) }

// Encodings of certificates and CRLs.
const (
	formatPEM = "pem"
	formatDER = "der"
)

// caFileResult is what a command that wrote a file prints with -o json.
type caFileResult struct {
	File   string `json:"file"`
	Format string `json:"format,omitempty"`
	Bytes  int    `json:"bytes"`
}

// caFetchCmd makes roots, chain and crl: public PEM or DER documents,
// written as they come to stdout or --out. With -o json the PEM blocks are
// printed as a JSON list under jsonKey. byIssuer adds --issuer, which
// names an earlier intermediate in the path.
func (a *app) caFetchCmd(use, short, path, jsonKey string, byIssuer bool) *cobra.Command {
	var format, out, issuer string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			p := a.out(cmd)
			switch {
			case format != formatPEM && format != formatDER:
				return usagef("--format %q: use pem or der", format)
			case p.json() && out == "" && format == formatDER:
				return usagef("-o json prints PEM; write DER to a file with --out")
			}
			q := path
			if issuer != "" {
				q += "/" + pathSegment(issuer)
			}
			var buf cappedBuffer
			if err := c.download(cmd.Context(), q+"?"+url.Values{"format": {format}}.Encode(), &buf); err != nil {
				return err
			}
			data := buf.Bytes()
			if out != "" {
				if err := writeFileAtomic(out, data, 0o644); err != nil {
					return err
				}
				return p.line(caFileResult{File: out, Format: format, Bytes: len(data)}, "Wrote %d bytes of %s to %s", len(data), strings.ToUpper(format), out)
			}
			if p.json() {
				return p.print(map[string][]string{jsonKey: pemBlocks(data)}, nil)
			}
			_, err := cmd.OutOrStdout().Write(data)
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", formatPEM, "encoding: pem or der")
	f.StringVar(&out, "out", "", "write to this file instead of stdout")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{formatPEM, formatDER}, cobra.ShellCompDirectiveNoFileComp))
	if byIssuer {
		f.StringVar(&issuer, "issuer", "", "the CRL of this earlier intermediate (its ID) instead of the active one")
	}
	return cmd
}

// pemBlocks splits PEM data into its blocks, each re-encoded alone.
func pemBlocks(data []byte) []string {
	out := []string{}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		out = append(out, string(pem.EncodeToMemory(b)))
	}
}

// cappedBuffer collects a download of at most maxResponseBytes.
type cappedBuffer struct{ bytes.Buffer }

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > maxResponseBytes {
		return 0, fmt.Errorf("the answer is %w of %d bytes", errTooLarge, maxResponseBytes)
	}
	return b.Buffer.Write(p)
}

// writeFileAtomic writes data to path with perm through a temporary file
// renamed into place, so a reader (a TLS server reloading its certificate)
// never sees half a file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// readInput reads a file, or stdin for "-".
func readInput(in io.Reader, file string) ([]byte, error) {
	if file != "-" {
		return readFileLimited(file)
	}
	b, err := readLimited(in, maxInputBytes)
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	return b, nil
}

// checkDuration refuses a flag value that is not a Go duration.
func checkDuration(flag, v string) error {
	if v == "" {
		return nil
	}
	if d, err := time.ParseDuration(v); err != nil || d < 0 {
		return usagef("--%s %q: want a duration such as 72h or 30m", flag, v)
	}
	return nil
}

func (a *app) caInitCmd() *cobra.Command {
	var req api.CAInitRequest
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the root CA and its intermediate, their keys generated and kept in kms",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			for flag, v := range map[string]string{"root-ttl": req.RootTTL, "intermediate-ttl": req.IntermediateTTL} {
				if err := checkDuration(flag, v); err != nil {
					return err
				}
			}
			var resp api.CAChainResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/init", req, &resp); err != nil {
				return err
			}
			return a.out(cmd).print(resp, func(t *table) { renderChain(t, resp.Chain) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.CommonName, "common-name", "", "common name of the root (default: the server's)")
	f.StringVar(&req.KeyType, "key-type", "", "key type of the CA keys, e.g. ecdsa-p256 (default: the server's)")
	f.StringVar(&req.RootTTL, "root-ttl", "", "lifetime of the root, e.g. 87600h")
	f.StringVar(&req.IntermediateTTL, "intermediate-ttl", "", "lifetime of the intermediate, e.g. 43800h")
	return cmd
}

// caChainCmd makes the intermediate commands that answer with the new
// chain: set (one FILE|- argument, the certificate) and rotate.
func (a *app) caChainCmd(use, short, path string, args int) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  nargs(args, args),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			var req any
			if len(args) == 1 {
				pemBytes, err := readInput(cmd.InOrStdin(), args[0])
				if err != nil {
					return err
				}
				req = api.CASetIntermediateRequest{Certificate: string(pemBytes)}
			}
			var resp api.CAChainResponse
			if err := c.call(cmd.Context(), http.MethodPost, path, req, &resp); err != nil {
				return err
			}
			return a.out(cmd).print(resp, func(t *table) { renderChain(t, resp.Chain) })
		}),
	}
}

// renderChain shows each certificate of a PEM chain on a line.
func renderChain(t *table, chain []string) {
	t.row("SUBJECT", "ISSUER", "NOT AFTER", "SERIAL")
	for _, p := range chain {
		b, _ := pem.Decode([]byte(p))
		if b == nil {
			t.row("(not PEM)", "-", "-", "-")
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.row("(unreadable certificate)", "-", "-", "-")
			continue
		}
		t.row(c.Subject.String(), c.Issuer.String(), c.NotAfter, hex.EncodeToString(c.SerialNumber.Bytes()))
	}
}

func (a *app) caIntermediateCSRCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "csr",
		Short: "Make a CSR for a new intermediate key, for an external root to sign",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var resp api.CACSRResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/intermediate/csr", nil, &resp); err != nil {
				return err
			}
			p := a.out(cmd)
			if out != "" {
				if err := writeFileAtomic(out, []byte(resp.CSR), 0o644); err != nil {
					return err
				}
				return p.line(caFileResult{File: out, Format: formatPEM, Bytes: len(resp.CSR)}, "Wrote the CSR to %s", out)
			}
			if p.json() {
				return p.print(resp, nil)
			}
			return writePEM(cmd, resp.CSR)
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "write the CSR to this file instead of stdout")
	return cmd
}

// pemText joins PEM blocks, each ending in a newline.
func pemText(blocks ...string) string {
	var b strings.Builder
	for _, s := range blocks {
		b.WriteString(s)
		if s != "" && !strings.HasSuffix(s, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func (a *app) caRoleWriteCmd() *cobra.Command {
	var (
		role                   api.CARole
		file                   string
		serverFlag, clientFlag bool
	)
	cmd := &cobra.Command{
		Use:   "write NAME [flags | --file ROLE.json|-]",
		Short: "Create or replace a role",
		Long: "Create or replace a role: what REST issuance (issue, sign) may put in a\n" +
			"certificate. The role is given by flags or as a JSON document (--file, - for\n" +
			"stdin, the format role read -o json prints), not both; what is not given takes\n" +
			"the defaults, since a write replaces the whole role.",
		Example: `  custos ca role write web --allowed-domains example.com --allow-subdomains --max-ttl 720h
  custos ca role write mesh --allowed-uri-sans 'spiffe://example.org/ns/*/sa/*' --client-flag --server-flag=false
  custos ca role read web -o json | custos ca role write web2 --file -`,
		Args: nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			req := role
			if file != "" {
				var err error
				if req, err = roleFromFile(cmd, file); err != nil {
					return err
				}
			} else {
				f := cmd.Flags()
				if f.Changed("server-flag") {
					req.ServerFlag = &serverFlag
				}
				if f.Changed("client-flag") {
					req.ClientFlag = &clientFlag
				}
				for flag, v := range map[string]string{"ttl": req.TTL, "max-ttl": req.MaxTTL} {
					if err := checkDuration(flag, v); err != nil {
						return err
					}
				}
			}
			var r api.CARole
			if err := c.call(cmd.Context(), http.MethodPut, caRolePath(args[0]), req, &r); err != nil {
				return err
			}
			return a.out(cmd).print(r, func(t *table) { renderRole(t, r) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "read the role as JSON from this file (- for stdin)")
	f.StringSliceVar(&role.AllowedDomains, "allowed-domains", nil, "DNS names allowed: exact, or with '*' matching one label (repeatable or comma-separated)")
	f.BoolVar(&role.AllowSubdomains, "allow-subdomains", false, "allow every name below an allowed domain")
	f.BoolVar(&role.AllowBareDomains, "allow-bare-domains", false, "with --allow-subdomains, allow the domain itself too")
	f.BoolVar(&role.AllowWildcardCertificates, "allow-wildcard-certificates", false, "allow wildcard names such as *.example.com")
	f.StringSliceVar(&role.AllowedIPRanges, "allowed-ip-ranges", nil, "IP SANs allowed, as CIDRs")
	f.StringSliceVar(&role.AllowedURISANs, "allowed-uri-sans", nil, "URI SANs allowed; '*' matches one path segment (spiffe://td/ns/*/sa/*)")
	f.StringSliceVar(&role.AllowedKeyTypes, "allowed-key-types", nil, "ecdsa-p256, ecdsa-p384, ecdsa-p521, ed25519, rsa (default: all but ecdsa-p521)")
	f.IntVar(&role.MinRSABits, "min-rsa-bits", 0, "smallest RSA key allowed (default 2048)")
	f.StringVar(&role.TTL, "ttl", "", "lifetime of a certificate requested without one, e.g. 24h")
	f.StringVar(&role.MaxTTL, "max-ttl", "", "the longest lifetime a request may ask for, e.g. 720h")
	f.StringSliceVar(&role.KeyUsage, "key-usage", nil, "digital_signature, content_commitment, key_encipherment, data_encipherment, key_agreement")
	f.StringSliceVar(&role.ExtKeyUsage, "ext-key-usage", nil, "server_auth, client_auth, code_signing, email_protection, time_stamping")
	f.BoolVar(&serverFlag, "server-flag", true, "add the server_auth extended key usage")
	f.BoolVar(&clientFlag, "client-flag", true, "add the client_auth extended key usage")
	f.BoolVar(&role.RequireCommonName, "require-common-name", false, "refuse requests without a common name")
	return cmd
}

// roleFromFile reads a role document; no role flag may be given with it.
func roleFromFile(cmd *cobra.Command, file string) (api.CARole, error) {
	var role api.CARole
	var given []string
	cmd.LocalNonPersistentFlags().VisitAll(func(fl *pflag.Flag) {
		if fl.Changed && fl.Name != "file" {
			given = append(given, "--"+fl.Name)
		}
	})
	if len(given) > 0 {
		return role, usagef("give the role with flags or with --file, not both (%s)", strings.Join(given, ", "))
	}
	doc, err := readInput(cmd.InOrStdin(), file)
	if err != nil {
		return role, err
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&role); err != nil {
		return role, fmt.Errorf("role document %s: %w", file, err)
	}
	return role, nil
}

// listOrDefault shows an empty list as "default".
func listOrDefault(l []string) any {
	if len(l) == 0 {
		return "default"
	}
	return l
}

func renderRole(t *table, r api.CARole) {
	orDefault := func(v string) any {
		if v == "" || v == "0s" {
			return "default"
		}
		return v
	}
	flag := func(b *bool) bool { return b == nil || *b }
	t.kv("Name", r.Name)
	t.kv("Allowed domains", r.AllowedDomains)
	t.kv("Allow subdomains", r.AllowSubdomains)
	t.kv("Allow bare domains", r.AllowBareDomains)
	t.kv("Allow wildcard certificates", r.AllowWildcardCertificates)
	t.kv("Allowed IP ranges", r.AllowedIPRanges)
	t.kv("Allowed URI SANs", r.AllowedURISANs)
	t.kv("Allowed key types", listOrDefault(r.AllowedKeyTypes))
	if r.MinRSABits > 0 {
		t.kv("Min RSA bits", r.MinRSABits)
	} else {
		t.kv("Min RSA bits", "default")
	}
	t.kv("TTL", orDefault(r.TTL))
	t.kv("Max TTL", orDefault(r.MaxTTL))
	t.kv("Key usage", listOrDefault(r.KeyUsage))
	t.kv("Ext key usage", r.ExtKeyUsage)
	t.kv("Server flag", flag(r.ServerFlag))
	t.kv("Client flag", flag(r.ClientFlag))
	t.kv("Require common name", r.RequireCommonName)
}
