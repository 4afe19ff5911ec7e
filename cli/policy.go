package cli

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

func (a *app) policyCmd() *cobra.Command {
	return group("policy", "Write, read, list and delete policies",
		a.policyWriteCmd(),
		&cobra.Command{
			Use:   "read NAME",
			Short: "Show a policy document",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				var p api.PolicyResponse
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/sys/policies/"+pathSegment(args[0]), nil, &p); err != nil {
					return err
				}
				if a.out(cmd).json() {
					return a.out(cmd).print(p, nil)
				}
				// The document alone, so that read and write round-trip.
				doc := []byte(p.Policy)
				var buf bytes.Buffer
				if json.Indent(&buf, doc, "", "  ") == nil {
					doc = buf.Bytes()
				}
				if len(doc) > 0 && doc[len(doc)-1] != '\n' {
					doc = append(doc, '\n')
				}
				_, err := cmd.OutOrStdout().Write(doc)
				return err
			}),
		},
		&cobra.Command{
			Use:   "list",
			Short: "List the policies",
			Args:  nargs(0, 0),
			RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
				var resp api.ListResponse
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/sys/policies", nil, &resp); err != nil {
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
			Short: "Delete a policy",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				if err := c.call(cmd.Context(), http.MethodDelete, "/v1/sys/policies/"+pathSegment(args[0]), nil, nil); err != nil {
					return err
				}
				return a.out(cmd).line(nil, "Deleted policy %s", args[0])
			}),
		},
	)
}

func (a *app) policyWriteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "write NAME FILE|-",
		Short: "Create or replace a policy from a JSON document (- reads stdin)",
		Example: `  custos policy write app - <<'EOF'
  {"path": {"kms/encrypt/app": {"capabilities": ["update"]},
            "kms/decrypt/app": {"capabilities": ["update"]}}}
  EOF`,
		Args: nargs(2, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			src := dataSource{}
			var in []string
			if args[1] == "-" {
				in = []string{"-"}
			} else {
				src.file = args[1]
			}
			doc, err := src.read(cmd.InOrStdin(), in, "policy document")
			if err != nil {
				return err
			}
			// The document goes as a JSON string, which api.RawPolicy
			// accepts as is; the server parses and validates it.
			req := struct {
				Policy string `json:"policy"`
			}{string(doc)}
			if err := c.call(cmd.Context(), http.MethodPut, "/v1/sys/policies/"+pathSegment(args[0]), req, nil); err != nil {
				return err
			}
			return a.out(cmd).line(nil, "Wrote policy %s", args[0])
		}),
	}
}
