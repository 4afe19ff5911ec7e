package cli

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

// ceremonySpec describes one share-collecting ceremony for the CLI.
type ceremonySpec struct {
	kind, initPath, updatePath string
	short, long                string
	// initFlags adds init's own flags and returns the request to send.
	initFlags func(cmd *cobra.Command) func(cmd *cobra.Command, c *client) (api.CeremonyRequest, error)
	// done prints a completed ceremony's result.
	done func(t *table, st api.CeremonyStatus, cmd *cobra.Command)
	// doneFlags adds update's own flags (generate-root's --otp).
	doneFlags func(cmd *cobra.Command)
}

const ceremonyLong = "\n\nThe ceremony runs on the node that started it (--addr): init prints a nonce,\n" +
	"once; give it to the share holders. Each holder then runs update with the nonce\n" +
	"and their share (read without echo when not given). The answer to the update that\n" +
	"completes the ceremony is the only place its result appears. cancel needs the\n" +
	"nonce too. A ceremony left without a new share for an hour ends by itself."

func (a *app) ceremonyCmd(s ceremonySpec) *cobra.Command {
	g := group(s.kind, s.short)
	g.Long = s.long + ceremonyLong

	initCmd := &cobra.Command{Use: "init", Short: "Start the ceremony and print its nonce", Args: nargs(0, 0)}
	build := s.initFlags(initCmd)
	initCmd.RunE = a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
		req, err := build(cmd, c)
		if err != nil {
			return err
		}
		var st api.CeremonyStatus
		if err := c.call(cmd.Context(), http.MethodPost, s.initPath, req, &st); err != nil {
			return err
		}
		if st.Complete { // a key-file cluster's rotate-root needs no shares
			return a.out(cmd).print(st, func(t *table) { s.done(t, st, cmd) })
		}
		return a.out(cmd).print(ceremonyInitOutput{st, req.OTP}, func(t *table) {
			t.kv("Nonce", st.Nonce)
			if req.OTP != "" {
				t.kv("OTP", req.OTP)
			}
			t.kv("Required shares", st.Required)
			t.text("")
			t.text("Share holders run: custos operator %s update --nonce %s", s.kind, st.Nonce)
			if req.OTP != "" {
				t.text("Keep the OTP: the new token comes back encoded with it (custos operator %s decode).", s.kind)
			}
		})
	})

	var nonce string
	update := &cobra.Command{
		Use:   "update [SHARE]",
		Short: "Give a share to the ceremony named by --nonce",
		Args:  nargs(0, 1),
	}
	update.Flags().StringVar(&nonce, "nonce", "", "the nonce init printed (required)")
	if s.doneFlags != nil {
		s.doneFlags(update)
	}
	update.RunE = a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
		if nonce == "" {
			return usagef("--nonce is required")
		}
		var st api.CeremonyStatus
		submit := func(share string) (shareProgress, error) {
			st = api.CeremonyStatus{}
			err := c.call(cmd.Context(), http.MethodPost, s.updatePath, api.CeremonyRequest{Nonce: nonce, Key: share}, &st)
			return shareProgress{st.Progress, st.Required, st.Complete}, err
		}
		if err := collectShares(cmd, args, "Unseal share", submit); err != nil {
			return err
		}
		return a.out(cmd).print(st, func(t *table) {
			if !st.Complete {
				t.kv("Progress", fmt.Sprintf("%d/%d", st.Progress, st.Required))
				return
			}
			s.done(t, st, cmd)
		})
	})

	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether a ceremony is in progress and how far it is",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var st api.CeremonyStatus
			if err := c.call(cmd.Context(), http.MethodGet, s.initPath, nil, &st); err != nil {
				return err
			}
			return a.out(cmd).print(st, func(t *table) {
				t.kv("Started", st.Started)
				if st.Started {
					t.kv("Started at", st.StartedAt)
					t.kv("Progress", fmt.Sprintf("%d/%d", st.Progress, st.Required))
				}
			})
		}),
	}

	var cancelNonce string
	cancel := &cobra.Command{
		Use:   "cancel",
		Short: "Cancel the ceremony named by --nonce",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			if cancelNonce == "" {
				return usagef("--nonce is required")
			}
			if err := c.call(cmd.Context(), http.MethodDelete, s.initPath, api.CeremonyRequest{Nonce: cancelNonce}, nil); err != nil {
				return err
			}
			return a.out(cmd).line(map[string]bool{"canceled": true}, "Canceled the %s ceremony", s.kind)
		}),
	}
	cancel.Flags().StringVar(&cancelNonce, "nonce", "", "the nonce init printed (required)")
	g.AddCommand(initCmd, update, status, cancel)
	return g
}

// ceremonyInitOutput is what init prints with -o json: the answer, and the
// OTP this CLI made.
type ceremonyInitOutput struct {
	api.CeremonyStatus
	OTP string `json:"otp,omitempty"`
}

func (a *app) generateRootCmd() *cobra.Command {
	var otpFlag string
	cmd := a.ceremonyCmd(ceremonySpec{
		kind: api.CeremonyGenerateRoot, initPath: "/v1/sys/generate-root/attempt", updatePath: "/v1/sys/generate-root/update",
		short: "Make a new root token from a quorum of unseal shares",
		long: "Make a new root token from a quorum of unseal shares. init makes a one-time pad\n" +
			"(OTP) and prints it with the nonce: the token comes back XOR'd with the OTP, so\n" +
			"that whoever gives the last share does not learn it. Decode it with decode, or\n" +
			"give --otp to update.",
		initFlags: func(cmd *cobra.Command) func(*cobra.Command, *client) (api.CeremonyRequest, error) {
			var otp string
			cmd.Flags().StringVar(&otp, "otp", "", "use this OTP (base64) instead of making one")
			return func(cmd *cobra.Command, c *client) (api.CeremonyRequest, error) {
				if otp != "" {
					return api.CeremonyRequest{OTP: otp}, nil
				}
				var st api.CeremonyStatus
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/sys/generate-root/attempt", nil, &st); err != nil {
					return api.CeremonyRequest{}, err
				}
				if st.OTPLength <= 0 || st.OTPLength > 1024 {
					return api.CeremonyRequest{}, fmt.Errorf("the server asks for an OTP of %d bytes", st.OTPLength)
				}
				b := make([]byte, st.OTPLength)
				rand.Read(b)
				return api.CeremonyRequest{OTP: base64.StdEncoding.EncodeToString(b)}, nil
			}
		},
		doneFlags: func(cmd *cobra.Command) {
			cmd.Flags().StringVar(&otpFlag, "otp", "", "decode the new token with this OTP (from init)")
		},
		done: func(t *table, st api.CeremonyStatus, _ *cobra.Command) {
			if otpFlag != "" {
				if tok, err := decodeRootToken(st.EncodedToken, otpFlag); err == nil {
					t.kv("Root token", tok)
					return
				}
				t.text("The OTP does not decode the token; decode it with the right one.")
			}
			t.kv("Encoded token", st.EncodedToken)
			t.text("")
			t.text("Decode it with: custos operator generate-root decode --otp OTP %s", st.EncodedToken)
		},
	})
	var otp string
	decode := &cobra.Command{
		Use:   "decode ENCODED-TOKEN",
		Short: "Decode the token a completed generate-root returned, with the OTP from init",
		Args:  nargs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if otp == "" {
				return usagef("--otp is required")
			}
			tok, err := decodeRootToken(args[0], otp)
			if err != nil {
				return err
			}
			return a.out(cmd).line(map[string]string{"root_token": tok}, "%s", tok)
		},
	}
	decode.Flags().StringVar(&otp, "otp", "", "the OTP init printed (required)")
	cmd.AddCommand(decode)
	return cmd
}

// decodeRootToken XORs the base64 encoded token with the base64 OTP.
func decodeRootToken(encoded, otp string) (string, error) {
	enc, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return "", usagef("the encoded token is not base64")
	}
	pad, err := base64.StdEncoding.DecodeString(otp)
	if err != nil {
		return "", usagef("the OTP is not base64")
	}
	if len(pad) != len(enc) {
		return "", errors.New("the OTP and the encoded token differ in length: is it the OTP of this ceremony?")
	}
	subtle.XORBytes(enc, enc, pad)
	return string(enc), nil
}

func (a *app) rekeyCmd() *cobra.Command {
	return a.ceremonyCmd(ceremonySpec{
		kind: api.CeremonyRekey, initPath: "/v1/sys/rekey/init", updatePath: "/v1/sys/rekey/update",
		short: "Split a new unseal key into new shares, given a quorum of the current ones",
		long: "Replace the unseal key and its shares. On completion the new shares are shown,\n" +
			"once, to whoever gives the last share, and the old ones stop working. With one\n" +
			"--recipient (an age public key) per new share, each share comes back encrypted\n" +
			"to its holder instead (decrypt with: age -d -i KEY-FILE).",
		initFlags: func(cmd *cobra.Command) func(*cobra.Command, *client) (api.CeremonyRequest, error) {
			var req api.CeremonyRequest
			f := cmd.Flags()
			f.IntVar(&req.SecretShares, "key-shares", 5, "number of new unseal shares")
			f.IntVar(&req.SecretThreshold, "key-threshold", 3, "number of new shares that unseal a node")
			f.StringArrayVar(&req.Recipients, "recipient", nil, "age public key of a share's holder (repeat, one per share, in order)")
			return func(*cobra.Command, *client) (api.CeremonyRequest, error) { return req, nil }
		},
		done: func(t *table, st api.CeremonyStatus, _ *cobra.Command) {
			for i, k := range st.Keys {
				t.kv(fmt.Sprintf("Unseal share %d", i+1), k)
			}
			for i, k := range st.KeysEncrypted {
				t.text("Unseal share %d (encrypted to recipient %d):", i+1, i+1)
				t.text("%s", k)
			}
			t.text("")
			t.text("The unseal key is replaced; the old shares no longer work. These are shown only now.")
		},
	})
}

func (a *app) rotateRootCmd() *cobra.Command {
	return a.ceremonyCmd(ceremonySpec{
		kind: api.CeremonyRotateRoot, initPath: "/v1/sys/rotate-root/init", updatePath: "/v1/sys/rotate-root/update",
		short: "Replace the root key, given a quorum of unseal shares",
		long: "Replace the root key that encrypts the barrier keyring; the unseal shares stay\n" +
			"the same. A cluster that unseals from a key file completes at init.",
		initFlags: func(*cobra.Command) func(*cobra.Command, *client) (api.CeremonyRequest, error) {
			return func(*cobra.Command, *client) (api.CeremonyRequest, error) { return api.CeremonyRequest{}, nil }
		},
		done: func(t *table, st api.CeremonyStatus, _ *cobra.Command) {
			t.kv("Root key generation", st.RootGeneration)
			t.text("The root key is replaced. Unsealed nodes follow; a node two rotations behind seals itself.")
		},
	})
}

func (a *app) rotateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate",
		Short: "Add a barrier keyring term: new values are encrypted under it, old ones still decrypt",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var ks api.KeyStatus
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/rotate", nil, &ks); err != nil {
				return err
			}
			return a.out(cmd).print(ks, func(t *table) { printKeyStatus(t, ks) })
		}),
	}
}

func (a *app) keyStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "key-status",
		Short: "Show the barrier keyring's active term, its age and its use count",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var ks api.KeyStatus
			if err := c.call(cmd.Context(), http.MethodGet, "/v1/sys/key-status", nil, &ks); err != nil {
				return err
			}
			return a.out(cmd).print(ks, func(t *table) { printKeyStatus(t, ks) })
		}),
	}
}

func printKeyStatus(t *table, ks api.KeyStatus) {
	t.kv("Term", ks.Term)
	t.kv("Install time", ks.InstallTime)
	t.kv("Age", ks.Age)
	t.kv("Encryptions", ks.Encryptions)
	t.kv("Terms", ks.Terms)
	t.kv("Rotates after", fmt.Sprintf("%d encryptions", ks.MaxEncryptions))
	if d, err := time.ParseDuration(ks.Interval); err == nil && d > 0 {
		t.kv("Rotates at age", ks.Interval)
	}
}

func (a *app) rotateConfigCmd() *cobra.Command {
	var (
		maxEnc   uint64
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rotate-config",
		Short: "Show or set when the barrier keyring rotates by itself",
		Long: "Show when the barrier keyring rotates by itself, or change it with\n" +
			"--max-encryptions (2^20 to 2^31) and --interval (0 for never by age, else at least 24h).",
		Args: nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var rc api.RotationConfig
			f := cmd.Flags()
			if f.Changed("max-encryptions") || f.Changed("interval") {
				if err := c.call(cmd.Context(), http.MethodGet, "/v1/sys/rotate/config", nil, &rc); err != nil {
					return err
				}
				if f.Changed("max-encryptions") {
					rc.MaxEncryptions = maxEnc
				}
				if f.Changed("interval") {
					rc.Interval = interval.String()
				}
				if err := c.call(cmd.Context(), http.MethodPost, "/v1/sys/rotate/config", rc, &rc); err != nil {
					return err
				}
			} else if err := c.call(cmd.Context(), http.MethodGet, "/v1/sys/rotate/config", nil, &rc); err != nil {
				return err
			}
			return a.out(cmd).print(rc, func(t *table) {
				t.kv("Max encryptions", rc.MaxEncryptions)
				t.kv("Interval", rc.Interval)
			})
		}),
	}
	cmd.Flags().Uint64Var(&maxEnc, "max-encryptions", 1<<30, "rotate after this many encryptions under one term")
	cmd.Flags().DurationVar(&interval, "interval", 30*24*time.Hour, "rotate a term this old (0: never by age)")
	return cmd
}
