package cli

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/kms"
	"github.com/spf13/cobra"
)

// keyTypes lists the kms key types, for completion and help.
func keyTypes() []string {
	return []string{
		string(kms.TypeAES256GCM96HKDF), string(kms.TypeAES256GCM96),
		string(kms.TypeECDSAP256), string(kms.TypeECDSAP384), string(kms.TypeEd25519),
		string(kms.TypeRSA2048), string(kms.TypeRSA3072), string(kms.TypeRSA4096),
		string(kms.TypeHMAC),
	}
}

func keyPath(name string, rest ...string) string {
	p := "/v1/kms/keys/" + pathSegment(name)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

func (a *app) kmsCmd() *cobra.Command {
	return group("kms", "Manage named keys and encrypt, sign and MAC with them",
		group("key", "Create, inspect, rotate, configure and delete named keys",
			a.keyCreateCmd(),
			&cobra.Command{
				Use:   "list",
				Short: "List the keys",
				Args:  nargs(0, 0),
				RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
					var resp api.ListResponse
					if err := c.call(cmd.Context(), http.MethodGet, "/v1/kms/keys", nil, &resp); err != nil {
						return err
					}
					return a.out(cmd).print(resp, func(t *table) {
						for _, k := range resp.Keys {
							t.text("%s", k)
						}
					})
				}),
			},
			a.keyShowCmd("show NAME", "Show a key's settings and versions", http.MethodGet, ""),
			a.keyShowCmd("rotate NAME", "Add a new version to a key; new encryptions use it", http.MethodPost, "rotate"),
			a.keyConfigCmd(),
			a.keyDeleteCmd(),
		),
		a.encryptCmd(),
		a.decryptCmd(),
		a.rewrapCmd(),
		a.datakeyCmd(),
		a.signCmd(),
		a.verifyCmd(),
		a.hmacCmd(),
		a.randomCmd(),
	)
}

// printKey prints a key's metadata.
func (a *app) printKey(cmd *cobra.Command, k api.KMSKey) error {
	return a.out(cmd).print(k, func(t *table) {
		t.kv("Name", k.Name)
		t.kv("Type", string(k.Type))
		t.kv("Created", k.Created)
		t.kv("Latest version", k.LatestVersion)
		t.kv("Min decryption version", k.MinDecryptionVersion)
		t.kv("Min encryption version", k.MinEncryptionVersion)
		t.kv("Exportable", k.Exportable)
		t.kv("Deletion allowed", k.DeletionAllowed)
		if !k.DeletionDate.IsZero() {
			t.kv("Deletion date", k.DeletionDate)
		}
		if p := k.AutoRotatePeriod; p != "" && p != "0s" {
			t.kv("Auto-rotate period", p)
		} else {
			t.kv("Auto-rotate period", "never")
		}
		if k.AutoRotateUses > 0 {
			t.kv("Auto-rotate uses", k.AutoRotateUses)
		} else {
			t.kv("Auto-rotate uses", "never")
		}
		t.text("")
		t.row("VERSION", "STATE", "CREATED", "USES", "DECRYPTIONS")
		for _, v := range k.Versions {
			t.row(v.Version, string(v.State), v.Created, v.Uses, v.Decryptions)
		}
	})
}

func (a *app) keyCreateCmd() *cobra.Command {
	var req api.KMSKeyCreateRequest
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a named key",
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			var k api.KMSKey
			if err := c.call(cmd.Context(), http.MethodPost, keyPath(args[0]), req, &k); err != nil {
				return err
			}
			return a.printKey(cmd, k)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Type, "type", "", "key type (default "+string(kms.DefaultKeyType)+"): one of "+strings.Join(keyTypes(), ", "))
	f.BoolVar(&req.Exportable, "exportable", false, "allow the key material to be exported (can be turned off later, never on)")
	f.BoolVar(&req.DeletionAllowed, "deletion-allowed", false, "allow the key to be deleted")
	f.StringVar(&req.AutoRotatePeriod, "auto-rotate-period", "", "rotate when the latest version is this old, e.g. 720h")
	f.Uint64Var(&req.AutoRotateUses, "auto-rotate-uses", 0, "rotate when the latest version has been used this many times")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(keyTypes(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// keyShowCmd makes a command that sends method to the key's path (plus
// sub) and prints the key information it answers with.
func (a *app) keyShowCmd(use, short, method, sub string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			path := keyPath(args[0])
			if sub != "" {
				path = keyPath(args[0], sub)
			}
			var k api.KMSKey
			if err := c.call(cmd.Context(), method, path, nil, &k); err != nil {
				return err
			}
			return a.printKey(cmd, k)
		}),
	}
}

func (a *app) keyConfigCmd() *cobra.Command {
	var (
		minDec, minEnc       int
		exportable, deletion bool
		rotatePeriod         string
		rotateUses           uint64
	)
	cmd := &cobra.Command{
		Use:   "config NAME",
		Short: "Change a key's settings; only the flags given change",
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			var req api.KMSKeyConfigRequest
			f := cmd.Flags()
			if f.Changed("min-decryption-version") {
				req.MinDecryptionVersion = &minDec
			}
			if f.Changed("min-encryption-version") {
				req.MinEncryptionVersion = &minEnc
			}
			if f.Changed("exportable") {
				req.Exportable = &exportable
			}
			if f.Changed("deletion-allowed") {
				req.DeletionAllowed = &deletion
			}
			if f.Changed("auto-rotate-period") {
				req.AutoRotatePeriod = &rotatePeriod
			}
			if f.Changed("auto-rotate-uses") {
				req.AutoRotateUses = &rotateUses
			}
			if req == (api.KMSKeyConfigRequest{}) {
				return usagef("nothing to change: give at least one setting flag")
			}
			var k api.KMSKey
			if err := c.call(cmd.Context(), http.MethodPost, keyPath(args[0], "config"), req, &k); err != nil {
				return err
			}
			return a.printKey(cmd, k)
		}),
	}
	f := cmd.Flags()
	f.IntVar(&minDec, "min-decryption-version", 0, "oldest version that may decrypt")
	f.IntVar(&minEnc, "min-encryption-version", 0, "oldest version that may encrypt (0: the latest only)")
	f.BoolVar(&exportable, "exportable", false, "allow export (can only be turned off)")
	f.BoolVar(&deletion, "deletion-allowed", false, "allow deletion")
	f.StringVar(&rotatePeriod, "auto-rotate-period", "", "rotate when the latest version is this old (0: never)")
	f.Uint64Var(&rotateUses, "auto-rotate-uses", 0, "rotate after this many uses (0: never)")
	return cmd
}

func (a *app) keyDeleteCmd() *cobra.Command {
	var wait string
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Schedule a key for deletion (the key must allow deletion)",
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			path := keyPath(args[0])
			if wait != "" {
				path += "?" + url.Values{"wait": {wait}}.Encode()
			}
			var k api.KMSKey
			if err := c.call(cmd.Context(), http.MethodDelete, path, nil, &k); err != nil {
				return err
			}
			return a.out(cmd).line(k, "Key %s will be deleted at %s", k.Name, cell(k.DeletionDate))
		}),
	}
	cmd.Flags().StringVar(&wait, "wait", "", "how long before the key is destroyed, e.g. 720h (default: the server's)")
	return cmd
}
