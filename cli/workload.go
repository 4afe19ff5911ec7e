package cli

import (
	"net/http"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

// caWorkloadCmd manages the SPIFFE registration entries: which local
// processes (by uid, gid, user, group, executable path or hash) get which
// SPIFFE ID over a node's Workload API and SDS socket, under which role.
func (a *app) caWorkloadCmd() *cobra.Command {
	return group("workload", "Register the workloads that get SPIFFE identities over a node's Workload API and SDS socket",
		a.caWorkloadCreateCmd(),
		&cobra.Command{
			Use:   "list",
			Short: "List the registration entries",
			Args:  nargs(0, 0),
			RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
				var resp api.WorkloadEntryList
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/ca/workloads", nil, &resp); err != nil {
					return err
				}
				return a.out(cmd).print(resp, func(t *table) {
					t.row("ID", "SPIFFE ID", "ROLE", "SELECTORS")
					for _, e := range resp.Entries {
						t.row(e.ID, e.SPIFFEID, e.Role, e.Selectors)
					}
				})
			}),
		},
		&cobra.Command{
			Use:   "read ID",
			Short: "Show a registration entry",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				var e api.WorkloadEntry
				if err := c.call(cmd.Context(), http.MethodGet, workloadPath(args[0]), nil, &e); err != nil {
					return err
				}
				return a.out(cmd).print(e, func(t *table) { renderWorkload(t, e) })
			}),
		},
		&cobra.Command{
			Use:   "delete ID",
			Short: "Delete a registration entry; SVIDs already issued stay valid until they expire",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				if err := c.call(cmd.Context(), http.MethodDelete, workloadPath(args[0]), nil, nil); err != nil {
					return err
				}
				return a.out(cmd).line(nil, "Deleted registration entry %s", args[0])
			}),
		},
	)
}

func workloadPath(id string) string { return "/v1/ca/workloads/" + pathSegment(id) }

func (a *app) caWorkloadCreateCmd() *cobra.Command {
	var req api.WorkloadEntry
	cmd := &cobra.Command{
		Use:   "create --spiffe-id ID --selector unix:uid:N [--selector ...] --role ROLE",
		Short: "Register a workload: processes matching every selector get the SPIFFE ID, issued under the role",
		Long: "Register a workload. A process on any node that connects to the node's workload socket\n" +
			"and matches every selector gets the SPIFFE ID, issued under the CA role, which must allow\n" +
			"the ID among its allowed URI SANs; certificates get the role's TTL.\n\n" +
			"Selectors: unix:uid:N, unix:gid:N, unix:user:NAME, unix:group:NAME, unix:path:/ABS/PATH,\n" +
			"unix:sha256:HEX (of the executable).",
		Args: nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			switch {
			case req.SPIFFEID == "":
				return usagef("--spiffe-id is required")
			case len(req.Selectors) == 0:
				return usagef("at least one --selector is required")
			case req.Role == "":
				return usagef("--role is required")
			}
			var e api.WorkloadEntry
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/ca/workloads", req, &e); err != nil {
				return err
			}
			return a.out(cmd).print(e, func(t *table) { renderWorkload(t, e) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.SPIFFEID, "spiffe-id", "", "SPIFFE ID to give, e.g. spiffe://example.org/web")
	f.StringArrayVar(&req.Selectors, "selector", nil, "condition on the calling process, e.g. unix:uid:1000 (repeatable: all must hold)")
	f.StringVar(&req.Role, "role", "", "CA role the identity is issued under")
	return cmd
}

func renderWorkload(t *table, e api.WorkloadEntry) {
	t.kv("ID", e.ID)
	t.kv("SPIFFE ID", e.SPIFFEID)
	t.kv("Selectors", e.Selectors)
	t.kv("Role", e.Role)
	t.kv("Created", e.Created)
}
