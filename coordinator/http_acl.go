package coordinator

import (
	"fmt"
	"net/http"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// This file is the API of ACL tokens, policies and join tokens, and the
// enrollment of a node's agent with a join token. Secrets are made here,
// on the server that submits the command; the log keeps only their hash.

// enrolledCertDays is how long a certificate signed at enrollment lasts.
const enrolledCertDays = 365

func (s *Server) aclRoutes(mux *http.ServeMux) {
	s.handle(mux, "POST /v1/acl/bootstrap", access{kind: needCert}, func(w http.ResponseWriter, r *http.Request) {
		secret, accessor := acl.NewSecret(), acl.NewAccessor()
		s.writeWith(w, r, func(body []byte) (cluster.Command, error) {
			return &cluster.BootstrapACL{Secret: secret, Accessor: accessor}, decodeOptional(body, &struct{}{})
		}, func(res api.WriteResult) any {
			return tokenAnswer{ACLTokenSecret: api.ACLTokenSecret{ACLToken: api.ACLToken{Accessor: accessor, Name: "bootstrap", Policies: []string{"management"}, Bootstrap: true, CreateIndex: res.Index}, Secret: secret}, Index: res.Index}
		})
	})
	s.handle(mux, "POST /v1/acl/tokens", token(acl.ACLWrite), func(w http.ResponseWriter, r *http.Request) {
		secret, accessor := acl.NewSecret(), acl.NewAccessor()
		var req api.CreateToken
		s.writeWith(w, r, func(body []byte) (cluster.Command, error) {
			if err := events.DecodeStrict(body, &req); err != nil {
				return nil, err
			}
			var grants []acl.Capability
			s.fsm.read(func(st *cluster.State) {
				for _, name := range req.Policies {
					if p, ok := st.Policy(name); ok {
						grants = append(grants, p.Capabilities...)
					}
				}
			})
			if err := noEscalation(callerOf(r), "a token whose policies grant", grants); err != nil {
				return nil, err
			}
			return &cluster.CreateToken{CreateToken: req, Secret: secret, Accessor: accessor}, nil
		}, func(res api.WriteResult) any {
			return tokenAnswer{ACLTokenSecret: api.ACLTokenSecret{ACLToken: api.ACLToken{Accessor: accessor, Name: req.Name, Policies: req.Policies, CreateIndex: res.Index}, Secret: secret}, Index: res.Index}
		})
	})
	s.handle(mux, "GET /v1/acl/tokens", token(acl.ACLRead), func(w http.ResponseWriter, r *http.Request) {
		if !s.readBarrier(w, r) {
			return
		}
		var out []api.ACLToken
		s.fsm.read(func(st *cluster.State) { out = st.TokenViews() })
		writeJSON(w, http.StatusOK, out)
	})
	s.handle(mux, "GET /v1/acl/tokens/self", access{kind: needCert}, func(w http.ResponseWriter, r *http.Request) {
		c := callerOf(r)
		if c.token == nil {
			writeError(w, fmt.Errorf("%w: the request carries no ACL token: send one with --token or CORRAL_TOKEN", api.ErrUnauthenticated))
			return
		}
		writeJSON(w, http.StatusOK, cluster.TokenView(c.token))
	})
	s.handle(mux, "DELETE /v1/acl/tokens/{accessor}", token(acl.ACLWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			return &cluster.DeleteToken{Accessor: r.PathValue("accessor")}, decodeOptional(body, &struct{}{})
		})
	})
	s.handle(mux, "GET /v1/acl/policies", token(acl.ACLRead), func(w http.ResponseWriter, r *http.Request) {
		if !s.readBarrier(w, r) {
			return
		}
		var out []api.ACLPolicy
		s.fsm.read(func(st *cluster.State) { out = st.PolicyViews() })
		writeJSON(w, http.StatusOK, out)
	})
	s.handle(mux, "POST /v1/acl/policies", token(acl.ACLWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var p api.ACLPolicy
			if err := events.DecodeStrict(body, &p); err != nil {
				return nil, err
			}
			sp := cluster.NewSetPolicy(p)
			if err := noEscalation(callerOf(r), "a policy that grants", sp.Capabilities); err != nil {
				return nil, err
			}
			return sp, nil
		})
	})
	s.handle(mux, "DELETE /v1/acl/policies/{name}", token(acl.ACLWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			return &cluster.DeletePolicy{Name: r.PathValue("name")}, decodeOptional(body, &struct{}{})
		})
	})
	s.handle(mux, "POST /v1/acl/join-tokens", token(acl.ACLWrite), func(w http.ResponseWriter, r *http.Request) {
		secret, accessor := acl.NewSecret(), acl.NewAccessor()
		var req api.CreateJoinToken
		s.writeWith(w, r, func(body []byte) (cluster.Command, error) {
			if err := events.DecodeStrict(body, &req); err != nil {
				return nil, err
			}
			return cluster.NewCreateJoinToken(req, secret, accessor), nil
		}, func(res api.WriteResult) any {
			jt := api.JoinToken{Accessor: accessor, Node: req.Node}
			s.fsm.read(func(st *cluster.State) {
				if t, ok := st.JoinToken(accessor); ok {
					jt = cluster.JoinTokenView(t)
				}
			})
			jt.Secret = secret
			return struct {
				api.JoinToken
				Index uint64 `json:"index"`
			}{jt, res.Index}
		})
	})
	s.handle(mux, "POST /v1/nodes/{id}/enroll", access{kind: needEnroll}, s.enroll)
}

// noEscalation refuses to let a caller hand out a capability it does not
// hold itself: acl:write alone must not make a management token.
func noEscalation(c *caller, what string, grants []acl.Capability) error {
	for _, cp := range grants {
		if !c.can(cp) {
			return &deniedError{missing: cp, err: fmt.Errorf("%w: %s cannot make %s %s, which it lacks itself: ask a holder of a management token", api.ErrPermission, c.who(), what, cp)}
		}
	}
	return nil
}

// tokenAnswer is a created token with the index that holds it, so that a
// forwarding server waits for it before answering.
type tokenAnswer struct {
	api.ACLTokenSecret
	Index uint64 `json:"index"`
}

// enroll signs a node certificate for an agent that proves a one-time join
// token for that node. The certificate's identity comes from the path and
// the token, never from the request; the token is spent in the log before
// the certificate is handed out.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("id")
	if err := events.ValidateID("node id", node); err != nil {
		writeError(w, err)
		return
	}
	if s.cfg.CA == nil && s.IsLeader() {
		writeError(w, fmt.Errorf("%w: this cluster's servers hold no CA key, so they cannot sign node certificates: make the node's certificate with corral tls cert create --node %s, or start the servers with --tls-ca-key", api.ErrUnavailable, node))
		return
	}
	var req api.EnrollRequest
	var cert []byte
	s.writeWith(w, r, func(body []byte) (cluster.Command, error) {
		if err := events.DecodeStrict(body, &req); err != nil {
			return nil, err
		}
		if req.JoinToken == "" {
			return nil, &events.FieldError{Field: "join_token", Value: "", Want: "the one-time join token an operator made with corral acl join-token create --node " + node}
		}
		if s.cfg.CA == nil {
			// A follower without the key forwards: the leader signs.
			return &cluster.Enroll{Node: node, Secret: req.JoinToken}, nil
		}
		var err error
		if cert, err = s.cfg.CA.SignCSR([]byte(req.CSR), pki.Identity{Role: pki.RoleNode, Name: node}, enrolledCertDays); err != nil {
			return nil, fmt.Errorf("%w: csr: %v", events.ErrInvalid, err)
		}
		fp := ""
		if l, err := pki.ParseCertPEM(cert); err == nil {
			fp = pki.Fingerprint(l)
		}
		return &cluster.Enroll{Node: node, Secret: req.JoinToken, Fingerprint: fp}, nil
	}, func(res api.WriteResult) any {
		return struct {
			api.EnrollReply
			Index uint64 `json:"index"`
		}{api.EnrollReply{Cert: string(cert), CA: string(s.cfg.CA.PEM)}, res.Index}
	})
}
