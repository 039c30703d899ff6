package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

func (a *app) aclCommand() *cobra.Command {
	cmd := groupCommand("acl", "Tokens, policies and node join tokens")
	cmd.Long = `Every request to a server carries a token (--token or CORRAL_TOKEN) whose
policies say what it may do. "corral acl bootstrap" makes the cluster's first
token, with the management policy; use it to create the others.

Built-in policies: management (everything), operator (read everything; run
nodes, the scheduler and the servers), write (read all but ACLs; change guests),
read (read all but ACLs). Custom policies name capabilities: ` + strings.Join(acl.Strings(acl.All()), ", ") + `.`
	token := groupCommand("token", "Create, list and revoke tokens")
	token.AddCommand(a.aclTokenCreateCommand(), a.aclTokenListCommand(), a.aclTokenSelfCommand(), a.aclTokenDeleteCommand())
	policy := groupCommand("policy", "List, define and delete policies")
	policy.AddCommand(a.aclPolicyListCommand(), a.aclPolicyApplyCommand(), a.aclPolicyDeleteCommand())
	join := groupCommand("join-token", "One-time tokens with which a node's agent enrolls")
	join.AddCommand(a.aclJoinTokenCreateCommand())
	cmd.AddCommand(a.aclBootstrapCommand(), token, policy, join)
	return a.clientFlags(cmd)
}

// exactlyOne is the Args check of commands that take one argument, what.
func exactlyOne(what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("give exactly one %s (got %d arguments)", what, len(args))
		}
		return nil
	}
}

func (a *app) aclBootstrapCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "bootstrap",
		Short: "Create the cluster's first management token (once per cluster)",
		Long: `Create the cluster's first token, with the management policy, and print its
secret. It works once per cluster, and the secret is shown only now: keep it
somewhere safe, then create tokens for people and programs with it.`,
		Example: "  corral acl bootstrap\n  export CORRAL_TOKEN=$(corral acl bootstrap | awk '$1 == \"secret\" {print $NF}')",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.ACLBootstrap(cmd.Context())
			if err != nil {
				return err
			}
			return a.printTokenSecret(t)
		},
	}
}

// printTokenSecret prints a token just created, with its secret, which
// no later answer shows.
func (a *app) printTokenSecret(t *api.ACLTokenSecret) error {
	if a.json() {
		return writeJSON(a.stdout, t)
	}
	return writeTokenSecret(a.stdout, t)
}

func writeTokenSecret(w io.Writer, t *api.ACLTokenSecret) error {
	if err := printParams(w, [][2]string{
		{"accessor", t.Accessor},
		{"name", clean(t.Name)},
		{"policies", clean(strings.Join(t.Policies, ","))},
		{"secret", t.Secret},
	}); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "\nThe secret is shown only now: store it safely, and send it with --token or CORRAL_TOKEN.")
	return err
}

func (a *app) aclTokenCreateCommand() *cobra.Command {
	var (
		name     string
		policies []string
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --policy POLICY [--policy POLICY]...",
		Short: "Create a token with the policies named, and print its secret",
		Example: "  corral acl token create --name ci --policy write\n" +
			"  corral acl token create --name alice --policy operator --policy deploy",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := acl.ValidateTokenName(name); err != nil {
				return err
			}
			for _, p := range policies {
				if err := acl.ValidatePolicyName(p); err != nil {
					return err
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.CreateToken(cmd.Context(), api.CreateToken{Name: name, Policies: policies})
			if err != nil {
				return err
			}
			return a.printTokenSecret(t)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "what or whom the token is for, as events record it (a-z, A-Z, 0-9, '.', '_', '-')")
	cmd.Flags().StringArrayVar(&policies, "policy", nil, "a policy the token has: "+strings.Join(acl.BuiltinNames(), ", ")+" or a custom one; repeat for more")
	cmd.MarkFlagRequired("name")
	cmd.MarkFlagRequired("policy")
	return cmd
}

func (a *app) aclTokenListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the tokens (never their secrets)",
		Example: "  corral acl token list\n  corral acl token list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			tokens, err := c.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, tokens)
			}
			return writeTokens(a.stdout, tokens)
		},
	}
}

func writeTokens(w io.Writer, tokens []api.ACLToken) error {
	t := newTable(w, "ACCESSOR", "NAME", "POLICIES", "BOOTSTRAP", "CREATED")
	for _, x := range tokens {
		t.row(x.Accessor, x.Name, strings.Join(x.Policies, ","), yesNo(x.Bootstrap), formatUint(x.CreateIndex))
	}
	return t.flush()
}

func (a *app) aclTokenSelfCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "self",
		Short:   "Show the token this command sends (--token or CORRAL_TOKEN)",
		Example: "  corral acl token self",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			t, err := c.TokenSelf(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, t)
			}
			return writeTokens(a.stdout, []api.ACLToken{*t})
		},
	}
}

func (a *app) aclTokenDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete ACCESSOR",
		Aliases: []string{"rm"},
		Short:   "Revoke a token: its secret stops working at once",
		Long: `Revoke the token with the accessor given (corral acl token list shows them).
The cluster's last management token cannot be revoked.`,
		Example: "  corral acl token delete 3f2a9c0e5b7d41f6a8c2e9d0b1a4f7c3",
		Args:    exactlyOne("token ACCESSOR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := events.ValidateAccessor("accessor", args[0]); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.DeleteToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printWrite(res, "token "+args[0]+" deleted")
		},
	}
}

func (a *app) aclPolicyListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the built-in and custom policies with what they grant",
		Example: "  corral acl policy list\n  corral acl policy list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			policies, err := c.ListPolicies(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, policies)
			}
			return writePolicies(a.stdout, policies)
		},
	}
}

func writePolicies(w io.Writer, policies []api.ACLPolicy) error {
	t := newTable(w, "NAME", "BUILTIN", "CAPABILITIES", "DESCRIPTION")
	for _, p := range policies {
		t.row(p.Name, yesNo(p.Builtin), strings.Join(p.Capabilities, ","), p.Description)
	}
	return t.flush()
}

func (a *app) aclPolicyApplyCommand() *cobra.Command {
	var (
		caps        []string
		description string
	)
	cmd := &cobra.Command{
		Use:   "apply NAME --capability CAPABILITY [--capability CAPABILITY]... [--description TEXT]",
		Short: "Create or replace a custom policy",
		Long: `Create a custom policy, or replace the one with that name: it grants exactly
the capabilities given. Tokens that name it get the new capabilities at once.
Capabilities: ` + strings.Join(acl.Strings(acl.All()), ", ") + `.`,
		Example: "  corral acl policy apply deploy --capability guest:read --capability guest:write --description 'CI deploys guests'",
		Args:    exactlyOne("policy NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := policyFromFlags(args[0], description, caps)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.SetPolicy(cmd.Context(), p)
			if err != nil {
				return err
			}
			return a.printWrite(res, "policy "+p.Name+" applied")
		},
	}
	cmd.Flags().StringArrayVar(&caps, "capability", nil, "a capability the policy grants; repeat for more")
	cmd.Flags().StringVar(&description, "description", "", "what the policy is for")
	cmd.MarkFlagRequired("capability")
	return cmd
}

// policyFromFlags checks a policy as the server will and returns it as the
// API takes it.
func policyFromFlags(name, description string, caps []string) (api.ACLPolicy, error) {
	if acl.IsBuiltin(name) {
		return api.ACLPolicy{}, &events.FieldError{Field: "policy name", Value: name, Want: "it is a built-in policy, which cannot be changed; give yours another name"}
	}
	raw := make([]acl.Capability, len(caps))
	for i, c := range caps {
		raw[i] = acl.Capability(c)
	}
	p, err := acl.ValidatePolicy(acl.Policy{Name: name, Description: description, Capabilities: raw})
	if err != nil {
		return api.ACLPolicy{}, err
	}
	return api.ACLPolicy{Name: p.Name, Description: p.Description, Capabilities: acl.Strings(p.Capabilities)}, nil
}

func (a *app) aclPolicyDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a custom policy (tokens that name it lose what it granted)",
		Example: "  corral acl policy delete deploy",
		Args:    exactlyOne("policy NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := acl.ValidatePolicyName(args[0]); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.DeletePolicy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printWrite(res, "policy "+args[0]+" deleted")
		},
	}
}

func (a *app) aclJoinTokenCreateCommand() *cobra.Command {
	var (
		node string
		ttl  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --node ID [--ttl 1h]",
		Short: "Create a one-time token with which one node's agent enrolls",
		Long: `Create a join token for one node: its agent presents it once to get the
node's certificate, before --ttl passes (1m to 168h). The secret is shown only
now.`,
		Example: "  corral acl join-token create --node n1\n  corral acl join-token create --node n2 --ttl 24h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := joinTokenRequest(node, ttl)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			j, err := c.CreateJoinToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, j)
			}
			return writeJoinToken(a.stdout, j)
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node ID the token may enroll, and no other")
	cmd.Flags().DurationVar(&ttl, "ttl", acl.DefaultJoinTTL, "how long the token may be used, 1m to 168h")
	cmd.MarkFlagRequired("node")
	return cmd
}

// joinTokenRequest checks a join token's node and lifetime as the server
// will; the API takes whole seconds.
func joinTokenRequest(node string, ttl time.Duration) (api.CreateJoinToken, error) {
	if err := events.ValidateID("node id", node); err != nil {
		return api.CreateJoinToken{}, err
	}
	if ttl%time.Second != 0 {
		return api.CreateJoinToken{}, &events.FieldError{Field: "ttl", Value: ttl.String(), Want: "give whole seconds, 1m to 168h"}
	}
	if ttl == 0 {
		return api.CreateJoinToken{}, &events.FieldError{Field: "ttl", Value: ttl.String(), Want: "use 1m to 168h; leave --ttl out for the default, 1h"}
	}
	if _, err := acl.JoinTTL(ttl); err != nil {
		return api.CreateJoinToken{}, err
	}
	return api.CreateJoinToken{Node: node, TTLSeconds: int(ttl / time.Second)}, nil
}

func writeJoinToken(w io.Writer, j *api.JoinToken) error {
	if err := printParams(w, [][2]string{
		{"accessor", j.Accessor},
		{"node", j.Node},
		{"expires", formatTime(j.ExpiresAt)},
		{"secret", j.Secret},
	}); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nThe secret is shown only now. Give it to the agent of node %s, which can enroll with it once, until %s.\n",
		j.Node, formatTime(j.ExpiresAt))
	return err
}
