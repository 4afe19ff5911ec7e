package cli

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

// The secret commands that manage rather than read and write data: mounts,
// versions, metadata and moves.

func (a *app) mountCmd() *cobra.Command {
	return group("mount", "Create, list and delete secret mounts, each with its own kms key",
		a.mountCreateCmd(),
		&cobra.Command{
			Use:   "list",
			Short: "List the mounts",
			Args:  nargs(0, 0),
			RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
				var resp api.SecretMountList
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/sys/mounts", nil, &resp); err != nil {
					return err
				}
				return a.out(cmd).print(resp, func(t *table) {
					t.row("NAME", "CREATED", "MAX VERSIONS", "CAS REQUIRED", "DELETE VERSION AFTER")
					for _, m := range resp.Mounts {
						name := m.Name
						if m.Deleting {
							name += " (deleting)"
						}
						t.row(name, m.CreatedTime, m.MaxVersions, m.CASRequired, never(m.DeleteVersionAfter))
					}
				})
			}),
		},
		a.mountDeleteCmd(),
	)
}

func (a *app) metadataCmd() *cobra.Command {
	return group("metadata", "Read, change and delete a secret's metadata",
		a.metadataGetCmd(),
		a.metadataPutCmd(),
		a.locCmd("delete MOUNT/PATH", "Delete a secret altogether: every version and its metadata",
			func(cmd *cobra.Command, c *client, loc secretLoc) error {
				if err := c.call(cmd.Context(), http.MethodDelete, loc.url("metadata"), nil, nil); err != nil {
					return err
				}
				return a.out(cmd).line(nil, "Deleted %s: every version and its metadata", loc)
			}),
	)
}

// never shows a zero duration as "never".
func never(d string) string {
	if d == "" || d == "0s" {
		return "never"
	}
	return d
}

func (a *app) mountCreateCmd() *cobra.Command {
	var (
		maxVersions int
		cas         bool
		dva         string
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a mount: 1 to 64 of [A-Za-z0-9_-]",
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			var req api.SecretMountRequest
			f := cmd.Flags()
			if f.Changed("max-versions") {
				if maxVersions < 0 {
					return usagef("--max-versions %d: want 0 or more", maxVersions)
				}
				req.MaxVersions = &maxVersions
			}
			if f.Changed("cas-required") {
				req.CASRequired = &cas
			}
			if f.Changed("delete-version-after") {
				if err := checkDuration("delete-version-after", dva); err != nil {
					return err
				}
				req.DeleteVersionAfter = &dva
			}
			var m api.SecretMount
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/mounts/"+pathSegment(args[0]), req, &m); err != nil {
				return err
			}
			return a.out(cmd).print(m, func(t *table) {
				t.kv("Name", m.Name)
				t.kv("Created", m.CreatedTime)
				t.kv("Max versions", m.MaxVersions)
				t.kv("CAS required", m.CASRequired)
				t.kv("Delete version after", never(m.DeleteVersionAfter))
			})
		}),
	}
	f := cmd.Flags()
	f.IntVar(&maxVersions, "max-versions", 0, "versions kept per secret (default 10)")
	f.BoolVar(&cas, "cas-required", false, "every write must give --cas")
	f.StringVar(&dva, "delete-version-after", "", "soft-delete versions this long after they are written, e.g. 720h (default: never)")
	return cmd
}

func (a *app) mountDeleteCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME [--force]",
		Short: "Delete an empty mount, or with --force a mount and every secret in it",
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			path := "/v1/sys/mounts/" + pathSegment(args[0])
			if force {
				path += "?force=true"
			}
			if err := c.call(cmd.Context(), http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			return a.out(cmd).line(nil, "Deleted mount %s", args[0])
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete the secrets in the mount too")
	return cmd
}

// versionsFlag registers --versions.
func versionsFlag(cmd *cobra.Command, versions *[]int, what string) {
	cmd.Flags().IntSliceVar(versions, "versions", nil, what+" (comma-separated or repeated)")
}

// checkVersions refuses versions that are not positive.
func checkVersions(versions []int) error {
	for _, v := range versions {
		if v < 1 {
			return usagef("--versions: %d is not a version", v)
		}
	}
	return nil
}

// versionList reads "version 1" or "versions 1,2".
func versionList(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	if len(vs) == 1 {
		return "version " + s[0]
	}
	return "versions " + strings.Join(s, ",")
}

// rfc3339 shows a time the API sends as a string as cell shows times.
func rfc3339(s string) any {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t
	}
	return s
}

func (a *app) secretDeleteCmd() *cobra.Command {
	var versions []int
	cmd := a.locCmd("delete MOUNT/PATH [--versions N,...]",
		"Soft-delete the current version of a secret, or the versions given; undelete restores them",
		func(cmd *cobra.Command, c *client, loc secretLoc) error {
			if err := checkVersions(versions); err != nil {
				return err
			}
			if len(versions) == 0 {
				if err := c.call(cmd.Context(), http.MethodDelete, loc.url("data"), nil, nil); err != nil {
					return err
				}
				return a.out(cmd).line(nil, "Deleted the current version of %s", loc)
			}
			if err := c.call(cmd.Context(), http.MethodPost, loc.url("delete"), api.SecretVersionsRequest{Versions: versions}, nil); err != nil {
				return err
			}
			return a.out(cmd).line(nil, "Deleted %s of %s", versionList(versions), loc)
		})
	versionsFlag(cmd, &versions, "versions to delete (default: the current one)")
	return cmd
}

// secretVersionsCmd makes undelete and destroy, which need --versions.
func (a *app) secretVersionsCmd(use, short, kind, verb string) *cobra.Command {
	var versions []int
	cmd := a.locCmd(use+" MOUNT/PATH --versions N,...", short,
		func(cmd *cobra.Command, c *client, loc secretLoc) error {
			if len(versions) == 0 {
				return usagef("give the versions to %s with --versions", use)
			}
			if err := checkVersions(versions); err != nil {
				return err
			}
			if err := c.call(cmd.Context(), http.MethodPost, loc.url(kind), api.SecretVersionsRequest{Versions: versions}, nil); err != nil {
				return err
			}
			return a.out(cmd).line(nil, "%s %s of %s", verb, versionList(versions), loc)
		})
	versionsFlag(cmd, &versions, "versions to "+use)
	return cmd
}

func (a *app) metadataGetCmd() *cobra.Command {
	return a.locCmd("get MOUNT/PATH", "Show a secret's metadata and versions",
		func(cmd *cobra.Command, c *client, loc secretLoc) error {
			var md api.SecretMetadata
			if err := c.call(cmd.Context(), http.MethodGet, loc.url("metadata"), nil, &md); err != nil {
				return err
			}
			return a.out(cmd).print(md, func(t *table) {
				t.kv("Path", loc.String())
				t.kv("Current version", md.CurrentVersion)
				t.kv("Oldest version", md.OldestVersion)
				t.kv("Max versions", md.MaxVersions)
				t.kv("CAS required", md.CASRequired)
				t.kv("Delete version after", never(md.DeleteVersionAfter))
				t.kv("Created", md.CreatedTime)
				t.kv("Updated", md.UpdatedTime)
				for _, k := range slices.Sorted(maps.Keys(md.CustomMetadata)) {
					t.kv("Custom "+k, md.CustomMetadata[k])
				}
				t.text("")
				t.row("VERSION", "CREATED", "STATE", "DELETION TIME")
				vs := slices.Collect(maps.Values(md.Versions))
				slices.SortFunc(vs, func(x, y api.SecretVersion) int { return x.Version - y.Version })
				for _, v := range vs {
					state := "current"
					switch {
					case v.Destroyed:
						state = "destroyed"
					case v.Deleted:
						state = "deleted"
					case v.Version != md.CurrentVersion:
						state = "active"
					}
					t.row(v.Version, v.CreatedTime, state, rfc3339(v.DeletionTime))
				}
			})
		})
}

func (a *app) metadataPutCmd() *cobra.Command {
	var (
		maxVersions int
		cas         bool
		dva         string
		custom      []string
	)
	cmd := a.locCmd("put MOUNT/PATH [--max-versions N] [--cas-required] [--custom KEY=VALUE]...",
		"Change a secret's metadata; only the flags given change, and --custom replaces all custom metadata",
		func(cmd *cobra.Command, c *client, loc secretLoc) error {
			var req api.SecretMetadataRequest
			f := cmd.Flags()
			if f.Changed("max-versions") {
				if maxVersions < 0 {
					return usagef("--max-versions %d: want 0 (the mount's) or more", maxVersions)
				}
				req.MaxVersions = &maxVersions
			}
			if f.Changed("cas-required") {
				req.CASRequired = &cas
			}
			if f.Changed("delete-version-after") {
				if err := checkDuration("delete-version-after", dva); err != nil {
					return err
				}
				req.DeleteVersionAfter = &dva
			}
			for _, kv := range custom {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--custom %q: use KEY=VALUE", kv)
				}
				if req.CustomMetadata == nil {
					req.CustomMetadata = map[string]string{}
				}
				req.CustomMetadata[k] = v
			}
			if req.MaxVersions == nil && req.CASRequired == nil && req.DeleteVersionAfter == nil && req.CustomMetadata == nil {
				return usagef("nothing to change: give at least one setting flag")
			}
			if err := c.call(cmd.Context(), http.MethodPut, loc.url("metadata"), req, nil); err != nil {
				return err
			}
			return a.out(cmd).line(nil, "Wrote the metadata of %s", loc)
		})
	f := cmd.Flags()
	f.IntVar(&maxVersions, "max-versions", 0, "versions kept (0: the mount's setting)")
	f.BoolVar(&cas, "cas-required", false, "every write must give --cas")
	f.StringVar(&dva, "delete-version-after", "", "soft-delete versions this long after they are written (0s: never)")
	f.StringArrayVar(&custom, "custom", nil, "custom metadata KEY=VALUE (repeatable); replaces all of it")
	return cmd
}

func (a *app) secretMoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "move MOUNT/FROM MOUNT/TO",
		Short: "Move a secret, every version and its metadata, to a new path in the same mount, atomically",
		Long: "Move a secret, every version and its metadata, to a new path in the same mount,\n" +
			"atomically. Both arguments are MOUNT/PATH and name the same mount; the\n" +
			"destination must not exist.\n\n" + secretNaming,
		Example: "  custos secret move kv/app/db kv/app/db-old",
		Args:    nargs(2, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			from, err := parseLoc(args[0], false)
			if err != nil {
				return err
			}
			to, err := parseLoc(args[1], false)
			if err != nil {
				return err
			}
			if from.mount != to.mount {
				return usagef("a move stays in one mount: %s and %s name different mounts", from.mount, to.mount)
			}
			req := api.SecretMoveRequest{From: from.path, To: to.path}
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/secret/"+pathSegment(from.mount)+"/move", req, nil); err != nil {
				return err
			}
			return a.out(cmd).line(nil, "Moved %s to %s", from, to)
		}),
	}
}
