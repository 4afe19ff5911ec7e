package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/secrets"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// secretNaming is the help text on how secrets are named.
const secretNaming = `Secrets are named MOUNT/PATH: the first segment is the mount (see "custos
secret mount"), the rest the secret's path in it. kv/app/db is the secret
app/db of the mount kv. A path is segments joined by "/", none of them
empty, "." or "..".`

func (a *app) secretCmd() *cobra.Command {
	cmd := group("secret", "Store versioned secrets: JSON objects kept under paths in mounts",
		a.mountCmd(),
		a.secretWriteCmd("put", "Write a new version of a secret", http.MethodPut, "Wrote"),
		a.secretGetCmd(),
		a.secretListCmd(),
		a.secretWriteCmd("patch", "Merge keys into the current version, as a new version (RFC 7386: null removes a key)", http.MethodPatch, "Patched"),
		a.secretDeleteCmd(),
		a.secretVersionsCmd("undelete", "Restore soft-deleted versions", "undelete", "Undeleted"),
		a.secretVersionsCmd("destroy", "Destroy versions for good: their data cannot be restored", "destroy", "Destroyed"),
		a.metadataCmd(),
		a.secretMoveCmd(),
		a.secretReadManyCmd(),
	)
	cmd.Long = "Store versioned secrets: JSON objects kept under paths in mounts, each version\nencrypted under its mount's kms key.\n\n" + secretNaming
	return cmd
}

// secretLoc is where a secret is: its mount and its path in the mount.
type secretLoc struct{ mount, path string }

func (l secretLoc) String() string { return l.mount + "/" + l.path }

// url returns /v1/secret/MOUNT/KIND/PATH with each segment escaped.
func (l secretLoc) url(kind string) string {
	segs := strings.Split(l.path, "/")
	for i, s := range segs {
		segs[i] = pathSegment(s)
	}
	return "/v1/secret/" + pathSegment(l.mount) + "/" + kind + "/" + strings.Join(segs, "/")
}

// parseLoc splits MOUNT/PATH at the first "/". A folder (a listing
// prefix) may be empty or end in "/".
func parseLoc(arg string, folder bool) (secretLoc, error) {
	mount, path, _ := strings.Cut(arg, "/")
	if mount == "" || (path == "" && !folder) {
		return secretLoc{}, usagef("%q: give MOUNT/PATH; the first segment is the mount", arg)
	}
	var err error
	if p := strings.TrimSuffix(path, "/"); !folder {
		err = secrets.CheckPath(path)
	} else if p != "" {
		err = secrets.CheckPath(p)
	}
	if err != nil {
		return secretLoc{}, usagef("%v", err)
	}
	return secretLoc{mount, path}, nil
}

// locCmd makes a command whose one argument is MOUNT/PATH.
func (a *app) locCmd(use, short string, fn func(cmd *cobra.Command, c *client, loc secretLoc) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  short + ".\n\n" + secretNaming,
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			loc, err := parseLoc(args[0], false)
			if err != nil {
				return err
			}
			return fn(cmd, c, loc)
		}),
	}
}

// secretWriteCmd makes put and patch.
func (a *app) secretWriteCmd(use, short, method, verb string) *cobra.Command {
	var cas int
	cmd := &cobra.Command{
		Use:   use + " MOUNT/PATH (KEY=VALUE... | @FILE.json | -)",
		Short: short,
		Long: short + ". The data is KEY=VALUE pairs, where KEY=@FILE takes\n" +
			"the value from a file exactly (a final newline included), or one JSON object\n" +
			"from a file (@FILE.json) or stdin (-). The values are never printed.\n\n" + secretNaming,
		Example: "  custos secret " + use + " kv/app/db user=app password=@db-password.txt\n" +
			"  custos secret " + use + " kv/app/db @db.json --cas 3\n" +
			"  jq -n '{token: env.TOKEN}' | custos secret " + use + " kv/app/api -",
		Args: nargs(2, -1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			loc, err := parseLoc(args[0], false)
			if err != nil {
				return err
			}
			req := api.SecretWriteRequest{}
			if cmd.Flags().Changed("cas") {
				if cas < 0 {
					return usagef("--cas %d: want 0 (create only) or a version", cas)
				}
				req.Options.CAS = &cas
			}
			if req.Data, err = secretData(cmd.InOrStdin(), args[1:]); err != nil {
				return err
			}
			var v api.SecretVersion
			if err := c.call(cmd.Context(), method, loc.url("data"), req, &v); err != nil {
				return err
			}
			return a.out(cmd).line(v, "%s %s version %d", verb, loc, v.Version)
		}),
	}
	cmd.Flags().IntVar(&cas, "cas", 0, "write only if the current version is this one (0: only if the secret does not exist)")
	return cmd
}

// secretData makes the JSON object of a write from its arguments: one
// "@FILE" or "-" holding an object, or KEY=VALUE pairs. Errors never quote
// a value.
func secretData(in io.Reader, args []string) (json.RawMessage, error) {
	if len(args) == 1 && (args[0] == "-" || strings.HasPrefix(args[0], "@")) {
		name := "stdin"
		var raw []byte
		var err error
		if args[0] == "-" {
			raw, err = readInput(in, "-")
		} else {
			name = args[0][1:]
			raw, err = readFileLimited(name)
		}
		if err != nil {
			return nil, err
		}
		return jsonObject(name, raw)
	}
	obj := map[string]string{}
	for i, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok || k == "" {
			return nil, usagef("data argument %d: use KEY=VALUE or KEY=@FILE; @FILE.json and - stand alone", i+1)
		}
		if _, dup := obj[k]; dup {
			return nil, usagef("key %q is given twice", k)
		}
		if file, ok := strings.CutPrefix(v, "@"); ok {
			b, err := readFileLimited(file)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			if !utf8.Valid(b) {
				return nil, fmt.Errorf("%s: %s is not UTF-8 text; store binary values in base64", k, file)
			}
			v = string(b)
		}
		obj[k] = v
	}
	return json.Marshal(obj)
}

// jsonObject checks that raw is one JSON object and compacts it.
func jsonObject(name string, raw []byte) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fmt.Errorf("%s: malformed JSON at byte %d", name, syn.Offset)
		}
		return nil, fmt.Errorf("%s: the data must be a JSON object", name)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// dataFields decodes a secret's data into its fields, in key order.
func dataFields(data json.RawMessage) (map[string]json.RawMessage, []string) {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(data, &m)
	return m, slices.Sorted(maps.Keys(m))
}

// fieldText is a value as people read it: a string as it is, anything
// else as JSON.
func fieldText(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// tableText quotes a value that would break a table's lines or columns.
func tableText(v json.RawMessage) string {
	s := fieldText(v)
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

func (a *app) secretGetCmd() *cobra.Command {
	var (
		version int
		field   string
	)
	cmd := a.locCmd("get MOUNT/PATH [--version N] [--field KEY]",
		"Show a secret's data and version; --field prints one value as it is",
		func(cmd *cobra.Command, c *client, loc secretLoc) error {
			if version < 0 {
				return usagef("--version %d: want a version, or 0 for the current one", version)
			}
			path := loc.url("data")
			if version > 0 {
				path += "?version=" + strconv.Itoa(version)
			}
			var s api.SecretReadResponse
			if err := c.call(cmd.Context(), http.MethodGet, path, nil, &s); err != nil {
				return err
			}
			fields, keys := dataFields(s.Data)
			p := a.out(cmd)
			if field == "" {
				return p.print(s, func(t *table) {
					renderVersionMeta(t, loc, s.Metadata)
					t.text("")
					t.row("KEY", "VALUE")
					for _, k := range keys {
						t.row(k, tableText(fields[k]))
					}
				})
			}
			v, ok := fields[field]
			if !ok {
				return fmt.Errorf("%s version %d has no field %q", loc, s.Metadata.Version, field)
			}
			if p.json() {
				return p.print(v, nil)
			}
			out := fieldText(v)
			if f, ok := cmd.OutOrStdout().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				out += "\n" // for the prompt; a pipe gets the value exactly
			}
			_, err := io.WriteString(cmd.OutOrStdout(), out)
			return err
		})
	cmd.Flags().IntVar(&version, "version", 0, "the version to read (default: the current one)")
	cmd.Flags().StringVar(&field, "field", "", "print only this field's value, as it is (strings unquoted)")
	return cmd
}

func renderVersionMeta(t *table, loc secretLoc, m api.SecretVersionMeta) {
	t.kv("Path", loc.String())
	t.kv("Version", m.Version)
	t.kv("Created", m.CreatedTime)
	for _, k := range slices.Sorted(maps.Keys(m.CustomMetadata)) {
		t.kv("Custom "+k, m.CustomMetadata[k])
	}
}

func (a *app) secretListCmd() *cobra.Command {
	var (
		recursive bool
		filters   []string
		limit     int
		after     string
	)
	cmd := &cobra.Command{
		Use:   "list MOUNT[/PREFIX] [-r] [--filter KEY=VALUE]...",
		Short: "List the secrets under a prefix; folders end in /",
		Long: "List the secrets under a prefix, relative to it; folders end in \"/\". -r lists\n" +
			"every secret below the prefix; --filter keeps those whose custom metadata has\n" +
			"KEY=VALUE (all filters must match).\n\n" + secretNaming,
		Args: nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			loc, err := parseLoc(args[0], true)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usagef("--limit %d: want 0 (all) or more", limit)
			}
			q := url.Values{"list": {"true"}}
			if recursive {
				q.Set("recursive", "true")
			}
			for _, f := range filters {
				if k, _, ok := strings.Cut(f, "="); !ok || k == "" {
					return usagef("--filter %q: use KEY=VALUE", f)
				}
				q.Add("filter", f)
			}
			list := api.SecretListResponse{Keys: []string{}}
			err = pages(after, limit, secrets.DefaultListLimit, func(after string, n int) (int, string, error) {
				setPage(q, after, n)
				var page api.SecretListResponse
				if err := c.call(cmd.Context(), http.MethodGet, loc.url("metadata")+"?"+q.Encode(), nil, &page); err != nil {
					return 0, "", err
				}
				list.Keys, list.Next = append(list.Keys, page.Keys...), page.Next
				return len(page.Keys), page.Next, nil
			})
			if err != nil {
				return err
			}
			p := a.out(cmd)
			if err := p.print(list, func(t *table) {
				for _, k := range list.Keys {
					t.text("%s", k)
				}
			}); err != nil {
				return err
			}
			return moreHint(cmd, p, list.Next)
		}),
	}
	f := cmd.Flags()
	f.BoolVarP(&recursive, "recursive", "r", false, "list every secret below the prefix")
	f.StringArrayVar(&filters, "filter", nil, "only secrets whose custom metadata has KEY=VALUE (repeatable)")
	f.IntVar(&limit, "limit", 0, "list at most this many (0: all)")
	f.StringVar(&after, "after", "", "start after this name, as a previous list printed it")
	return cmd
}

func (a *app) secretReadManyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "read-many MOUNT PATH...",
		Short: "Read the current version of several secrets of a mount in one call",
		Long: "Read the current version of up to " + strconv.Itoa(secrets.MaxReadMany) + " secrets of MOUNT in one call. The\n" +
			"paths are relative to the mount. Every path gets an answer; the command exits 1\n" +
			"when some could not be read.",
		Example: "  custos secret read-many kv app/db app/api",
		Args:    nargs(2, -1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			mount, paths := args[0], args[1:]
			if mount == "" || strings.Contains(mount, "/") {
				return usagef("%q: give the mount alone, then the paths in it", mount)
			}
			if len(paths) > secrets.MaxReadMany {
				return usagef("%d paths: at most %d in one call", len(paths), secrets.MaxReadMany)
			}
			for _, p := range paths {
				if err := secrets.CheckPath(p); err != nil {
					return usagef("%v", err)
				}
			}
			var resp api.SecretReadManyResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/secret/"+pathSegment(mount)+"/read-many", api.SecretReadManyRequest{Paths: paths}, &resp); err != nil {
				return err
			}
			failed := 0
			for _, r := range resp.Results {
				if r.Error != nil {
					failed++
				}
			}
			if err := a.out(cmd).print(resp, func(t *table) {
				for i, r := range resp.Results {
					if i > 0 {
						t.text("")
					}
					t.text("%s", secretLoc{mount, r.Path})
					if r.Error != nil {
						t.text("  error: %s (code %s)", r.Error.Message, r.Error.Code)
						continue
					}
					fields, keys := dataFields(r.Data)
					for _, k := range keys {
						t.row("  "+k, tableText(fields[k]))
					}
				}
			}); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d paths could not be read", failed, len(resp.Results))
			}
			return nil
		}),
	}
}
