package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/coordinator/pki"
)

// This file decides who is calling and whether they may. A caller proves
// itself with its TLS certificate (a server, a node's agent, a client) and,
// for people and programs, an ACL token whose policies grant capabilities.
// Every route names what it needs in one table (Routes), so the whole API
// can be checked against it. A follower that forwards a write to the
// leader vouches for the caller with its own server certificate; the
// leader checks again, with the same rules.

// Headers a forwarding server sets; the leader believes them only from a
// peer holding a server certificate.
const (
	headerOnBehalf = "X-Corral-On-Behalf"
)

// accessKind is the rule a route is guarded by.
type accessKind int

const (
	// needCap: a token whose policies grant the capability (servers may
	// always).
	needCap accessKind = iota
	// needServer: a server certificate (raft membership, internal reads).
	needServer
	// needNodeSelf: the certificate of the node the route names; a token
	// with the capability, when one is given, may too.
	needNodeSelf
	// needEnroll: nothing but TLS; the body carries a one-time join token.
	needEnroll
	// needCert: a client certificate (ACL bootstrap, and token
	// self-lookup, which checks the token itself).
	needCert
	// needPeer: any certificate of this cluster, no token (metrics, which
	// carry no secrets, as Nomad's).
	needPeer
	// needToken: a token with the capability, with or without a
	// certificate: the web page's read-only routes (http_ui.go), which a
	// browser calls over server-verified TLS with no client certificate.
	needToken
	// needNothing: anyone; the web page's static files, which hold no data.
	needNothing
)

// access says who may call one route.
type access struct {
	kind accessKind
	cap  acl.Capability // for needCap, and the token alternative of needNodeSelf
}

func (a access) String() string {
	switch a.kind {
	case needServer:
		return "server certificate"
	case needNodeSelf:
		if a.cap != "" {
			return "the node's own certificate, or a token with " + string(a.cap)
		}
		return "the node's own certificate"
	case needEnroll:
		return "a one-time join token"
	case needCert:
		return "a client certificate"
	case needPeer:
		return "any certificate of the cluster"
	case needToken:
		return "a token with " + string(a.cap) + ", no certificate needed"
	case needNothing:
		return "anyone (static files, no data)"
	}
	return "a token with " + string(a.cap)
}

// Route is one route of the API and who may call it, for tests and docs.
type Route struct {
	Method, Path string // Path with {placeholders}
	Access       string
	// Capability is the capability a token needs, "" for routes no token
	// opens (server-only, node-only, enrollment).
	Capability acl.Capability
	// Kind is server, node, enroll, cert, peer, token, browser (a token
	// without a certificate) or public.
	Kind string
}

type route struct {
	pattern string
	access  access
	handler http.HandlerFunc
}

// caller is who sent a request, as far as it proved.
type caller struct {
	// id is the identity a certificate proved (directly, or through the
	// server that forwarded the request); zero when none.
	id pki.Identity
	// token is the ACL token the request carried, nil when none or unknown.
	token    *cluster.Token
	policies []acl.Policy
	// via is the server that forwarded the request, "" when direct.
	via string
	// insecure: the server authenticates nobody (Config.Insecure).
	insecure bool
	label    string // the actor header, believed only when insecure
	remote   string // the peer's IP, to tell anonymous callers apart
}

// actor is how events record the caller.
func (c *caller) actor() string {
	switch {
	case c.insecure:
		if c.label != "" {
			return c.label
		}
		return "api"
	case c.token != nil:
		acc := c.token.Accessor
		if len(acc) > 8 {
			acc = acc[:8]
		}
		return "token:" + c.token.Name + "/" + acc
	case !c.id.IsZero():
		return c.id.String()
	}
	return "anonymous"
}

// who names the caller in refusals and logs.
func (c *caller) who() string {
	parts := []string{}
	if !c.id.IsZero() {
		parts = append(parts, c.id.String())
	}
	if c.token != nil {
		parts = append(parts, c.actor())
	}
	if c.via != "" {
		parts = append(parts, "via server:"+c.via)
	}
	if len(parts) == 0 {
		return "an anonymous caller"
	}
	return strings.Join(parts, " ")
}

func (c *caller) can(cp acl.Capability) bool {
	if c.insecure || c.id.Role == pki.RoleServer {
		return true
	}
	return c.token != nil && acl.Allows(c.policies, cp)
}

type callerKey struct{}

// callerOf returns the caller authorize put in the request's context.
func callerOf(r *http.Request) *caller {
	if c, ok := r.Context().Value(callerKey{}).(*caller); ok {
		return c
	}
	return &caller{}
}

// tokenOf returns the token secret a request carries.
func tokenOf(r *http.Request) string {
	if t := r.Header.Get(api.HeaderToken); t != "" {
		return t
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// authenticate works out who sent r. tokenOnly says the route takes a
// token without a certificate (needToken).
func (s *Server) authenticate(r *http.Request, tokenOnly bool) (*caller, error) {
	if s.cfg.Insecure {
		return &caller{insecure: true, label: r.Header.Get(api.HeaderActor)}, nil
	}
	c := &caller{}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		c.remote = host
	}
	if id, ok := pki.PeerIdentity(r.TLS); ok {
		c.id = id
	}
	if c.id.Role == pki.RoleServer {
		if ob := r.Header.Get(headerOnBehalf); ob != "" {
			c.via = c.id.Name
			c.id = pki.Identity{}
			if ob != "anonymous" {
				id, err := pki.ParseIdentity(ob)
				if err != nil {
					return nil, fmt.Errorf("%w: server %s forwarded a request on behalf of %q: %v", api.ErrUnauthenticated, c.via, ob, err)
				}
				c.id = id
			}
		}
	} else {
		for _, h := range []string{headerOnBehalf, headerForwarded} {
			if r.Header.Get(h) != "" {
				return c, fmt.Errorf("%w: only a server may forward requests for others; %s sent %s", api.ErrPermission, c.who(), h)
			}
		}
	}
	if secret := tokenOf(r); secret != "" && (!c.id.IsZero() || c.via != "" || tokenOnly) {
		// A caller without a certificate gets no token lookup at all,
		// but on the page's routes: elsewhere authorize refuses it, and
		// it learns nothing of the token.
		t, pols, err := s.lookupToken(r.Context(), secret)
		if err != nil {
			return c, err
		}
		c.token, c.policies = t, pols
	}
	return c, nil
}

// lookupToken finds a token by its secret. A token created a moment ago on
// the leader may not have reached this server yet: on a miss it waits,
// briefly, until it holds what the leader has committed and looks again.
// A server that cannot tell (no leader, still replaying its log) says so
// as unavailable, never that the token is unknown.
func (s *Server) lookupToken(ctx context.Context, secret string) (*cluster.Token, []acl.Policy, error) {
	find := func() (t *cluster.Token, pols []acl.Policy, ok bool) {
		s.fsm.read(func(st *cluster.State) {
			var x *cluster.Token
			if x, ok = st.TokenBySecret(secret); ok {
				c := *x
				t, pols = &c, st.TokenPolicies(x)
			}
		})
		return t, pols, ok
	}
	unknown := fmt.Errorf("%w: the ACL token is not known to this cluster (deleted, or from another cluster): check --token or CORRAL_TOKEN", api.ErrUnauthenticated)
	if t, pols, ok := find(); ok {
		return t, pols, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	idx, err := s.ReadIndex(ctx)
	if errors.Is(err, api.ErrNotLeader) {
		idx, err = s.leaderReadIndex(ctx, nil)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: server %s cannot check the ACL token yet: %v", api.ErrUnavailable, s.cfg.ID, err)
	}
	if s.AppliedIndex() < idx {
		if err := s.WaitIndex(ctx, idx); err != nil {
			return nil, nil, fmt.Errorf("%w: server %s is catching up to index %d and cannot check the ACL token yet; retry", api.ErrUnavailable, s.cfg.ID, idx)
		}
	}
	// Looked up again even when nothing was waited for: the token may
	// have been applied since the first look.
	if t, pols, ok := find(); ok {
		return t, pols, nil
	}
	return nil, nil, unknown
}

// authorize checks c against a route's rule; node is the node the route
// names, for needNodeSelf.
func (s *Server) authorize(c *caller, a access, node string) error {
	if c.insecure || c.id.Role == pki.RoleServer {
		return nil
	}
	if a.kind == needEnroll || a.kind == needNothing {
		return nil
	}
	if a.kind == needToken {
		if c.token == nil {
			return &deniedError{missing: a.cap, err: fmt.Errorf("%w: this needs an ACL token with %s: enter one on the page (corral acl token create --policy read), or send it as %s", api.ErrUnauthenticated, a.cap, api.HeaderToken)}
		}
		if c.can(a.cap) {
			return nil
		}
		return &deniedError{missing: a.cap, err: fmt.Errorf("%w: %s lacks %s: use a token whose policies grant it (corral acl token create --policy read)", api.ErrPermission, c.who(), a.cap)}
	}
	if c.id.IsZero() && c.via == "" {
		// Mutual TLS: a token alone opens nothing.
		return fmt.Errorf("%w: present a certificate of this cluster: a client's (--client-cert and --client-key, or CORRAL_CLIENT_CERT and CORRAL_CLIENT_KEY; corral tls cert create --client NAME), as well as a token", api.ErrUnauthenticated)
	}
	switch a.kind {
	case needPeer:
		return nil
	case needServer:
		return fmt.Errorf("%w: this route is for servers of the cluster only; %s is not one", api.ErrPermission, c.who())
	case needCert:
		if c.id.IsZero() {
			return fmt.Errorf("%w: present a client certificate of this cluster (--client-cert and --client-key, CORRAL_CLIENT_CERT and CORRAL_CLIENT_KEY)", api.ErrUnauthenticated)
		}
		if c.id.Role != pki.RoleClient {
			return fmt.Errorf("%w: this route is for clients (operators' certificates); %s is not one", api.ErrPermission, c.who())
		}
		return nil
	case needNodeSelf:
		if c.id.Role == pki.RoleNode {
			if node == nodeInBody || node != "" && c.id.Name == node {
				return nil
			}
			return fmt.Errorf("%w: %s may speak only for its own node, not for node %q", api.ErrPermission, c.who(), node)
		}
		if a.cap != "" && c.can(a.cap) {
			return nil
		}
		if node == nodeInBody {
			node = "named in the request"
		}
		if a.cap == "" {
			return fmt.Errorf("%w: only node %q's own agent may call this; %s is not it", api.ErrPermission, node, c.who())
		}
	}
	if c.can(a.cap) {
		return nil
	}
	if c.token == nil && c.id.Role != pki.RoleNode {
		return &deniedError{missing: a.cap, err: fmt.Errorf("%w: this needs a token with %s: send one with --token or CORRAL_TOKEN (corral acl token create --policy ...)", api.ErrUnauthenticated, a.cap)}
	}
	return &deniedError{missing: a.cap, err: fmt.Errorf("%w: %s lacks %s: use a token whose policies grant it (corral acl token create --policy ...)", api.ErrPermission, c.who(), a.cap)}
}

// deniedError is a refusal naming the missing capability.
type deniedError struct {
	missing acl.Capability
	err     error
}

func (e *deniedError) Error() string { return e.err.Error() }
func (e *deniedError) Unwrap() error { return e.err }

// guard is the authentication, authorization and limits around one route.
type guard struct {
	s     *Server
	route string
	acc   access
	// nodeOf names the node a needNodeSelf route is about, from the request.
	nodeOf func(*http.Request) string
}

func (g *guard) wrap(h http.HandlerFunc) http.HandlerFunc {
	s := g.s
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(r, g.acc.kind == needToken)
		if err != nil && c != nil && c.via == "" && c.id.Role != pki.RoleServer {
			// Failed attempts (unknown tokens) count against the
			// certificate or address they came from.
			if lerr := s.limiter.allow(c.key()); lerr != nil {
				err = lerr
			}
		}
		if err == nil {
			node := ""
			if g.nodeOf != nil {
				node = g.nodeOf(r)
			} else {
				node = r.PathValue("id")
			}
			err = s.authorize(c, g.acc, node)
		}
		if err != nil {
			s.refused(w, r, g.route, c, err)
			return
		}
		if !c.insecure && c.via == "" && c.id.Role != pki.RoleServer {
			if err := s.limiter.allow(c.key()); err != nil {
				s.refused(w, r, g.route, c, err)
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
}

// key is what the rate limits count the caller by.
func (c *caller) key() string {
	if c.token != nil {
		return "token:" + c.token.Accessor
	}
	if !c.id.IsZero() {
		return c.id.String()
	}
	return "anonymous@" + c.remote
}

// refused answers a refusal and records it: logged with who asked, and
// counted.
func (s *Server) refused(w http.ResponseWriter, r *http.Request, route string, c *caller, err error) {
	ae := s.recordRefusal(r, route, c, err)
	var de *deniedError
	if errors.As(err, &de) {
		ae.Missing = string(de.missing)
	}
	var le *limitError
	if errors.As(err, &le) {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(le.retry.Seconds()+0.5))))
	}
	writeJSON(w, api.HTTPStatus(ae.Code), map[string]any{"error": ae})
}

// recordRefusal logs and counts a refusal, and returns it as it crosses
// the API.
func (s *Server) recordRefusal(r *http.Request, route string, c *caller, err error) *api.APIError {
	who := "an anonymous caller"
	if c != nil {
		who = c.who()
	}
	s.denials.Add(1)
	path := r.URL.Path
	if len(path) > 256 {
		path = path[:256] + "…"
	}
	key := "anonymous@" + r.RemoteAddr
	if c != nil {
		key = c.key()
	}
	// One line per caller a second at most: refusals are counted in full
	// on /metrics, and a flood of them must not flood the log.
	if n := s.limiter.logRefusal(key); n > 0 {
		s.log.Warn("refused request", "route", route, "path", path, "caller", who, "remote", r.RemoteAddr, "err", err, "refused_since_last_line", n)
	}
	ae := api.ErrorOf(err)
	s.metrics.denied.WithLabelValues(route, ae.Code).Inc()
	return ae
}

// Denials counts the requests this server refused since it started.
func (s *Server) Denials() uint64 { return s.denials.Load() }

// limitError is a refusal for going over a limit.
type limitError struct {
	retry time.Duration
	err   error
}

func (e *limitError) Error() string { return e.err.Error() }
func (e *limitError) Unwrap() error { return e.err }

// limiter holds a token bucket and a count of open event streams per
// caller.
type limiter struct {
	limits  Limits
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	streams map[string]int
	swept   time.Time
	// refusals bounds how often one caller's refusals are logged.
	refusals map[string]*refusalLog
}

func newLimiter(l Limits) *limiter {
	return &limiter{limits: l, buckets: map[string]*rate.Limiter{}, streams: map[string]int{}, swept: time.Now()}
}

func (l *limiter) allow(key string) error {
	if l.limits.Rate <= 0 {
		return nil // no rate limit
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.swept) > time.Minute && len(l.buckets) > 1024 {
		// Forget callers whose bucket is full again: they lose nothing.
		for k, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.limits.Burst) {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = rate.NewLimiter(rate.Limit(l.limits.Rate), l.limits.Burst)
		l.buckets[key] = b
	}
	if b.AllowN(now, 1) {
		return nil
	}
	retry := time.Duration(float64(time.Second) / l.limits.Rate)
	return &limitError{retry: retry, err: fmt.Errorf("%w: %s sent more than %v requests a second (burst %d): slow down and retry; the servers' --rate-limit and --rate-burst set the limit", api.ErrRateLimited, key, l.limits.Rate, l.limits.Burst)}
}

// logRefusal says whether a refusal of key may be logged now: it returns
// how many refusals of key (this one included) went unlogged since its
// last line, or 0 while a line was logged less than a second ago.
func (l *limiter) logRefusal(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refusals == nil {
		l.refusals = map[string]*refusalLog{}
	}
	now := time.Now()
	rl := l.refusals[key]
	if rl == nil {
		if len(l.refusals) > 4096 {
			for k, v := range l.refusals {
				if now.Sub(v.last) > time.Minute {
					delete(l.refusals, k)
				}
			}
		}
		rl = &refusalLog{}
		l.refusals[key] = rl
	}
	rl.n++
	if now.Sub(rl.last) < time.Second {
		return 0
	}
	n := rl.n
	rl.last, rl.n = now, 0
	return n
}

type refusalLog struct {
	last time.Time
	n    int
}

// openStream counts an event stream of key; done ends it.
func (l *limiter) openStream(key string) (done func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[key] >= l.limits.MaxStreams {
		return nil, &limitError{retry: time.Second, err: fmt.Errorf("%w: %s already holds %d event streams open on this server, its limit: close one, or raise the servers' --max-streams", api.ErrRateLimited, key, l.limits.MaxStreams)}
	}
	l.streams[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			if l.streams[key]--; l.streams[key] <= 0 {
				delete(l.streams, key)
			}
			l.mu.Unlock()
		})
	}, nil
}

// token is the rule of a route any token with cp opens.
func token(cp acl.Capability) access { return access{kind: needCap, cap: cp} }

// handle registers a route with its rule.
func (s *Server) handle(mux *http.ServeMux, pattern string, a access, h http.HandlerFunc) {
	g := &guard{s: s, route: pattern, acc: a}
	method, path, _ := strings.Cut(pattern, " ")
	if a.kind == needNodeSelf && !strings.Contains(path, "{id}") {
		// The node is named in the body: the handler checks it once parsed.
		g.nodeOf = func(*http.Request) string { return nodeInBody }
	}
	kind := map[accessKind]string{needCap: "token", needServer: "server", needNodeSelf: "node", needEnroll: "enroll", needCert: "cert", needPeer: "peer", needToken: "browser", needNothing: "public"}[a.kind]
	s.routeList = append(s.routeList, Route{Method: method, Path: path, Access: a.String(), Capability: a.cap, Kind: kind})
	// The body limit wraps the server's own ResponseWriter: past it,
	// http.MaxBytesReader tells the server to close the connection, which
	// it cannot through the metrics' wrapper.
	limit := s.limits.MaxBodyBytes
	inner := s.metrics.instrument(pattern, g.wrap(h))
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		inner(w, r)
	})
}

// nodeInBody stands for the node a request names in its body, which the
// guard cannot read: authorize lets a node's certificate through and the
// handler checks the name with authorizeNode.
const nodeInBody = "\x00body"

// authorizeNode is the body-named half of a needNodeSelf rule.
func (s *Server) authorizeNode(r *http.Request, cp acl.Capability, node string) error {
	return s.authorize(callerOf(r), access{kind: needNodeSelf, cap: cp}, node)
}

// Routes lists every route of the API with who may call it.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routeList...) }
