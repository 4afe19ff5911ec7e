package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"slices"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The step CLI's side of the CA: JWK provisioners for `step ca token` and
// `step ca certificate`, and what `step ca bootstrap` needs.

func (a *app) caStepCmd() *cobra.Command {
	return group("step", "Connect the step CLI: its JWK provisioners and its bootstrap fingerprint",
		a.stepBootstrapCmd(),
		a.stepProvisionerCmd(),
	)
}

func stepProvPath(name string) string { return "/v1/ca/step/provisioners/" + pathSegment(name) }

// stepCerts is step's answer at /roots and /federation.
type stepCerts struct {
	Certificates []string `json:"crts"`
}

// stepBootstrap is what bootstrap prints.
type stepBootstrap struct {
	CAURL       string `json:"ca_url"`
	Fingerprint string `json:"fingerprint"`
	Command     string `json:"command"`
}

func (a *app) stepBootstrapCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "bootstrap",
		Short: "Print the fingerprint and the `step ca bootstrap` command for this cluster",
		Long: "Print the fingerprint step ca bootstrap pins: the cluster CA's, which signs the\n" +
			"API's TLS certificates (step-ca serves it as a federated root). The certificates\n" +
			"step gets are issued under the PKI root (custos ca roots).",
		Args: nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var roots, fed stepCerts
			if err := c.call(cmd.Context(), http.MethodGet, "/roots", nil, &roots); err != nil {
				return err
			}
			if err := c.call(cmd.Context(), http.MethodGet, "/federation", nil, &fed); err != nil {
				return err
			}
			var fp string
			for _, crt := range fed.Certificates {
				if !slices.Contains(roots.Certificates, crt) {
					b, _ := pem.Decode([]byte(crt))
					if b != nil {
						sum := sha256.Sum256(b.Bytes)
						fp = hex.EncodeToString(sum[:])
						break
					}
				}
			}
			if fp == "" {
				return usagef("the server serves no cluster CA at /federation")
			}
			url := c.base.String()
			out := stepBootstrap{CAURL: url, Fingerprint: fp, Command: "step ca bootstrap --ca-url " + url + " --fingerprint " + fp}
			return a.out(cmd).print(out, func(t *table) {
				t.kv("CA URL", out.CAURL)
				t.kv("Fingerprint", out.Fingerprint)
				t.text("")
				t.text("  %s", out.Command)
			})
		}),
	}
}

func (a *app) stepProvisionerCmd() *cobra.Command {
	show := func(cmd *cobra.Command, p api.StepProvisioner) error {
		return a.out(cmd).print(p, func(t *table) { renderStepProvisioner(t, p) })
	}
	var passwordFile string
	create := &cobra.Command{
		Use:   "create NAME --password-file FILE",
		Short: "Create a JWK provisioner for the step CLI; its key is encrypted under the password",
		Long: "Create a JWK provisioner. custos makes its key pair and keeps the private key only\n" +
			"encrypted under the password in FILE (trailing newlines are dropped), which\n" +
			"step ca token and step ca certificate ask for. The policy flags are those of ACME\n" +
			"provisioners, checked before signing, and again at every renewal.",
		Example: `  custos ca step provisioner create ops --password-file ./ops.pass --allowed-names .svc.example.com --max-lifetime 24h`,
		Args:    nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			switch {
			case passwordFile == "":
				return usagef("--password-file is required")
			case cmd.Flags().Changed("require-eab"):
				return usagef("--require-eab is for ACME provisioners")
			}
			pw, err := readFileLimited(passwordFile)
			if err != nil {
				return err
			}
			pw = bytes.TrimRight(pw, "\r\n")
			defer clear(pw)
			p := api.StepProvisioner{Name: args[0], Password: string(pw)}
			applyStepProvisionerFlags(cmd.Flags(), &p)
			var out api.StepProvisioner
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/step/provisioners", p, &out); err != nil {
				return err
			}
			return show(cmd, out)
		}),
	}
	f := create.Flags()
	f.StringVar(&passwordFile, "password-file", "", "file holding the password that encrypts the provisioner's key (8 to 1024 bytes)")
	acmeProvisionerFlags(f)
	_ = f.MarkHidden("require-eab")
	_ = create.MarkFlagFilename("password-file")
	return group("provisioner", "Create, read, list and delete the step CLI's JWK provisioners",
		create,
		&cobra.Command{
			Use:   "list",
			Short: "List the JWK provisioners",
			Args:  nargs(0, 0),
			RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
				var resp api.StepProvisionerList
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/ca/step/provisioners", nil, &resp); err != nil {
					return err
				}
				return a.out(cmd).print(resp, func(t *table) {
					t.row("NAME", "KID", "ALLOWED NAMES", "MAX LIFETIME")
					for _, p := range resp.Provisioners {
						t.row(p.Name, p.KeyID, orAny(p.AllowedNames), p.MaxLifetime)
					}
				})
			}),
		},
		&cobra.Command{
			Use:   "read NAME",
			Short: "Show a JWK provisioner",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				var p api.StepProvisioner
				if err := c.call(cmd.Context(), http.MethodGet, stepProvPath(args[0]), nil, &p); err != nil {
					return err
				}
				return show(cmd, p)
			}),
		},
		&cobra.Command{
			Use:   "delete NAME",
			Short: "Delete a JWK provisioner; its tokens stop working, its certificates stay valid but are not renewed",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				if err := c.call(cmd.Context(), http.MethodDelete, stepProvPath(args[0]), nil, nil); err != nil {
					return err
				}
				return a.out(cmd).line(nil, "Deleted JWK provisioner %s", args[0])
			}),
		},
	)
}

// applyStepProvisionerFlags sets in p the policy fields whose flags were
// given (the flags of ACME provisioners, less require-eab).
func applyStepProvisionerFlags(f *pflag.FlagSet, p *api.StepProvisioner) {
	var acme api.ACMEProvisioner
	applyACMEProvisionerFlags(f, &acme)
	p.AllowedNames, p.DeniedNames, p.AllowWildcards = acme.AllowedNames, acme.DeniedNames, acme.AllowWildcards
	p.MaxLifetime, p.KeyTypes, p.Role = acme.MaxLifetime, acme.KeyTypes, acme.Role
}

func renderStepProvisioner(t *table, p api.StepProvisioner) {
	t.kv("Name", p.Name)
	t.kv("Key ID", p.KeyID)
	t.kv("Allowed names", orAny(p.AllowedNames))
	t.kv("Denied names", p.DeniedNames)
	t.kv("Allow wildcards", p.AllowWildcards)
	t.kv("Max lifetime", p.MaxLifetime)
	t.kv("Key types", p.KeyTypes)
	if p.Role != "" {
		t.kv("Role", p.Role)
	}
}
