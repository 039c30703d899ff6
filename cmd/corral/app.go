package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/pki"

	"github.com/spf13/cobra"
)

// defaultAddr is the API address client commands use when neither --addr
// nor CORRAL_ADDR says otherwise: where corral dev listens.
const defaultAddr = "127.0.0.1:4646"

// app holds what one invocation of the binary shares between commands:
// where output goes, the environment and the client flags. Nothing here is
// global: tests run many apps in one process.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	addr   string    // --addr of the client commands
	creds  pki.Files // --ca-cert, --client-cert, --client-key
	token  string    // --token
	output string    // -o of the client commands
	stale  bool      // --stale of the read commands

	// started is set when a command's RunE begins. An error before that
	// came from parsing the command line and earns the usage text.
	started bool
	// process is set when the command runs as this binary's process
	// (main), not in a test: a daemon may then tune the process's runtime.
	process bool
}

// usageError is a command-line mistake found by our own checks: printed
// with the command's usage, like cobra's flag errors.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// run executes one command line and returns the process exit code: 0 on
// success, 1 for usage and API errors. Ctrl-C and SIGTERM cancel the
// command's context; a second signal gets the default behaviour (exit).
func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return runApp(&app{stdout: stdout, stderr: stderr, getenv: getenv, output: "table"}, args)
}

// runProcess is run for main: the command owns the process.
func runProcess(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return runApp(&app{stdout: stdout, stderr: stderr, getenv: getenv, output: "table", process: true}, args)
}

func runApp(a *app, args []string) (code int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	defer func() {
		// A bug must still end as one line on stderr, not a stack dump.
		if p := recover(); p != nil {
			fmt.Fprintf(a.stderr, "corral: internal error: %v (please report this)\n", p)
			code = 1
		}
	}()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	a.report(cmd, err)
	return 1
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "corral",
		Short: "corral: an event-sourced cluster manager for VMs and containers",
		Long: `corral runs guests (processes, LXC-style containers, QEMU VMs) on a cluster of
Linux hosts, keeping every lifecycle and tuning change in one replicated event log.

Start a development cluster with "corral dev", then drive it with the client
commands (they talk to 127.0.0.1:4646 unless --addr or CORRAL_ADDR says
otherwise, with corral dev's certificates and token unless --ca-cert,
--client-cert, --client-key and --token, or CORRAL_CACERT, CORRAL_CLIENT_CERT,
CORRAL_CLIENT_KEY and CORRAL_TOKEN, name others).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.output != "table" && a.output != "json" {
				return usagef("output format %q is not known: use -o table or -o json", a.output)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(
		a.devCommand(),
		a.serverCommand(),
		a.guestCommand(),
		a.nodeCommand(),
		a.eventsCommand(),
		a.stateCommand(),
		a.clusterCommand(),
		a.schedinfoCommand(),
		a.memtuneCommand(),
		a.setmemCommand(),
		a.setmaxmemCommand(),
		a.blkiotuneCommand(),
		a.domiftuneCommand(),
		a.devicetuneCommand(),
		a.partitionCommand(),
		a.numatuneCommand(), a.emulatorpinCommand(), a.vcpupinCommand(),
		a.operatorCommand(),
		a.agentCommand(),
		a.tlsCommand(),
		a.aclCommand(),
	)
	markStarted(root, &a.started)
	return root
}

// markStarted wraps every command's RunE so that a.started tells parse
// errors (cobra's, before RunE) from errors of the command itself.
func markStarted(c *cobra.Command, started *bool) {
	if f := c.RunE; f != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			*started = true
			return f(cmd, args)
		}
	}
	for _, sub := range c.Commands() {
		markStarted(sub, started)
	}
}

// groupCommand returns a command that only holds subcommands. Unlike
// cobra's default it refuses an unknown subcommand instead of printing
// help and exiting 0.
func groupCommand(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					msg += "; did you mean " + strings.Join(s, " or ") + "?"
				}
				return &usageError{errors.New(msg)}
			}
			return cmd.Help()
		},
	}
}

// report prints err as one "corral: ..." line on stderr, followed by the
// usage of cmd when the command line itself was wrong.
func (a *app) report(cmd *cobra.Command, err error) {
	msg := message(err)
	fmt.Fprintf(a.stderr, "corral: %s\n", msg)
	var ue *usageError
	if (!a.started || errors.As(err, &ue)) && cmd != nil && !strings.Contains(msg, "for usage") {
		fmt.Fprintf(a.stderr, "\n%s", cmd.UsageString())
	}
}

// message turns err into the text after "corral: ".
func message(err error) string {
	msg := err.Error()
	for strings.HasPrefix(msg, "corral: ") {
		msg = strings.TrimPrefix(msg, "corral: ")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// The client's wrapping names the request twice; say which server.
		where := ue.URL
		if u, perr := url.Parse(ue.URL); perr == nil {
			where = u.Scheme + "://" + u.Host
		}
		msg = fmt.Sprintf("cannot reach %s: %v", where, ue.Err)
	}
	switch {
	case strings.Contains(msg, "HTTP request to an HTTPS server"):
		msg = "the server speaks only HTTPS: give the cluster's CA with --ca-cert (CORRAL_CACERT), a client certificate with --client-cert and --client-key, and an https:// or plain host:port --addr"
	case strings.Contains(msg, "certificate signed by unknown authority"), strings.Contains(msg, "certificate is not trusted"):
		msg += " (the server's certificate is not from the CA given with --ca-cert / CORRAL_CACERT: is it the right cluster?)"
	case strings.Contains(msg, "tls: certificate required"), strings.Contains(msg, "bad certificate"):
		msg += " (the server wants a client certificate of its cluster: --client-cert and --client-key, or CORRAL_CLIENT_CERT and CORRAL_CLIENT_KEY)"
	case errors.Is(err, syscall.ECONNREFUSED):
		msg += " (is corral dev or corral server running there? give its address with --addr or CORRAL_ADDR)"
	case errors.Is(err, context.Canceled):
		msg = "interrupted"
	}
	return msg
}

// clientFlags adds the flags every client command shares to cmd and its
// subcommands.
func (a *app) clientFlags(cmd *cobra.Command) *cobra.Command {
	def := a.getenv("CORRAL_ADDR")
	if def == "" {
		def = defaultAddr
	}
	f := cmd.PersistentFlags()
	f.StringVar(&a.addr, "addr", def, "API address of a server (env CORRAL_ADDR); a comma-separated list fails over")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	f.BoolVar(&a.stale, "stale", false, "reads only: answer from the first server reached, at once, even if it lags the leader (by default a read reflects every write acknowledged before it)")
	f.StringVar(&a.creds.CA, "ca-cert", a.getenv("CORRAL_CACERT"), "the cluster CA's certificate, to verify servers (env CORRAL_CACERT; default: corral dev's, when it exists)")
	f.StringVar(&a.creds.Cert, "client-cert", a.getenv("CORRAL_CLIENT_CERT"), "this client's certificate (env CORRAL_CLIENT_CERT)")
	f.StringVar(&a.creds.Key, "client-key", a.getenv("CORRAL_CLIENT_KEY"), "this client's certificate's key (env CORRAL_CLIENT_KEY)")
	f.StringVar(&a.token, "token", "", "ACL token secret sent with every request (env CORRAL_TOKEN; default: corral dev's management token, when it exists)")
	return cmd
}

// credentials returns the TLS files and the token a client command uses:
// the flags, then the environment, then corral dev's own, from its default
// data directory, when they exist there.
func (a *app) credentials() (pki.Files, string) {
	files, tok := a.creds, a.token
	if tok == "" {
		tok = a.getenv("CORRAL_TOKEN")
	}
	dir, err := defaultDevDataDir(a.getenv)
	if err != nil {
		return files, tok
	}
	usingDev := false
	if !files.Enabled() {
		dev := devClientFiles(dir)
		if _, err := os.Stat(dev.Cert); err == nil {
			files, usingDev = dev, true
		}
	}
	// corral dev's token goes only where its certificates go: to corral
	// dev, never to a cluster named by other files.
	if tok == "" && usingDev {
		if b, err := os.ReadFile(devTokenFile(dir)); err == nil {
			tok = strings.TrimSpace(string(b))
		}
	}
	return files, tok
}

// readRetry bounds how long a read keeps trying the --addr servers. A
// server that cannot serve a consistent read says so at once (no leader)
// or within its own bound (catching up), so waiting out an election as
// writes do (the client's default) would only delay "connection refused".
const readRetry = 3 * time.Second

// readClient returns an API client for commands that only read.
func (a *app) readClient() (*api.Client, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	c.Retry = readRetry
	c.Stale = a.stale
	return c, nil
}

// client returns an API client for --addr with the client's certificate
// and token. Writes keep retrying, with the same request ID, for the
// client's default time, which outlasts a leader election.
func (a *app) client() (*api.Client, error) {
	files, tok := a.credentials()
	if !files.Enabled() {
		// corral servers speak only HTTPS, and a token must never cross
		// the network in clear.
		return nil, errors.New("no cluster CA to verify the server with: give --ca-cert, --client-cert and --client-key (CORRAL_CACERT, CORRAL_CLIENT_CERT, CORRAL_CLIENT_KEY), or run corral dev on its default data dir, whose credentials are found by themselves")
	}
	l, err := files.Load()
	if err != nil {
		return nil, err
	}
	if strings.Contains(a.addr, "http://") {
		return nil, usagef("--addr %s is plain HTTP: corral servers speak only HTTPS; give host:port or https://host:port", a.addr)
	}
	c, err := api.NewClientTLS(a.addr, l.DialConfig())
	if err != nil {
		return nil, err
	}
	c.Actor = "cli:" + a.userName()
	c.Token = tok
	c.FailFast = true // no server listening on any --addr: say so at once
	return c, nil
}

func (a *app) userName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := a.getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

func (a *app) json() bool { return a.output == "json" }
