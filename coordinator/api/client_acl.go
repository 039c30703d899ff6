package api

import (
	"context"

	"github.com/corral-dev/corral/events"
)

// This file is the client's side of ACLs: tokens, policies, join tokens
// and node enrollment. Every call that creates a secret answers with it
// once; no later call shows it again.

// ACLBootstrap creates the cluster's first management token. It works
// once per cluster.
func (c *Client) ACLBootstrap(ctx context.Context) (*ACLTokenSecret, error) {
	var out ACLTokenSecret
	return &out, c.do(ctx, "POST", "/v1/acl/bootstrap", NewRequestID(), nil, &out)
}

// CreateToken creates a token with the policies named.
func (c *Client) CreateToken(ctx context.Context, t CreateToken) (*ACLTokenSecret, error) {
	var out ACLTokenSecret
	return &out, c.do(ctx, "POST", "/v1/acl/tokens", NewRequestID(), t, &out)
}

// ListTokens lists every token, without secrets.
func (c *Client) ListTokens(ctx context.Context) ([]ACLToken, error) {
	var out []ACLToken
	return out, c.do(ctx, "GET", "/v1/acl/tokens", "", nil, &out)
}

// TokenSelf returns the token the client sends.
func (c *Client) TokenSelf(ctx context.Context) (*ACLToken, error) {
	var out ACLToken
	return &out, c.do(ctx, "GET", "/v1/acl/tokens/self", "", nil, &out)
}

// DeleteToken revokes the token with the accessor given.
func (c *Client) DeleteToken(ctx context.Context, accessor string) (WriteResult, error) {
	if err := events.ValidateAccessor("accessor", accessor); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "DELETE", "/v1/acl/tokens/"+accessor, nil)
}

// ListPolicies lists the built-in and the custom policies.
func (c *Client) ListPolicies(ctx context.Context) ([]ACLPolicy, error) {
	var out []ACLPolicy
	return out, c.do(ctx, "GET", "/v1/acl/policies", "", nil, &out)
}

// SetPolicy creates or replaces a custom policy.
func (c *Client) SetPolicy(ctx context.Context, p ACLPolicy) (WriteResult, error) {
	if err := events.ValidateID("policy name", p.Name); err != nil {
		return WriteResult{}, err
	}
	p.Builtin = false
	return c.writeCmd(ctx, "POST", "/v1/acl/policies", p)
}

// DeletePolicy removes a custom policy.
func (c *Client) DeletePolicy(ctx context.Context, name string) (WriteResult, error) {
	if err := events.ValidateID("policy name", name); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "DELETE", "/v1/acl/policies/"+name, nil)
}

// CreateJoinToken creates a one-time token with which the agent of node
// j.Node may enroll.
func (c *Client) CreateJoinToken(ctx context.Context, j CreateJoinToken) (*JoinToken, error) {
	if err := events.ValidateID("node id", j.Node); err != nil {
		return nil, err
	}
	var out JoinToken
	return &out, c.do(ctx, "POST", "/v1/acl/join-tokens", NewRequestID(), j, &out)
}

// Enroll spends a join token for node: the server signs the CSR and
// answers with the node's certificate and the cluster CA.
func (c *Client) Enroll(ctx context.Context, node string, req EnrollRequest) (*EnrollReply, error) {
	if err := events.ValidateID("node id", node); err != nil {
		return nil, err
	}
	var out EnrollReply
	return &out, c.do(ctx, "POST", "/v1/nodes/"+node+"/enroll", NewRequestID(), req, &out)
}
