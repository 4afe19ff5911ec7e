package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

func (a *app) operatorCmd() *cobra.Command {
	return group("operator", "Initialise, unseal, seal and run the cluster",
		a.initCmd(),
		a.unsealCmd(),
		a.sealCmd(),
		group("join-token", "Make one-time tokens for new nodes to join the cluster", a.joinTokenCreateCmd()),
		a.generateRootCmd(),
		a.rekeyCmd(),
		a.rotateCmd(),
		a.rotateRootCmd(),
		a.keyStatusCmd(),
		a.rotateConfigCmd(),
		a.raftCmd(),
	)
}

func (a *app) initCmd() *cobra.Command {
	var (
		req   api.InitRequest
		caOut string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Initialise a new cluster: make the unseal shares and the root token",
		Long: "Initialise a new cluster. The unseal key is split into --key-shares shares, any\n" +
			"--key-threshold of which unseal a node; they and the root token are shown once.",
		Args: nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var resp api.InitResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/init", req, &resp); err != nil {
				return err
			}
			if caOut != "" && resp.ClusterCACert != "" {
				if err := os.WriteFile(caOut, []byte(resp.ClusterCACert), 0o644); err != nil {
					return fmt.Errorf("write the cluster CA certificate: %w", err)
				}
			}
			return a.out(cmd).print(resp, func(t *table) {
				for i, k := range resp.Keys {
					t.kv(fmt.Sprintf("Unseal share %d", i+1), k)
				}
				t.kv("Root token", resp.RootToken)
				t.text("")
				if len(resp.Keys) > 0 {
					t.text("The cluster is initialised and its nodes are sealed. Unseal each node with %d of", req.SecretThreshold)
					t.text("these %d shares (custos operator unseal). They are shown only now: give them to", len(resp.Keys))
					t.text("different people, and keep the root token safe or revoke it once you have others.")
				} else {
					t.text("The cluster is initialised; its nodes unseal with their key file.")
				}
				if caOut != "" && resp.ClusterCACert != "" {
					t.text("The cluster CA certificate is in %s: pass it with --ca-cert or CUSTOS_CACERT.", caOut)
				}
				t.text("")
				t.text("ACME is open: the provisioner acme (/acme/acme/directory) issues any name to anyone")
				t.text("who passes a challenge. Lock it down (or delete it) before exposing port 8443:")
				t.text("  custos ca acme provisioner update acme --require-eab --allowed-names .internal.example.com")
				t.text("  custos ca acme eab create --provisioner acme")
			})
		}),
	}
	f := cmd.Flags()
	f.IntVar(&req.SecretShares, "key-shares", 5, "number of unseal shares to make")
	f.IntVar(&req.SecretThreshold, "key-threshold", 3, "number of shares that unseal a node")
	f.StringVar(&caOut, "ca-out", "", "write the cluster CA certificate (PEM) to this file")
	return cmd
}

func (a *app) unsealCmd() *cobra.Command {
	var reset bool
	cmd := &cobra.Command{
		Use:   "unseal [SHARE]",
		Short: "Give a node an unseal share",
		Long: "Give a node unseal shares. Without SHARE, shares are read one after another until the\n" +
			"node is unsealed or the input ends: at a terminal without echo (an empty line stops),\n" +
			"otherwise one per line from stdin. --reset discards the shares given so far.",
		Args: nargs(0, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			var st api.SealStatus
			submit := func(share string) (shareProgress, error) {
				err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/unseal", api.UnsealRequest{Key: share, Reset: reset}, &st)
				return shareProgress{st.Progress, st.Threshold, !st.Sealed}, err
			}
			if reset {
				if len(args) > 0 {
					return usagef("--reset takes no share")
				}
				if _, err := submit(""); err != nil {
					return err
				}
			} else if err := collectShares(cmd, args, "Unseal share", submit); err != nil {
				return err
			}
			return a.out(cmd).print(st, func(t *table) {
				t.kv("Node", st.NodeID)
				t.kv("Sealed", st.Sealed)
				if st.Sealed {
					t.kv("Unseal progress", fmt.Sprintf("%d/%d", st.Progress, st.Threshold))
				}
			})
		}),
	}
	cmd.Flags().BoolVar(&reset, "reset", false, "discard the shares given so far")
	return cmd
}

func (a *app) sealCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "seal",
		Short: "Seal the node: it forgets its keys until it is unsealed again",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/seal", nil, nil); err != nil {
				return err
			}
			return a.out(cmd).line(map[string]bool{"sealed": true}, "Sealed %s", c.base)
		}),
	}
}

func (a *app) joinTokenCreateCmd() *cobra.Command {
	var req api.JoinTokenRequest
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Make a one-time token with which a new node joins the cluster",
		Long: "Make a one-time token with which a new node joins the cluster.\n\n" +
			"The new node's certificates name its node ID, localhost and the loopback addresses, and\n" +
			"the --api-host names given here; any other name it asks for is dropped. It joins as a\n" +
			"non-voter and becomes a voter once it is unsealed with this cluster's shares or key file.\n" +
			"A node ID that is already a member is refused: remove it first with\n" +
			"custos operator raft remove-peer.",
		Args: nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var resp api.JoinTokenResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/join-token", req, &resp); err != nil {
				return err
			}
			return a.out(cmd).print(resp, func(t *table) {
				t.kv("Join token", resp.Token)
				t.kv("Expires", resp.ExpiresAt)
				t.kv("CA fingerprint", resp.CAFingerprint)
				t.text("")
				t.text("Start the new node with the token in CUSTOS_JOIN_TOKEN (it works once) and:")
				t.text("  custos server --node-id NODE-ID --join-addr %s --join-ca-fingerprint %s", c.base, resp.CAFingerprint)
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.TTL, "ttl", "1h", "how long the token is valid (at most 24h)")
	f.StringArrayVar(&req.APIHosts, "api-host", nil, "DNS name or IP the new node's API certificate may name, besides its node ID and loopback (repeatable)")
	f.StringArrayVar(&req.ClusterHosts, "cluster-host", nil, "host the new node's cluster address must have (repeatable; default: any)")
	return cmd
}

// shareProgress is where a share-collecting operation stands.
type shareProgress struct {
	progress, required int
	complete           bool
}

// collectShares submits the share in args, or reads shares and submits
// them one by one until the operation completes or the input ends. At a
// terminal it shows the progress between shares; shares are never shown.
func collectShares(cmd *cobra.Command, args []string, prompt string, submit func(share string) (shareProgress, error)) error {
	if len(args) == 1 {
		_, err := submit(args[0])
		return err
	}
	in, errw := cmd.InOrStdin(), cmd.ErrOrStderr()
	_, interactive := terminalFD(in)
	sr := newSecretReader(in, errw)
	for n := 0; ; n++ {
		share, err := sr.read(prompt)
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return errors.New("no share given")
			}
			return nil
		}
		if err != nil {
			return err
		}
		p, err := submit(share)
		if err != nil || p.complete {
			return err
		}
		if interactive {
			fmt.Fprintf(errw, "Progress: %d of %d shares.\n", p.progress, p.required)
		}
	}
}
