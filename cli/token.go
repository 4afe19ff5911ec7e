package cli

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

func (a *app) tokenCmd() *cobra.Command {
	return group("token", "Create, look up, renew and revoke tokens",
		a.tokenCreateCmd(),
		a.tokenLookupCmd(),
		a.tokenRenewCmd(),
		a.tokenRevokeCmd(),
	)
}

func (a *app) tokenCreateCmd() *cobra.Command {
	var (
		req       api.TokenCreateRequest
		renewable bool
		meta      []string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a child of the current token",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			if cmd.Flags().Changed("renewable") {
				req.Renewable = &renewable
			}
			for _, kv := range meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--meta %q: use key=value", kv)
				}
				if req.Meta == nil {
					req.Meta = map[string]string{}
				}
				req.Meta[k] = v
			}
			var resp api.TokenResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/auth/token/create", req, &resp); err != nil {
				return err
			}
			return a.out(cmd).print(resp, func(t *table) { renderToken(t, resp) })
		}),
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.Policies, "policy", nil, "policy to attach (repeatable)")
	f.StringVar(&req.TTL, "ttl", "", "time to live, e.g. 1h (default: the server's)")
	f.StringVar(&req.MaxTTL, "max-ttl", "", "the longest renewals can extend the token to")
	f.StringVar(&req.DisplayName, "display-name", "", "a name for people and the audit log")
	f.IntVar(&req.NumUses, "num-uses", 0, "number of uses (0: unlimited)")
	f.BoolVar(&renewable, "renewable", true, "whether the token can be renewed")
	f.StringArrayVar(&meta, "meta", nil, "key=value metadata (repeatable)")
	return cmd
}

// tokenTarget names the token a command acts on: one given as an
// argument ("-": read from stdin, so it is not on the command line) or an
// accessor. Neither means the caller's own token.
type tokenTarget struct {
	accessor string
}

func (tt *tokenTarget) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&tt.accessor, "accessor", "", "name the token by its accessor")
}

// request returns the request for args, or ok false for the caller's own
// token.
func (tt *tokenTarget) request(cmd *cobra.Command, args []string) (req api.TokenRequest, ok bool, err error) {
	switch {
	case len(args) == 1 && tt.accessor != "":
		return req, false, usagef("give a token or --accessor, not both")
	case tt.accessor != "":
		req.Accessor = tt.accessor
	case len(args) == 1 && args[0] == "-":
		tok, err := newSecretReader(cmd.InOrStdin(), cmd.ErrOrStderr()).read("Token")
		if err != nil {
			return req, false, fmt.Errorf("read the token from stdin: %w", err)
		}
		req.Token = tok
	case len(args) == 1:
		req.Token = args[0]
	default:
		return req, false, nil
	}
	return req, true, nil
}

func (a *app) tokenLookupCmd() *cobra.Command {
	var tt tokenTarget
	cmd := &cobra.Command{
		Use:   "lookup [TOKEN|-|--accessor A]",
		Short: "Show a token's properties (default: the current token's)",
		Args:  nargs(0, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			req, other, err := tt.request(cmd, args)
			if err != nil {
				return err
			}
			var resp api.TokenResponse
			if other {
				err = c.call(cmd.Context(), http.MethodPost, "/v1/auth/token/lookup", req, &resp)
			} else {
				err = c.call(cmd.Context(), http.MethodGet, "/v1/auth/token/lookup-self", nil, &resp)
			}
			if err != nil {
				return err
			}
			resp.ClientToken = "" // a lookup never shows a token
			return a.out(cmd).print(resp, func(t *table) { renderToken(t, resp) })
		}),
	}
	tt.flags(cmd)
	return cmd
}

func (a *app) tokenRenewCmd() *cobra.Command {
	var (
		tt        tokenTarget
		increment string
	)
	cmd := &cobra.Command{
		Use:   "renew [TOKEN|-|--accessor A]",
		Short: "Extend a token's lifetime (default: the current token's)",
		Args:  nargs(0, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			req, other, err := tt.request(cmd, args)
			if err != nil {
				return err
			}
			req.Increment = increment
			var resp api.TokenResponse
			if other {
				err = c.call(cmd.Context(), http.MethodPost, "/v1/auth/token/renew", req, &resp)
			} else {
				err = c.call(cmd.Context(), http.MethodPost, "/v1/auth/token/renew-self",
					struct {
						Increment string `json:"increment"`
					}{increment}, &resp)
			}
			if err != nil {
				return err
			}
			resp.ClientToken = ""
			return a.out(cmd).print(resp, func(t *table) { renderToken(t, resp) })
		}),
	}
	tt.flags(cmd)
	cmd.Flags().StringVar(&increment, "increment", "", "extend by this much, e.g. 1h (default: the token's TTL)")
	return cmd
}

func (a *app) tokenRevokeCmd() *cobra.Command {
	var (
		tt   tokenTarget
		self bool
	)
	cmd := &cobra.Command{
		Use:   "revoke [TOKEN|-|--accessor A|--self]",
		Short: "Revoke a token and all its children",
		Args:  nargs(0, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			req, other, err := tt.request(cmd, args)
			if err != nil {
				return err
			}
			switch {
			case other && self:
				return usagef("--self takes no token or accessor")
			case !other && !self:
				return usagef("name the token to revoke: TOKEN, - (stdin), --accessor A, or --self")
			case self:
				err = c.call(cmd.Context(), http.MethodPost, "/v1/auth/token/revoke-self", nil, nil)
			default:
				err = c.call(cmd.Context(), http.MethodPost, "/v1/auth/token/revoke", req, nil)
			}
			if err != nil {
				return err
			}
			what := "the token"
			switch {
			case self:
				what = "the current token"
			case req.Accessor != "":
				what = "the token with accessor " + req.Accessor
			}
			return a.out(cmd).line(map[string]bool{"revoked": true}, "Revoked %s and its children", what)
		}),
	}
	tt.flags(cmd)
	cmd.Flags().BoolVar(&self, "self", false, "revoke the current token")
	return cmd
}

// renderToken shows a token's properties; the token itself only when the
// answer carries one (create).
func renderToken(t *table, r api.TokenResponse) {
	if r.ClientToken != "" {
		t.kv("Token", r.ClientToken)
	}
	t.kv("Accessor", r.Accessor)
	t.kv("Policies", r.Policies)
	t.kv("Display name", r.DisplayName)
	if r.Parent != "" {
		t.kv("Parent accessor", r.Parent)
	}
	t.kv("Created", r.CreatedAt)
	if r.ExpiresAt.IsZero() {
		t.kv("Expires", "never")
	} else {
		t.kv("Expires", r.ExpiresAt)
	}
	if !r.MaxExpiresAt.IsZero() {
		t.kv("Max expires", r.MaxExpiresAt)
	}
	t.kv("TTL", r.TTL)
	t.kv("Renewable", r.Renewable)
	if r.NumUses > 0 {
		t.kv("Uses left", r.NumUses)
	} else {
		t.kv("Uses left", "unlimited")
	}
	for _, k := range slices.Sorted(maps.Keys(r.Meta)) {
		t.kv("Meta "+k, r.Meta[k])
	}
}
