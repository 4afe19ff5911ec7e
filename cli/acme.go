package cli

import (
	"net/http"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

// caACMECmd is "custos ca acme": ACME administration.
func (a *app) caACMECmd() *cobra.Command {
	eab := &cobra.Command{
		Use:   "create",
		Short: "Make an external account binding key for ACME clients (shown once)",
		Long: "Make an external account binding (EAB) key for the ACME provisioner. Give the key ID\n" +
			"and the HMAC key to the ACME client (certbot --eab-kid --eab-hmac-key, lego --eab ...);\n" +
			"custos shows the HMAC key only now.",
		Args: nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			ref, _ := cmd.Flags().GetString("reference")
			var resp api.EABResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/acme/eab", api.EABRequest{Reference: ref}, &resp); err != nil {
				return err
			}
			return a.out(cmd).print(resp, func(t *table) {
				t.kv("Key ID", resp.KeyID)
				t.kv("HMAC key", resp.HMACKey)
				if resp.Reference != "" {
					t.kv("Reference", resp.Reference)
				}
			})
		}),
	}
	eab.Flags().String("reference", "", "a name for the key, unique")
	return group("acme", "Administer the ACME server", group("eab", "External account binding keys", eab))
}
