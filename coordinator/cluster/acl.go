package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// This file is the ACL side of the state: tokens, custom policies, join
// tokens and enrollments, the commands that change them, and the lookups
// the server authenticates and authorizes requests with. Secrets never
// enter the state: commands carry them from the HTTP handler (which draws
// them with acl.NewSecret) to Decide, which keeps only their hash.

// ACLState is the cluster's tokens, custom policies and join tokens. It
// is nil in a state no ACL event touched. When it is not nil, every map
// in it is too.
type ACLState struct {
	// Bootstrapped is set by the ACL bootstrap, at BootstrapIndex; it
	// works once per cluster.
	Bootstrapped   bool                     `json:"bootstrapped,omitempty"`
	BootstrapIndex uint64                   `json:"bootstrap_index,omitempty"`
	Tokens         map[string]*Token        `json:"tokens,omitempty"`      // by accessor
	Policies       map[string]*CustomPolicy `json:"policies,omitempty"`    // by name; the built-in ones are acl's
	JoinTokens     map[string]*JoinToken    `json:"join_tokens,omitempty"` // by accessor
	// Enrolled holds, per node, its last enrollment.
	Enrolled map[string]*Enrollment `json:"enrolled,omitempty"`

	// bySecret and joinBySecret map a secret's hash to the accessor of
	// its token or join token. They are derived: built by reindex, kept
	// up to date by Apply.
	bySecret     map[string]string
	joinBySecret map[string]string
}

// Token is an ACL token as the log keeps it: the hash of its secret,
// never the secret.
type Token struct {
	Accessor    string   `json:"accessor"`
	Name        string   `json:"name"`
	Policies    []string `json:"policies"`
	SecretHash  string   `json:"secret_hash"`
	Bootstrap   bool     `json:"bootstrap,omitempty"`
	CreateIndex uint64   `json:"create_index"`
}

// CustomPolicy is a policy an operator defined.
type CustomPolicy struct {
	acl.Policy
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// JoinToken lets the agent of one node enroll once, until ExpiresAt.
type JoinToken struct {
	Accessor    string    `json:"accessor"`
	Node        string    `json:"node"`
	SecretHash  string    `json:"secret_hash"`
	ExpiresAt   time.Time `json:"expires_at"`
	Used        bool      `json:"used,omitempty"`
	UsedIndex   uint64    `json:"used_index,omitempty"`
	CreateIndex uint64    `json:"create_index"`
}

// Enrollment is a node's enrollment: the certificate it was issued and
// the join token it spent.
type Enrollment struct {
	Fingerprint string `json:"fingerprint"`
	JoinToken   string `json:"join_token"`
	Index       uint64 `json:"index"`
}

func newACLState() *ACLState {
	a := &ACLState{}
	a.reindex()
	return a
}

// acl returns the ACL state, creating it on the first write.
func (s *State) acl() *ACLState {
	if s.ACL == nil {
		s.ACL = newACLState()
	}
	return s.ACL
}

// reindex fills the maps a decoded state left out and rebuilds the
// derived indexes.
func (a *ACLState) reindex() {
	if a == nil {
		return
	}
	if a.Tokens == nil {
		a.Tokens = map[string]*Token{}
	}
	if a.Policies == nil {
		a.Policies = map[string]*CustomPolicy{}
	}
	if a.JoinTokens == nil {
		a.JoinTokens = map[string]*JoinToken{}
	}
	if a.Enrolled == nil {
		a.Enrolled = map[string]*Enrollment{}
	}
	a.bySecret = make(map[string]string, len(a.Tokens))
	for acc, t := range a.Tokens {
		a.bySecret[t.SecretHash] = acc
	}
	a.joinBySecret = make(map[string]string, len(a.JoinTokens))
	for acc, j := range a.JoinTokens {
		a.joinBySecret[j.SecretHash] = acc
	}
}

// clone deep-copies what a holds; the caller reindexes the copy.
func (a *ACLState) clone() *ACLState {
	if a == nil {
		return nil
	}
	c := &ACLState{
		Bootstrapped: a.Bootstrapped, BootstrapIndex: a.BootstrapIndex,
		Tokens:     make(map[string]*Token, len(a.Tokens)),
		Policies:   make(map[string]*CustomPolicy, len(a.Policies)),
		JoinTokens: make(map[string]*JoinToken, len(a.JoinTokens)),
		Enrolled:   make(map[string]*Enrollment, len(a.Enrolled)),
	}
	for k, v := range a.Tokens {
		x := *v
		x.Policies = slices.Clone(v.Policies)
		c.Tokens[k] = &x
	}
	for k, v := range a.Policies {
		x := *v
		x.Capabilities = slices.Clone(v.Capabilities)
		c.Policies[k] = &x
	}
	for k, v := range a.JoinTokens {
		x := *v
		c.JoinTokens[k] = &x
	}
	for k, v := range a.Enrolled {
		x := *v
		c.Enrolled[k] = &x
	}
	return c
}

// TokenBySecret returns the token whose secret is secret.
func (s *State) TokenBySecret(secret string) (*Token, bool) {
	if s.ACL == nil || secret == "" {
		return nil, false
	}
	acc, ok := s.ACL.bySecret[acl.HashSecret(secret)]
	if !ok {
		return nil, false
	}
	t, ok := s.ACL.Tokens[acc]
	return t, ok
}

// JoinTokenBySecret returns the join token whose secret is secret, used
// and expired ones included.
func (s *State) JoinTokenBySecret(secret string) (*JoinToken, bool) {
	if s.ACL == nil || secret == "" {
		return nil, false
	}
	acc, ok := s.ACL.joinBySecret[acl.HashSecret(secret)]
	if !ok {
		return nil, false
	}
	j, ok := s.ACL.JoinTokens[acc]
	return j, ok
}

// Token returns the token with the accessor given.
func (s *State) Token(accessor string) (*Token, bool) {
	if s.ACL == nil {
		return nil, false
	}
	t, ok := s.ACL.Tokens[accessor]
	return t, ok
}

// JoinToken returns the join token with the accessor given, while the
// state keeps it (a new join token prunes the used and expired ones).
func (s *State) JoinToken(accessor string) (*JoinToken, bool) {
	if s.ACL == nil {
		return nil, false
	}
	j, ok := s.ACL.JoinTokens[accessor]
	return j, ok
}

// Policy returns the built-in or custom policy called name.
func (s *State) Policy(name string) (acl.Policy, bool) {
	if p, ok := acl.Builtin(name); ok {
		return p, true
	}
	if s.ACL == nil {
		return acl.Policy{}, false
	}
	if p, ok := s.ACL.Policies[name]; ok {
		return p.Policy, true
	}
	return acl.Policy{}, false
}

// TokenPolicies returns the policies t names. A name no policy has any
// more (a custom policy deleted since) grants nothing.
func (s *State) TokenPolicies(t *Token) []acl.Policy {
	out := make([]acl.Policy, 0, len(t.Policies))
	for _, name := range t.Policies {
		if p, ok := s.Policy(name); ok {
			out = append(out, p)
		}
	}
	return out
}

// Authorize checks that token t grants capability c. A nil t is a
// request without a token. The refusal is an api.ErrPermission that
// wraps an *acl.DeniedError naming the capability and how to get it.
func (s *State) Authorize(t *Token, c acl.Capability) error {
	if t != nil && acl.Allows(s.TokenPolicies(t), c) {
		return nil
	}
	d := &acl.DeniedError{Missing: c}
	if t != nil {
		d.Identity = acl.TokenIdentity(t.Name, t.Accessor)
	}
	return fmt.Errorf("%w: %w", api.ErrPermission, d)
}

// TokenView returns t as the API shows it, without its secret's hash.
func TokenView(t *Token) api.ACLToken {
	return api.ACLToken{Accessor: t.Accessor, Name: t.Name, Policies: slices.Clone(t.Policies), Bootstrap: t.Bootstrap, CreateIndex: t.CreateIndex}
}

// TokenViews lists every token as the API shows it, oldest first.
func (s *State) TokenViews() []api.ACLToken {
	out := []api.ACLToken{}
	if s.ACL == nil {
		return out
	}
	for _, t := range s.ACL.Tokens {
		out = append(out, TokenView(t))
	}
	slices.SortFunc(out, func(a, b api.ACLToken) int {
		return cmp.Or(cmp.Compare(a.CreateIndex, b.CreateIndex), strings.Compare(a.Accessor, b.Accessor))
	})
	return out
}

// PolicyViews lists the built-in policies, then the custom ones by name.
func (s *State) PolicyViews() []api.ACLPolicy {
	var out []api.ACLPolicy
	for _, name := range acl.BuiltinNames() {
		p, _ := acl.Builtin(name)
		out = append(out, api.ACLPolicy{Name: p.Name, Description: p.Description, Capabilities: acl.Strings(p.Capabilities), Builtin: true})
	}
	if s.ACL != nil {
		for _, name := range slices.Sorted(maps.Keys(s.ACL.Policies)) {
			p := s.ACL.Policies[name]
			out = append(out, api.ACLPolicy{Name: p.Name, Description: p.Description, Capabilities: acl.Strings(p.Capabilities)})
		}
	}
	return out
}

// JoinTokenView returns j as the API shows it; the caller adds the secret
// to the answer that created it.
func JoinTokenView(j *JoinToken) api.JoinToken {
	return api.JoinToken{Accessor: j.Accessor, Node: j.Node, ExpiresAt: j.ExpiresAt}
}

// policyNames lists every policy's name, for messages.
func (s *State) policyNames() string {
	names := acl.BuiltinNames()
	if s.ACL != nil {
		names = append(names, slices.Sorted(maps.Keys(s.ACL.Policies))...)
	}
	return strings.Join(names, ", ")
}

// managementTokens counts the tokens that name the management policy.
func (a *ACLState) managementTokens() int {
	n := 0
	if a != nil {
		for _, t := range a.Tokens {
			if slices.Contains(t.Policies, acl.Management) {
				n++
			}
		}
	}
	return n
}

// outstandingJoinTokens counts the join tokens neither used nor expired
// at now.
func (a *ACLState) outstandingJoinTokens(now time.Time) int {
	n := 0
	if a != nil {
		for _, j := range a.JoinTokens {
			if !j.Used && now.Before(j.ExpiresAt) {
				n++
			}
		}
	}
	return n
}

// errNotMinted says the server forgot to draw a secret or accessor: a bug
// of the caller, not of the request.
var errNotMinted = errors.New("corral: the command carries no secret or a malformed accessor; the server must set them with acl.NewSecret and acl.NewAccessor before it submits it (please report this)")

func checkMinted(secret, accessor string) error {
	if secret == "" || events.ValidateAccessor("accessor", accessor) != nil {
		return errNotMinted
	}
	return nil
}

// checkNewToken checks what a new token needs of the state: a free
// accessor and secret, and room.
func (a *ACLState) checkNewToken(p *events.ACLTokenCreated) error {
	if a == nil {
		return nil
	}
	if _, ok := a.Tokens[p.Accessor]; ok {
		return fmt.Errorf("%w: a token with accessor %s exists already; retry, and a new accessor is drawn", api.ErrConflict, p.Accessor)
	}
	if _, ok := a.bySecret[p.SecretHash]; ok {
		return fmt.Errorf("%w: a token with that secret exists already; retry, and a new secret is drawn", api.ErrConflict)
	}
	if len(a.Tokens) >= acl.MaxTokens {
		return fmt.Errorf("%w: the cluster holds %d tokens, the most it keeps; delete unused ones first (corral acl token list, corral acl token delete ACCESSOR)", api.ErrConflict, len(a.Tokens))
	}
	return nil
}

func (s *State) errBootstrapped() error {
	return fmt.Errorf("%w: the cluster's ACLs were bootstrapped already, at index %d; use an existing management token (--token or CORRAL_TOKEN)", api.ErrConflict, s.ACL.BootstrapIndex)
}

// BootstrapACL creates the cluster's first management token. It works
// once per cluster. The HTTP handler sets Secret and Accessor.
type BootstrapACL struct {
	Secret   string `json:"-"`
	Accessor string `json:"-"`
}

func (c *BootstrapACL) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if s.ACL != nil && s.ACL.Bootstrapped {
		return nil, s.errBootstrapped()
	}
	if err := checkMinted(c.Secret, c.Accessor); err != nil {
		return nil, err
	}
	p := &events.ACLTokenCreated{Accessor: c.Accessor, Name: "bootstrap", Policies: []string{acl.Management},
		SecretHash: acl.HashSecret(c.Secret), Bootstrap: true}
	if err := s.ACL.checkNewToken(p); err != nil {
		return nil, err
	}
	return []events.Event{events.New(now, actor, p)}, nil
}

// CreateToken creates a token with the policies named. The HTTP handler
// sets Secret and Accessor.
type CreateToken struct {
	api.CreateToken
	Secret   string `json:"-"`
	Accessor string `json:"-"`
}

func (c *CreateToken) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := acl.ValidateTokenName(c.Name); err != nil {
		return nil, err
	}
	if len(c.Policies) == 0 {
		return nil, &events.FieldError{Field: "policy", Value: "", Want: "a token needs at least one policy: " + s.policyNames()}
	}
	if len(c.Policies) > events.MaxTokenPolicies {
		return nil, &events.FieldError{Field: "policy", Value: fmt.Sprint(len(c.Policies)), Want: fmt.Sprintf("a token names at most %d policies", events.MaxTokenPolicies)}
	}
	var policies []string
	for _, name := range c.Policies {
		if err := acl.ValidatePolicyName(name); err != nil {
			return nil, err
		}
		if _, ok := s.Policy(name); !ok {
			return nil, &events.FieldError{Field: "policy", Value: name, Want: "no policy has that name; use " + s.policyNames() + " (corral acl policy list)"}
		}
		if !slices.Contains(policies, name) {
			policies = append(policies, name)
		}
	}
	if err := checkMinted(c.Secret, c.Accessor); err != nil {
		return nil, err
	}
	p := &events.ACLTokenCreated{Accessor: c.Accessor, Name: c.Name, Policies: policies, SecretHash: acl.HashSecret(c.Secret)}
	if err := s.ACL.checkNewToken(p); err != nil {
		return nil, err
	}
	return []events.Event{events.New(now, actor, p)}, nil
}

// DeleteToken revokes a token. The cluster's last management token
// cannot be deleted: nobody could manage tokens and policies after it.
type DeleteToken struct {
	Accessor string `json:"accessor"`
}

func (c *DeleteToken) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateAccessor("accessor", c.Accessor); err != nil {
		return nil, err
	}
	if err := s.checkDeleteToken(c.Accessor); err != nil {
		return nil, err
	}
	return []events.Event{events.New(now, actor, &events.ACLTokenDeleted{Accessor: c.Accessor})}, nil
}

func (s *State) checkDeleteToken(accessor string) error {
	var t *Token
	if s.ACL != nil {
		t = s.ACL.Tokens[accessor]
	}
	if t == nil {
		return fmt.Errorf("%w: no token has accessor %s (corral acl token list shows them)", api.ErrNotFound, accessor)
	}
	if slices.Contains(t.Policies, acl.Management) && s.ACL.managementTokens() == 1 {
		return fmt.Errorf("%w: %s is the cluster's last management token, and without one nobody can manage tokens and policies; create another first (corral acl token create --name NAME --policy management)",
			api.ErrConflict, acl.TokenIdentity(t.Name, t.Accessor))
	}
	return nil
}

// SetPolicy creates or replaces a custom policy. A built-in policy's name
// cannot be used.
type SetPolicy struct {
	acl.Policy
}

// NewSetPolicy turns a policy as the API takes it into the command; the
// request's Builtin is ignored.
func NewSetPolicy(p api.ACLPolicy) *SetPolicy {
	caps := make([]acl.Capability, len(p.Capabilities))
	for i, c := range p.Capabilities {
		caps[i] = acl.Capability(c)
	}
	return &SetPolicy{Policy: acl.Policy{Name: p.Name, Description: p.Description, Capabilities: caps}}
}

func errBuiltin(name string) error {
	return &events.FieldError{Field: "policy name", Value: name, Want: "it is a built-in policy, which cannot be changed or deleted; give yours another name"}
}

func (c *SetPolicy) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if acl.IsBuiltin(c.Name) {
		return nil, errBuiltin(c.Name)
	}
	p, err := acl.ValidatePolicy(c.Policy)
	if err != nil {
		return nil, err
	}
	var cur *CustomPolicy
	if s.ACL != nil {
		cur = s.ACL.Policies[p.Name]
	}
	if cur != nil && cur.Description == p.Description && slices.Equal(cur.Capabilities, p.Capabilities) {
		return nil, nil
	}
	if err := s.ACL.checkNewPolicy(p.Name); err != nil {
		return nil, err
	}
	ev := &events.ACLPolicySet{Name: p.Name, Description: p.Description, Capabilities: acl.Strings(p.Capabilities)}
	return []events.Event{events.New(now, actor, ev)}, nil
}

func (a *ACLState) checkNewPolicy(name string) error {
	if a == nil {
		return nil
	}
	if _, ok := a.Policies[name]; !ok && len(a.Policies) >= acl.MaxPolicies {
		return fmt.Errorf("%w: the cluster holds %d custom policies, the most it keeps; delete unused ones first (corral acl policy delete NAME)", api.ErrConflict, len(a.Policies))
	}
	return nil
}

// DeletePolicy removes a custom policy. Tokens that name it keep the
// name, which then grants nothing.
type DeletePolicy struct {
	Name string `json:"name"`
}

func (c *DeletePolicy) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := acl.ValidatePolicyName(c.Name); err != nil {
		return nil, err
	}
	if err := s.checkDeletePolicy(c.Name); err != nil {
		return nil, err
	}
	return []events.Event{events.New(now, actor, &events.ACLPolicyDeleted{Name: c.Name})}, nil
}

func (s *State) checkDeletePolicy(name string) error {
	if acl.IsBuiltin(name) {
		return errBuiltin(name)
	}
	if s.ACL == nil || s.ACL.Policies[name] == nil {
		return api.NotFound("policy", name)
	}
	return nil
}

// CreateJoinToken creates a one-time token with which the agent of Node
// may enroll, for TTL (0: acl.DefaultJoinTTL). The HTTP handler sets
// Secret and Accessor.
type CreateJoinToken struct {
	Node     string        `json:"node"`
	TTL      time.Duration `json:"ttl,omitempty"`
	Secret   string        `json:"-"`
	Accessor string        `json:"-"`
}

// NewCreateJoinToken turns a request of the API into the command, with
// the secret and accessor the handler drew. A TTL beyond any allowed one
// stays beyond it instead of overflowing into range.
func NewCreateJoinToken(req api.CreateJoinToken, secret, accessor string) *CreateJoinToken {
	var ttl time.Duration
	switch s := int64(req.TTLSeconds); {
	case s < 0:
		ttl = -time.Second
	case s > int64(acl.MaxJoinTTL/time.Second):
		ttl = acl.MaxJoinTTL + time.Second
	default:
		ttl = time.Duration(s) * time.Second
	}
	return &CreateJoinToken{Node: req.Node, TTL: ttl, Secret: secret, Accessor: accessor}
}

func (c *CreateJoinToken) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("node id", c.Node); err != nil {
		return nil, err
	}
	ttl, err := acl.JoinTTL(c.TTL)
	if err != nil {
		return nil, err
	}
	if err := checkMinted(c.Secret, c.Accessor); err != nil {
		return nil, err
	}
	p := &events.NodeJoinTokenCreated{Accessor: c.Accessor, Node: c.Node, SecretHash: acl.HashSecret(c.Secret), ExpiresAt: now.Add(ttl).UTC()}
	if err := s.ACL.checkNewJoinToken(p, now); err != nil {
		return nil, err
	}
	return []events.Event{subject(events.New(now, actor, p), "", c.Node)}, nil
}

func (a *ACLState) checkNewJoinToken(p *events.NodeJoinTokenCreated, now time.Time) error {
	if !now.Before(p.ExpiresAt) {
		return &events.FieldError{Field: "expires_at", Value: p.ExpiresAt.Format(time.RFC3339), Want: "a join token must expire after it is created"}
	}
	if a == nil {
		return nil
	}
	if _, ok := a.JoinTokens[p.Accessor]; ok {
		return fmt.Errorf("%w: a join token with accessor %s exists already; retry, and a new accessor is drawn", api.ErrConflict, p.Accessor)
	}
	if _, ok := a.joinBySecret[p.SecretHash]; ok {
		return fmt.Errorf("%w: a join token with that secret exists already; retry, and a new secret is drawn", api.ErrConflict)
	}
	if n := a.outstandingJoinTokens(now); n >= acl.MaxJoinTokens {
		return fmt.Errorf("%w: %d join tokens are unused and unexpired, the most the cluster keeps; let them expire or enroll their nodes first", api.ErrConflict, n)
	}
	return nil
}

// Enroll spends a join token: the agent of Node presents the join token's
// Secret, and the server signed a certificate with Fingerprint for it.
type Enroll struct {
	Node        string `json:"node"`
	Secret      string `json:"-"`
	Fingerprint string `json:"fingerprint"`
}

func errBadJoinToken(node string) error {
	return fmt.Errorf("%w: invalid, used or expired join token for node %q; ask an operator for a new one (corral acl join-token create --node %s)", api.ErrPermission, node, node)
}

func (c *Enroll) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("node id", c.Node); err != nil {
		return nil, err
	}
	j, ok := s.JoinTokenBySecret(c.Secret)
	if !ok || !j.usableBy(c.Node, now) {
		return nil, errBadJoinToken(c.Node)
	}
	p := &events.NodeEnrolled{Node: c.Node, JoinToken: j.Accessor, Fingerprint: c.Fingerprint}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return []events.Event{subject(events.New(now, actor, p), "", c.Node)}, nil
}

// usableBy reports whether node may spend j at now.
func (j *JoinToken) usableBy(node string, now time.Time) bool {
	return !j.Used && j.Node == node && now.Before(j.ExpiresAt)
}

// applyACL applies the ACL events, re-checking what a concurrent proposal
// could have changed since Decide: a second bootstrap, a deleted token,
// the last management token, a join token spent twice. Time is the
// event's, so every server decides the same.
func (s *State) applyACL(idx uint64, e *events.Event) error {
	switch p := e.Payload.(type) {
	case *events.ACLTokenCreated:
		if err := p.Validate(); err != nil {
			return err
		}
		if p.Bootstrap && s.ACL != nil && s.ACL.Bootstrapped {
			return s.errBootstrapped()
		}
		if err := s.ACL.checkNewToken(p); err != nil {
			return err
		}
		a := s.acl()
		a.Tokens[p.Accessor] = &Token{Accessor: p.Accessor, Name: p.Name, Policies: slices.Clone(p.Policies),
			SecretHash: p.SecretHash, Bootstrap: p.Bootstrap, CreateIndex: idx}
		a.bySecret[p.SecretHash] = p.Accessor
		if p.Bootstrap {
			a.Bootstrapped, a.BootstrapIndex = true, idx
		}
		return nil
	case *events.ACLTokenDeleted:
		if err := p.Validate(); err != nil {
			return err
		}
		if err := s.checkDeleteToken(p.Accessor); err != nil {
			return err
		}
		delete(s.ACL.bySecret, s.ACL.Tokens[p.Accessor].SecretHash)
		delete(s.ACL.Tokens, p.Accessor)
		return nil
	case *events.ACLPolicySet:
		if err := p.Validate(); err != nil {
			return err
		}
		if acl.IsBuiltin(p.Name) {
			return errBuiltin(p.Name)
		}
		if err := s.ACL.checkNewPolicy(p.Name); err != nil {
			return err
		}
		a := s.acl()
		caps := make([]acl.Capability, len(p.Capabilities))
		for i, c := range p.Capabilities {
			caps[i] = acl.Capability(c)
		}
		created := idx
		if cur := a.Policies[p.Name]; cur != nil {
			created = cur.CreateIndex
		}
		a.Policies[p.Name] = &CustomPolicy{Policy: acl.Policy{Name: p.Name, Description: p.Description, Capabilities: caps},
			CreateIndex: created, ModifyIndex: idx}
		return nil
	case *events.ACLPolicyDeleted:
		if err := p.Validate(); err != nil {
			return err
		}
		if err := s.checkDeletePolicy(p.Name); err != nil {
			return err
		}
		delete(s.ACL.Policies, p.Name)
		return nil
	case *events.NodeJoinTokenCreated:
		if err := p.Validate(); err != nil {
			return err
		}
		if e.Node != p.Node {
			return fmt.Errorf("%w: join token for node %q carries subject %q", events.ErrInvalid, p.Node, e.Node)
		}
		if err := s.ACL.checkNewJoinToken(p, e.Time); err != nil {
			return err
		}
		a := s.acl()
		a.pruneJoinTokens(e.Time)
		a.JoinTokens[p.Accessor] = &JoinToken{Accessor: p.Accessor, Node: p.Node, SecretHash: p.SecretHash, ExpiresAt: p.ExpiresAt, CreateIndex: idx}
		a.joinBySecret[p.SecretHash] = p.Accessor
		return nil
	case *events.NodeEnrolled:
		if err := p.Validate(); err != nil {
			return err
		}
		if e.Node != p.Node {
			return fmt.Errorf("%w: enrollment of node %q carries subject %q", events.ErrInvalid, p.Node, e.Node)
		}
		var j *JoinToken
		if s.ACL != nil {
			j = s.ACL.JoinTokens[p.JoinToken]
		}
		if j == nil || !j.usableBy(p.Node, e.Time) {
			return errBadJoinToken(p.Node)
		}
		j.Used, j.UsedIndex = true, idx
		s.ACL.Enrolled[p.Node] = &Enrollment{Fingerprint: p.Fingerprint, JoinToken: p.JoinToken, Index: idx}
		return nil
	}
	return fmt.Errorf("%w: no state transition for %s", events.ErrUnknownType, e.Type)
}

// pruneJoinTokens forgets the join tokens used or expired at now: they
// can never be spent, and the log keeps their history.
func (a *ACLState) pruneJoinTokens(now time.Time) {
	for acc, j := range a.JoinTokens {
		if j.Used || !now.Before(j.ExpiresAt) {
			delete(a.joinBySecret, j.SecretHash)
			delete(a.JoinTokens, acc)
		}
	}
}
