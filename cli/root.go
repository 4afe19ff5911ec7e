// Package cli is the custos command line: the server (`custos server`) and
// the operator and application commands, which talk to a server over
// HTTPS only, through the API's own request and response types.
//
// What it promises:
//   - Settings come from flags, then CUSTOS_* environment variables, then
//     the server's config file, then defaults; each invocation builds its
//     own command tree and viper instance, so nothing is shared between
//     runs.
//   - Tokens and unseal shares are printed only by the commands that exist
//     to hand them out (init, token create, generate-root, rekey,
//     join-token create, server --dev) and are never logged. Shares not
//     given as arguments are read from the terminal without echo.
//   - Results print for people by default and as the API's JSON with
//     -o json; errors print to stderr as "Error: message (code c, request
//     r)" with exit code 1, or 2 for a mistake in the command line.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// defaultAddr is the API address of a node started with the defaults.
const defaultAddr = "https://127.0.0.1:8443"

// Execute runs the command line of the process and exits with its status.
func Execute() {
	os.Exit(Run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Run runs one invocation of the command line with the given arguments
// (without the program name) and streams, and returns its exit status: 0,
// 1 for a failure, 2 for a usage error.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(ctx, defaultDeps(), args, stdin, stdout, stderr)
}

func run(ctx context.Context, d deps, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{v: viper.New(), deps: d}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	path := root.CommandPath()
	if cmd != nil {
		path = cmd.CommandPath()
	}
	return renderError(stderr, err, path)
}

// app is the state of one invocation: its settings and its dependencies.
type app struct {
	v    *viper.Viper
	deps deps
}

// Settings keys of the client (flags --addr, --token, --ca-cert, -o).
const (
	keyAddr   = "addr"
	keyToken  = "token"
	keyCACert = "ca_cert"
	keyOutput = "output"
)

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "custos",
		Short:         "custos is an internal PKI and secrets service",
		Long:          "custos is an internal PKI and secrets service: a Raft-replicated certificate authority\nand key manager. This one binary is the server (custos server) and its command line.",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          groupArgs,
		RunE:          groupRun,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.v.GetString(keyOutput) {
			case formatTable, formatJSON:
				return nil
			}
			return usagef("-o %q: use json or table", a.v.GetString(keyOutput))
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	f := root.PersistentFlags()
	f.String("addr", defaultAddr, "server API address (env CUSTOS_ADDR)")
	f.String("token", "", "token to authenticate with (env CUSTOS_TOKEN)")
	f.String("ca-cert", "", "PEM file of the CA that signed the server's certificate (env CUSTOS_CACERT)")
	f.StringP("output", "o", formatTable, "output format: table or json (env CUSTOS_OUTPUT)")
	a.bind(f, keyAddr, "addr", "CUSTOS_ADDR")
	a.bind(f, keyToken, "token", "CUSTOS_TOKEN")
	a.bind(f, keyCACert, "ca-cert", "CUSTOS_CACERT")
	a.bind(f, keyOutput, "output", "CUSTOS_OUTPUT")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{formatTable, formatJSON}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		a.serverCmd(),
		a.statusCmd(),
		a.operatorCmd(),
		a.tokenCmd(),
		a.policyCmd(),
		a.kmsCmd(),
		a.caCmd(),
		a.secretCmd(),
	)
	return root
}

// bind makes key come from the flag, else the environment variable, else
// the config file, else the flag's default.
func (a *app) bind(fs *pflag.FlagSet, key, flag, env string) {
	if err := a.v.BindPFlag(key, fs.Lookup(flag)); err != nil {
		panic(err) // a flag of this file is missing: a programming error
	}
	if err := a.v.BindEnv(key, env); err != nil {
		panic(err)
	}
}

// client makes an API client from the settings.
func (a *app) client() (*client, error) {
	return newClient(clientConfig{
		Addr:   a.v.GetString(keyAddr),
		Token:  a.v.GetString(keyToken),
		CACert: a.v.GetString(keyCACert),
	})
}

// out returns the printer of cmd's output stream.
func (a *app) out(cmd *cobra.Command) *printer {
	return &printer{w: cmd.OutOrStdout(), format: a.v.GetString(keyOutput)}
}

// withClient adapts a command body that needs a client to cobra's RunE.
func (a *app) withClient(fn func(cmd *cobra.Command, args []string, c *client) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := a.client()
		if err != nil {
			return err
		}
		defer c.close()
		return fn(cmd, args, c)
	}
}

// group makes a command that only holds subcommands.
func group(use, short string, children ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Args: groupArgs, RunE: groupRun}
	c.AddCommand(children...)
	return c
}

// groupArgs refuses an unknown subcommand as a usage error.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return &usageError{errors.New(msg)}
}

func groupRun(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// nargs checks the number of positional arguments: between lo and hi
// (hi < 0: no upper bound). Its errors are usage errors.
func nargs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || (hi >= 0 && len(args) > hi) {
			return usagef("wrong number of arguments (%d); usage: %s", len(args), cmd.UseLine())
		}
		return nil
	}
}
