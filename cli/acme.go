package cli

import (
	"net/http"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// caACMECmd is "custos ca acme": ACME administration.
func (a *app) caACMECmd() *cobra.Command {
	eab := &cobra.Command{
		Use:   "create",
		Short: "Make an external account binding key for ACME clients (shown once)",
		Long: "Make an external account binding (EAB) key for an ACME provisioner (--provisioner,\n" +
			"default acme); the key is good for that provisioner only. Give the key ID and the\n" +
			"HMAC key to the ACME client (certbot --eab-kid --eab-hmac-key, lego --eab ...);\n" +
			"custos shows the HMAC key only now.",
		Args: nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			ref, _ := cmd.Flags().GetString("reference")
			prov, _ := cmd.Flags().GetString("provisioner")
			var resp api.EABResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/acme/eab", api.EABRequest{Provisioner: prov, Reference: ref}, &resp); err != nil {
				return err
			}
			return a.out(cmd).print(resp, func(t *table) {
				t.kv("Provisioner", resp.Provisioner)
				t.kv("Key ID", resp.KeyID)
				t.kv("HMAC key", resp.HMACKey)
				if resp.Reference != "" {
					t.kv("Reference", resp.Reference)
				}
			})
		}),
	}
	eab.Flags().String("reference", "", "a name for the key, unique")
	eab.Flags().String("provisioner", "", "the ACME provisioner the key is for (default acme)")
	return group("acme", "Administer the ACME server",
		group("eab", "External account binding keys", eab),
		a.acmeProvisionerCmd())
}

func acmeProvPath(name string) string { return "/v1/ca/acme/provisioners/" + pathSegment(name) }

// acmeProvisionerCmd is "custos ca acme provisioner".
func (a *app) acmeProvisionerCmd() *cobra.Command {
	show := func(cmd *cobra.Command, p api.ACMEProvisioner) error {
		return a.out(cmd).print(p, func(t *table) { renderACMEProvisioner(t, p) })
	}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an ACME provisioner, served at /acme/NAME/directory",
		Long: "Create an ACME provisioner. Names are exact (host.example.com), one label under a\n" +
			"name (*.example.com), every name below one (.example.com), IP addresses and CIDRs;\n" +
			"a denied name wins over an allowed one, and no --allowed-names allows every name.\n" +
			"With --role, the REST role's names, key types and max TTL apply too.",
		Example: `  custos ca acme provisioner create internal --require-eab --allowed-names .svc.example.com,10.0.0.0/8 --max-lifetime 168h`,
		Args:    nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			p := api.ACMEProvisioner{Name: args[0]}
			applyACMEProvisionerFlags(cmd.Flags(), &p)
			var out api.ACMEProvisioner
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/acme/provisioners", p, &out); err != nil {
				return err
			}
			return show(cmd, out)
		}),
	}
	acmeProvisionerFlags(create.Flags())
	update := &cobra.Command{
		Use:   "update NAME",
		Short: "Change an ACME provisioner: the flags given replace those fields",
		Long: "Change an ACME provisioner: the flags given replace those fields, the others stay.\n" +
			"Certificates it issued are renewed under the new policy. Turning --require-eab on\n" +
			"does not unbind accounts made before: delete and create the provisioner for that.",
		Example: `  custos ca acme provisioner update acme --require-eab --allowed-names .example.com`,
		Args:    nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			var p api.ACMEProvisioner
			if err := c.call(cmd.Context(), http.MethodGet, acmeProvPath(args[0]), nil, &p); err != nil {
				return err
			}
			p.Directory = ""
			applyACMEProvisionerFlags(cmd.Flags(), &p)
			var out api.ACMEProvisioner
			if err := c.call(cmd.Context(), http.MethodPut, acmeProvPath(args[0]), p, &out); err != nil {
				return err
			}
			return show(cmd, out)
		}),
	}
	acmeProvisionerFlags(update.Flags())
	return group("provisioner", "Create, read, update, list and delete ACME provisioners",
		create,
		&cobra.Command{
			Use:   "list",
			Short: "List the ACME provisioners",
			Args:  nargs(0, 0),
			RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
				var resp api.ACMEProvisionerList
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/ca/acme/provisioners", nil, &resp); err != nil {
					return err
				}
				return a.out(cmd).print(resp, func(t *table) {
					t.row("NAME", "REQUIRE EAB", "ALLOWED NAMES", "DIRECTORY")
					for _, p := range resp.Provisioners {
						t.row(p.Name, p.RequireEAB, orAny(p.AllowedNames), p.Directory)
					}
				})
			}),
		},
		&cobra.Command{
			Use:   "read NAME",
			Short: "Show an ACME provisioner",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				var p api.ACMEProvisioner
				if err := c.call(cmd.Context(), http.MethodGet, acmeProvPath(args[0]), nil, &p); err != nil {
					return err
				}
				return show(cmd, p)
			}),
		},
		update,
		&cobra.Command{
			Use:   "delete NAME",
			Short: "Delete an ACME provisioner and its EAB keys; its certificates stay valid but are not renewed",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				if err := c.call(cmd.Context(), http.MethodDelete, acmeProvPath(args[0]), nil, nil); err != nil {
					return err
				}
				return a.out(cmd).line(nil, "Deleted ACME provisioner %s", args[0])
			}),
		},
	)
}

func acmeProvisionerFlags(f *pflag.FlagSet) {
	f.StringSlice("allowed-names", nil, "names allowed: host.example.com, *.example.com, .example.com, 10.0.0.0/8 (none: all)")
	f.StringSlice("denied-names", nil, "names refused, same forms; deny wins")
	f.Bool("allow-wildcards", false, "allow wildcard names such as *.example.com")
	f.String("max-lifetime", "", "the longest certificate lifetime, e.g. 720h (default: the CA's)")
	f.StringSlice("key-types", nil, "ecdsa-p256, ecdsa-p384, ecdsa-p521, ed25519, rsa (default: all but ecdsa-p521)")
	f.Bool("require-eab", false, "new accounts need an external account binding key of this provisioner")
	f.String("role", "", "a REST role whose names, key types and max TTL apply too")
}

// applyACMEProvisionerFlags sets in p the fields whose flags were given.
func applyACMEProvisionerFlags(f *pflag.FlagSet, p *api.ACMEProvisioner) {
	f.Visit(func(fl *pflag.Flag) {
		switch fl.Name {
		case "allowed-names":
			p.AllowedNames, _ = f.GetStringSlice(fl.Name)
		case "denied-names":
			p.DeniedNames, _ = f.GetStringSlice(fl.Name)
		case "allow-wildcards":
			p.AllowWildcards, _ = f.GetBool(fl.Name)
		case "max-lifetime":
			p.MaxLifetime, _ = f.GetString(fl.Name)
		case "key-types":
			p.KeyTypes, _ = f.GetStringSlice(fl.Name)
		case "require-eab":
			p.RequireEAB, _ = f.GetBool(fl.Name)
		case "role":
			p.Role, _ = f.GetString(fl.Name)
		}
	})
}

// orAny shows an empty list of allowed names as "any".
func orAny(l []string) any {
	if len(l) == 0 {
		return "any"
	}
	return l
}

func renderACMEProvisioner(t *table, p api.ACMEProvisioner) {
	t.kv("Name", p.Name)
	t.kv("Directory", p.Directory)
	t.kv("Require EAB", p.RequireEAB)
	t.kv("Allowed names", orAny(p.AllowedNames))
	t.kv("Denied names", p.DeniedNames)
	t.kv("Allow wildcards", p.AllowWildcards)
	t.kv("Max lifetime", p.MaxLifetime)
	t.kv("Key types", p.KeyTypes)
	if p.Role != "" {
		t.kv("Role", p.Role)
	}
}
