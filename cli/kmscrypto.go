package cli

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/custos-pki/custos/api"
	"github.com/spf13/cobra"
)

func opPath(op, name string) string { return "/v1/kms/" + op + "/" + pathSegment(name) }

// inputFlags registers --file and --input-encoding on cmd.
func inputFlags(cmd *cobra.Command, src *dataSource, what string) {
	cmd.Flags().StringVar(&src.file, "file", "", "read the "+what+" from this file")
	cmd.Flags().StringVar(&src.encoding, "input-encoding", encRaw, "how the "+what+" is given: raw, base64 or hex")
	_ = cmd.RegisterFlagCompletionFunc("input-encoding", cobra.FixedCompletions([]string{encRaw, encBase64, encHex}, cobra.ShellCompDirectiveNoFileComp))
}

func (a *app) encryptCmd() *cobra.Command {
	var (
		src dataSource
		ad  string
		req api.KMSEncryptRequest
	)
	cmd := &cobra.Command{
		Use:   "encrypt NAME [PLAINTEXT|-]",
		Short: "Encrypt data under a named key",
		Example: `  custos kms encrypt demo hello
  custos kms encrypt demo --file secret.bin
  tar c dir | custos kms encrypt demo -`,
		Args: nargs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			pt, err := src.read(cmd.InOrStdin(), args[1:], "plaintext")
			if err != nil {
				return err
			}
			req.Plaintext, req.AssociatedData = base64.StdEncoding.EncodeToString(pt), encodeAD(ad)
			var resp api.KMSResult
			if err := c.call(cmd.Context(), http.MethodPost, opPath("encrypt", args[0]), req, &resp); err != nil {
				return err
			}
			return a.out(cmd).line(resp, "%s", resp.Ciphertext)
		}),
	}
	inputFlags(cmd, &src, "plaintext")
	cmd.Flags().StringVar(&ad, "ad", "", "associated data: authenticated, not encrypted; decrypt needs the same")
	cmd.Flags().IntVar(&req.Version, "version", 0, "key version to encrypt with (default: the latest)")
	return cmd
}

func encodeAD(ad string) string {
	if ad == "" {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(ad))
}

func (a *app) decryptCmd() *cobra.Command {
	var (
		src dataSource
		ad  string
	)
	cmd := &cobra.Command{
		Use:   "decrypt NAME [CIPHERTEXT|-]",
		Short: "Decrypt a ciphertext; the plaintext is written as is (base64 in -o json)",
		Args:  nargs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			ct, err := src.text(cmd.InOrStdin(), args[1:], "ciphertext")
			if err != nil {
				return err
			}
			req := api.KMSDecryptRequest{KMSDecryptItem: api.KMSDecryptItem{Ciphertext: ct, AssociatedData: encodeAD(ad)}}
			var resp api.KMSResult
			if err := c.call(cmd.Context(), http.MethodPost, opPath("decrypt", args[0]), req, &resp); err != nil {
				return err
			}
			p := a.out(cmd)
			if p.json() {
				return p.print(resp, nil)
			}
			if resp.Plaintext == nil {
				return errors.New("decrypt: the server's answer has no plaintext")
			}
			pt, err := base64.StdEncoding.DecodeString(*resp.Plaintext)
			if err != nil {
				return fmt.Errorf("decrypt: the server's plaintext is not base64: %w", err)
			}
			_, err = cmd.OutOrStdout().Write(pt)
			return err
		}),
	}
	cmd.Flags().StringVar(&src.file, "file", "", "read the ciphertext from this file")
	cmd.Flags().StringVar(&ad, "ad", "", "the associated data given to encrypt")
	return cmd
}

func (a *app) rewrapCmd() *cobra.Command {
	var (
		src dataSource
		ad  string
		ver int
	)
	cmd := &cobra.Command{
		Use:   "rewrap NAME [CIPHERTEXT|-]",
		Short: "Re-encrypt a ciphertext under the key's latest version, without showing the plaintext",
		Args:  nargs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			ct, err := src.text(cmd.InOrStdin(), args[1:], "ciphertext")
			if err != nil {
				return err
			}
			req := api.KMSDecryptRequest{KMSDecryptItem: api.KMSDecryptItem{Ciphertext: ct, AssociatedData: encodeAD(ad)}, Version: ver}
			var resp api.KMSResult
			if err := c.call(cmd.Context(), http.MethodPost, opPath("rewrap", args[0]), req, &resp); err != nil {
				return err
			}
			return a.out(cmd).line(resp, "%s", resp.Ciphertext)
		}),
	}
	cmd.Flags().StringVar(&src.file, "file", "", "read the ciphertext from this file")
	cmd.Flags().StringVar(&ad, "ad", "", "the associated data given to encrypt")
	cmd.Flags().IntVar(&ver, "version", 0, "key version to encrypt with again (default: the latest)")
	return cmd
}

func (a *app) datakeyCmd() *cobra.Command {
	var (
		req api.KMSDataKeyRequest
		ad  string
	)
	cmd := &cobra.Command{
		Use:   "datakey NAME",
		Short: "Make a data key: a random key returned encrypted under NAME (and in the clear with --plaintext)",
		Args:  nargs(1, 1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			req.AssociatedData = encodeAD(ad)
			var resp api.KMSResult
			if err := c.call(cmd.Context(), http.MethodPost, opPath("datakey", args[0]), req, &resp); err != nil {
				return err
			}
			return a.out(cmd).print(resp, func(t *table) {
				t.kv("Ciphertext", resp.Ciphertext)
				if resp.Plaintext != nil {
					t.kv("Plaintext (base64)", *resp.Plaintext)
				}
			})
		}),
	}
	cmd.Flags().IntVar(&req.Bits, "bits", 256, "key size in bits: 128, 256 or 512")
	cmd.Flags().BoolVar(&req.Plaintext, "plaintext", false, "return the key in the clear too")
	cmd.Flags().StringVar(&ad, "ad", "", "associated data to bind the encrypted key to")
	cmd.Flags().IntVar(&req.Version, "version", 0, "key version to encrypt with (default: the latest)")
	return cmd
}

// signInput holds the input flags of sign, verify and hmac.
type signInput struct {
	src  dataSource
	hash string
}

// register adds the input and --hash flags; sign and verify also take
// the signature options.
func (s *signInput) register(cmd *cobra.Command, opts *api.KMSSignOptions) {
	inputFlags(cmd, &s.src, "input")
	f := cmd.Flags()
	f.StringVar(&s.hash, "hash", "", "hash: sha2-256, sha2-384 or sha2-512 (default: the key type's)")
	_ = cmd.RegisterFlagCompletionFunc("hash", cobra.FixedCompletions([]string{"sha2-256", "sha2-384", "sha2-512", "none"}, cobra.ShellCompDirectiveNoFileComp))
	if opts != nil {
		f.BoolVar(&opts.Prehashed, "prehashed", false, "the input is already the digest (give it with --input-encoding hex)")
		f.StringVar(&opts.SignatureAlgorithm, "signature-algorithm", "", "RSA scheme: pss (default) or pkcs1v15")
		_ = cmd.RegisterFlagCompletionFunc("signature-algorithm", cobra.FixedCompletions([]string{"pss", "pkcs1v15"}, cobra.ShellCompDirectiveNoFileComp))
	}
}

// read returns the input, base64-encoded for the API.
func (s *signInput) read(cmd *cobra.Command, args []string) (string, error) {
	in, err := s.src.read(cmd.InOrStdin(), args, "input")
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(in), nil
}

func (a *app) signCmd() *cobra.Command {
	var (
		in  signInput
		req api.KMSSignRequest
	)
	cmd := &cobra.Command{
		Use:   "sign NAME [INPUT|-]",
		Short: "Sign data with a named asymmetric key",
		Args:  nargs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			input, err := in.read(cmd, args[1:])
			if err != nil {
				return err
			}
			req.Input, req.Hash = input, in.hash
			var resp api.KMSResult
			if err := c.call(cmd.Context(), http.MethodPost, opPath("sign", args[0]), req, &resp); err != nil {
				return err
			}
			return a.out(cmd).line(resp, "%s", resp.Signature)
		}),
	}
	in.register(cmd, &req.KMSSignOptions)
	cmd.Flags().IntVar(&req.Version, "version", 0, "key version to sign with (default: the latest)")
	return cmd
}

func (a *app) verifyCmd() *cobra.Command {
	var (
		in  signInput
		req api.KMSVerifyRequest
	)
	cmd := &cobra.Command{
		Use:   "verify NAME (--signature S | --hmac H) [INPUT|-]",
		Short: "Verify a signature or an HMAC; exits 1 when it does not verify",
		Args:  nargs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			op, what := "verify", "signature"
			switch {
			case (req.Signature == "") == (req.HMAC == ""):
				return usagef("give one of --signature and --hmac")
			case req.HMAC != "":
				op, what = "verify-hmac", "HMAC"
				if req.KMSSignOptions != (api.KMSSignOptions{}) {
					return usagef("--prehashed and --signature-algorithm are for signatures")
				}
			}
			input, err := in.read(cmd, args[1:])
			if err != nil {
				return err
			}
			req.Input, req.Hash = input, in.hash
			var resp api.KMSResult
			if err := c.call(cmd.Context(), http.MethodPost, opPath(op, args[0]), req, &resp); err != nil {
				return err
			}
			valid := resp.Valid != nil && *resp.Valid
			msg := "The " + what + " is valid"
			if !valid {
				msg = "The " + what + " is NOT valid"
			}
			if err := a.out(cmd).line(resp, "%s", msg); err != nil {
				return err
			}
			if !valid {
				return &exitError{code: exitFailure}
			}
			return nil
		}),
	}
	in.register(cmd, &req.KMSSignOptions)
	cmd.Flags().StringVar(&req.Signature, "signature", "", "the signature, as sign printed it")
	cmd.Flags().StringVar(&req.HMAC, "hmac", "", "the HMAC, as hmac printed it")
	return cmd
}

func (a *app) hmacCmd() *cobra.Command {
	var (
		in  signInput
		req api.KMSSignRequest
	)
	cmd := &cobra.Command{
		Use:   "hmac NAME [INPUT|-]",
		Short: "Compute an HMAC of data with a named hmac key",
		Args:  nargs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, c *client) error {
			input, err := in.read(cmd, args[1:])
			if err != nil {
				return err
			}
			req.Input, req.Hash = input, in.hash
			var resp api.KMSResult
			if err := c.call(cmd.Context(), http.MethodPost, opPath("hmac", args[0]), req, &resp); err != nil {
				return err
			}
			return a.out(cmd).line(resp, "%s", resp.HMAC)
		}),
	}
	in.register(cmd, nil)
	cmd.Flags().IntVar(&req.Version, "version", 0, "key version to use (default: the latest)")
	return cmd
}

func (a *app) randomCmd() *cobra.Command {
	var req api.KMSRandomRequest
	cmd := &cobra.Command{
		Use:   "random",
		Short: "Get random bytes from the server, in base64 or hex",
		Args:  nargs(0, 0),
		RunE: a.withClient(func(cmd *cobra.Command, _ []string, c *client) error {
			var resp api.KMSRandomResponse
			if err := c.call(cmd.Context(), http.MethodPost, "/v1/kms/random", req, &resp); err != nil {
				return err
			}
			return a.out(cmd).line(resp, "%s", resp.Random)
		}),
	}
	cmd.Flags().IntVar(&req.Bytes, "bytes", 32, "number of bytes")
	cmd.Flags().StringVar(&req.Format, "format", "base64", "base64 or hex")
	return cmd
}
