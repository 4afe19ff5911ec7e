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
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's state with a snapshot",
		Args:  nargs(1, 1),
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
			if err := c.upload(cmd.Context(), "/v1/sys/raft/snapshot", f, fi.Size()); err != nil {
				return err
			}
			res := snapshotResult{File: args[0], Bytes: fi.Size()}
			return a.out(cmd).line(res, "Restored the snapshot in %s", args[0])
		}),
	}
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
