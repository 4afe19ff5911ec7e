package cli

import (
	"fmt"
	"net/http"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

// statusResult is what `custos status -o json` prints.
type statusResult struct {
	Address    string          `json:"address"`
	Health     api.Health      `json:"health"`
	SealStatus api.SealStatus  `json:"seal_status"`
	Raft       *api.RaftStatus `json:"raft,omitempty"`
	// RaftError says why the peers could not be listed (sealed, no
	// quorum, a token without the right policy).
	RaftError string `json:"raft_error,omitempty"`
}

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the health and seal status of a node, and its Raft peers when a token is given",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			ctx := cmd.Context()
			res := statusResult{Address: c.base.String()}
			// The health endpoint tells its state by status code; each of
			// these carries the health document.
			if err := c.call(ctx, http.MethodGet, "/v1/sys/health", nil, &res.Health,
				http.StatusTooManyRequests, http.StatusNotImplemented, http.StatusServiceUnavailable); err != nil {
				return err
			}
			if err := c.call(ctx, http.MethodGet, "/v1/sys/seal-status", nil, &res.SealStatus); err != nil {
				return err
			}
			if c.token != "" {
				var rs api.RaftStatus
				if err := c.call(ctx, http.MethodGet, "/v1/sys/raft/peers", nil, &rs); err != nil {
					res.RaftError = err.Error()
				} else {
					res.Raft = &rs
				}
			}
			return a.out(cmd).print(res, res.render)
		}),
	}
}

func (r statusResult) render(t *table) {
	h, s := r.Health, r.SealStatus
	t.kv("Address", r.Address)
	t.kv("Node", h.NodeID)
	t.kv("Version", h.Version)
	t.kv("Initialized", h.Initialized)
	t.kv("Sealed", h.Sealed)
	if h.Initialized {
		t.kv("Seal type", s.Type)
		if s.Shares > 0 {
			t.kv("Unseal shares", fmt.Sprintf("%d (threshold %d)", s.Shares, s.Threshold))
		}
		if s.Sealed && s.Threshold > 0 {
			t.kv("Unseal progress", fmt.Sprintf("%d/%d", s.Progress, s.Threshold))
		}
	}
	switch {
	case !h.Initialized || h.Sealed:
	case !h.HasLeader:
		t.kv("Cluster", "no leader: the cluster has no quorum")
	case h.Standby:
		t.kv("Cluster", "standby")
	default:
		t.kv("Cluster", "active (leader)")
	}
	if h.LeaderID != "" {
		t.kv("Leader", h.LeaderID)
	}
	t.kv("Server time", h.ServerTime)
	switch {
	case r.Raft != nil:
		t.text("")
		renderPeers(t, *r.Raft)
	case r.RaftError != "":
		t.kv("Raft peers", "unavailable: "+r.RaftError)
	}
}

// renderPeers writes a node's view of the Raft configuration.
func renderPeers(t *table, rs api.RaftStatus) {
	t.text("Raft: node %s is %s, term %d, applied index %d", rs.ID, rs.State, rs.Term, rs.AppliedIndex)
	t.row("ID", "ADDRESS", "VOTER", "LEADER", "HEALTHY", "LAST CONTACT")
	for _, p := range rs.Peers {
		t.row(p.ID, p.Addr, p.Voter, p.Leader, p.Healthy, p.LastContact)
	}
}
