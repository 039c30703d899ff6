package api

import "time"

// ACLToken is a token as the API lists it: never its secret, nor the
// secret's hash.
type ACLToken struct {
	Accessor    string   `json:"accessor"`
	Name        string   `json:"name"`
	Policies    []string `json:"policies"`
	Bootstrap   bool     `json:"bootstrap,omitempty"`
	CreateIndex uint64   `json:"create_index"`
}

// ACLTokenSecret is the answer to creating a token (and to the ACL
// bootstrap): the token with its secret, which no later answer shows.
type ACLTokenSecret struct {
	ACLToken
	Secret string `json:"secret"`
}

// ACLPolicy is a policy: the capabilities it grants. Builtin marks the
// four policies every cluster has, which cannot be changed or deleted; it
// is ignored in a request.
type ACLPolicy struct {
	Name         string   `json:"name"`
	Description  string   `json:"description,omitempty"`
	Capabilities []string `json:"capabilities"`
	Builtin      bool     `json:"builtin,omitempty"`
}

// CreateToken is the body of POST /v1/acl/tokens.
type CreateToken struct {
	Name     string   `json:"name"`
	Policies []string `json:"policies"`
}

// JoinToken is a one-time token with which the agent of one node may
// enroll until ExpiresAt. Secret is set only in the answer to creating it.
type JoinToken struct {
	Accessor  string    `json:"accessor"`
	Node      string    `json:"node"`
	ExpiresAt time.Time `json:"expires_at"`
	Secret    string    `json:"secret,omitempty"`
}

// CreateJoinToken is the body of POST /v1/acl/join-tokens. TTLSeconds 0
// means the default (an hour); otherwise a minute to a week.
type CreateJoinToken struct {
	Node       string `json:"node"`
	TTLSeconds int    `json:"ttl_seconds,omitempty"`
}

// EnrollRequest is the body of POST /v1/nodes/{id}/enroll: a node's join
// token and a certificate signing request (PEM) for the node's key.
type EnrollRequest struct {
	JoinToken string `json:"join_token"`
	CSR       string `json:"csr"`
}

// EnrollReply is the answer to an enrollment: the node's certificate and
// the cluster CA's, both PEM.
type EnrollReply struct {
	Cert string `json:"cert"`
	CA   string `json:"ca"`
}
