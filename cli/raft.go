package cli

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

func (a *app) raftCmd() *cobra.Command {
	return group("raft", "Inspect and change the Raft cluster, and back it up",
		&cobra.Command{
			Use:   "peers",
			Short: "List the cluster's members as this node sees them",
			Args:  nargs(0, 0),
			RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
				var rs api.RaftStatus
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/sys/raft/peers", nil, &rs); err != nil {
					return err
				}
				return a.out(cmd).print(rs, func(t *table) { renderPeers(t, rs) })
			}),
		},
		&cobra.Command{
			Use:   "remove-peer ID",
			Short: "Remove a node from the cluster",
			Args:  nargs(1, 1),
			RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
				if err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/raft/remove-peer", api.RemovePeerRequest{NodeID: args[0]}, nil); err != nil {
					return err
				}
				return a.out(cmd).line(nil, "Removed %s from the cluster", args[0])
			}),
		},
		&cobra.Command{
			Use:   "step-down",
			Short: "Make the leader hand over leadership to another node",
			Args:  nargs(0, 0),
			RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
				if err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/raft/step-down", nil, nil); err != nil {
					return err
				}
				return a.out(cmd).line(nil, "The leader stepped down")
			}),
		},
		group("snapshot", "Save and restore snapshots of the cluster's state",
			a.snapshotSaveCmd(), a.snapshotRestoreCmd()),
	)
}

// snapshotResult is what the snapshot commands print with -o json.
type snapshotResult struct {
	File  string `json:"file"`
	Bytes int64  `json:"bytes"`
}

func (a *app) snapshotSaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the cluster's state to FILE",
		Long: "Save a snapshot of the cluster's state to FILE (mode 0600). The state is\n" +
			"encrypted by the barrier, but treat the file as sensitive all the same.",
		Args: nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			file := args[0]
			n, err := writeAtomic(file, func(w io.Writer) error {
				return c.download(cmd.Context(), "/v1/sys/raft/snapshot", w)
			})
			if err != nil {
				return err
			}
			res := snapshotResult{File: file, Bytes: n}
			return a.out(cmd).line(res, "Saved a snapshot of %d bytes to %s", n, file)
		}),
	}
}

func (a *app) snapshotRestoreCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's state with a snapshot",
		Long: "Replace the whole cluster's state with the snapshot in FILE. Send it to the leader.\n" +
			"Every write made since the snapshot was saved is lost. The cluster takes writes\n" +
			"again as soon as the command returns.\n\n" +
			"A snapshot of this same cluster is restored as it is, and the nodes stay unsealed\n" +
			"if their keys still open it.\n\n" +
			"A snapshot of another cluster (a disaster-recovery restore into a new cluster) is\n" +
			"refused unless --force is given. The snapshot brings its own barrier: after the\n" +
			"restore every node seals, and is unsealed with the unseal keys (or key file) of the\n" +
			"cluster the snapshot came from, not this cluster's; that cluster's tokens and\n" +
			"policies apply from then on. A node that auto-unseals from a key file tries it again\n" +
			"at once, and opens if it is the key file of the snapshot's cluster.",
		Args: nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			path := "/v1/sys/raft/snapshot"
			if force {
				path += "?force=true"
			}
			if err := c.upload(cmd.Context(), path, f, fi.Size()); err != nil {
				return err
			}
			res := snapshotResult{File: args[0], Bytes: fi.Size()}
			return a.out(cmd).line(res, "Restored the snapshot in %s", args[0])
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "restore a snapshot taken from another cluster")
	return cmd
}

// writeAtomic writes a file through a temporary file in the same
// directory, synced and renamed into place only when fill succeeds, so a
// failed download never leaves a truncated snapshot under the name.
func writeAtomic(path string, fill func(w io.Writer) error) (n int64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return 0, err
	}
	cw := &countingWriter{w: tmp}
	if err := fill(cw); err != nil {
		return 0, err
	}
	if err := tmp.Sync(); err != nil {
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
