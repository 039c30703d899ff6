package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/coordinator/pki"
)

// secureCluster is a cluster of real servers with mutual TLS and ACLs on,
// and the credentials of everyone who talks to it.
type secureCluster struct {
	*testCluster
	t     *testing.T
	dir   string // the CA's directory
	mgmt  string // the bootstrap management token
	token map[string]string
}

func newSecureCluster(t *testing.T, n int) *secureCluster {
	t.Helper()
	return newSecureClusterWith(t, n, nil)
}

func newSecureClusterWith(t *testing.T, n int, tweak func(*Config)) *secureCluster {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	sc := &secureCluster{t: t, dir: dir, token: map[string]string{}}
	caCert, caKey := pki.CAFileNames(dir)
	sc.testCluster = newTestCluster(t, n, func(i int, cfg *Config, _ []*Server) {
		l, err := sc.files(pki.Identity{Role: pki.RoleServer, Name: cfg.ID}).Load()
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS, cfg.Insecure = l, false
		if cfg.CA, err = pki.LoadCA(caCert, caKey); err != nil {
			t.Fatal(err)
		}
		if tweak != nil {
			tweak(cfg)
		}
	})
	return sc
}

// files makes and returns id's certificate.
func (sc *secureCluster) files(id pki.Identity) pki.Files {
	sc.t.Helper()
	m, err := pki.EnsureDir(sc.dir, id)
	if err != nil {
		sc.t.Fatal(err)
	}
	return m[id]
}

// httpClient speaks TLS as id; a zero id presents no certificate.
func (sc *secureCluster) httpClient(id pki.Identity) *http.Client {
	sc.t.Helper()
	f := sc.files(pki.Identity{Role: pki.RoleClient, Name: "probe"})
	if !id.IsZero() {
		f = sc.files(id)
	}
	l, err := f.Load()
	if err != nil {
		sc.t.Fatal(err)
	}
	cfg := l.DialConfig()
	if id.IsZero() {
		cfg.Certificates = nil
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// answer is what one request got.
type answer struct {
	status int
	code   string
	body   string
}

func (a answer) refused() bool {
	return a.status == http.StatusUnauthorized || a.status == http.StatusForbidden && (a.code == api.CodePermission || a.code == api.CodeUnauthenticated)
}

func call(t *testing.T, hc *http.Client, method, url, token string, body any) answer {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(api.HeaderToken, token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{status: -1, body: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error *api.APIError `json:"error"`
	}
	json.Unmarshal(b, &e)
	a := answer{status: resp.StatusCode, body: string(b)}
	if e.Error != nil {
		a.code = e.Error.Code
	}
	return a
}

func (sc *secureCluster) url(s *Server, path string) string { return "https://" + s.HTTPAddr() + path }

// setup bootstraps the ACLs, makes a token per built-in policy, registers
// nodes n1 and n2 with their own certificates and places a guest.
func (sc *secureCluster) setup() {
	t := sc.t
	_, leader := sc.leader()
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	a := call(t, alice, "POST", sc.url(leader, "/v1/acl/bootstrap"), "", nil)
	if a.status != 200 {
		t.Fatalf("bootstrap: %d %s", a.status, a.body)
	}
	var tok api.ACLTokenSecret
	json.Unmarshal([]byte(a.body), &tok)
	sc.mgmt = tok.Secret
	sc.token["management"] = tok.Secret
	for _, p := range []string{"operator", "write", "read"} {
		a := call(t, alice, "POST", sc.url(leader, "/v1/acl/tokens"), sc.mgmt, api.CreateToken{Name: p + "-token", Policies: []string{p}})
		if a.status != 200 {
			t.Fatalf("create %s token: %d %s", p, a.status, a.body)
		}
		var ts api.ACLTokenSecret
		json.Unmarshal([]byte(a.body), &ts)
		sc.token[p] = ts.Secret
	}
	for _, n := range []string{"n1", "n2"} {
		hc := sc.httpClient(pki.Identity{Role: pki.RoleNode, Name: n})
		var a answer
		// A loaded host can cost the leader its lease mid-commit (503,
		// "retry"): registration is idempotent, so try the new leader.
		WaitFor(t, 20*time.Second, "registering "+n, func() bool {
			_, leader := sc.leader()
			if leader == nil {
				return false // an election is under way
			}
			a = call(t, hc, "POST", sc.url(leader, "/v1/nodes"), "", nodeBody(n))
			return a.status != http.StatusServiceUnavailable
		})
		if a.status != 200 {
			t.Fatalf("register %s: %d %s", n, a.status, a.body)
		}
	}
	a = call(t, alice, "POST", sc.url(leader, "/v1/guests"), sc.token["write"], map[string]any{"name": "g1", "driver": "process", "memory": "64MiB", "command": []string{"sleep", "1000"}})
	if a.status != 200 {
		t.Fatalf("create g1: %d %s", a.status, a.body)
	}
}

func nodeBody(id string) map[string]any {
	return map[string]any{"id": id, "address": "127.0.0.1", "cpus": 4, "memory_bytes": 8 << 30, "drivers": map[string]string{"process": "builtin"}}
}

// minimalPolicy is the smallest built-in policy that grants cp.
func minimalPolicy(cp acl.Capability) string {
	for _, name := range []string{"read", "write", "operator", "management"} {
		p, _ := acl.Builtin(name)
		if acl.Allows([]acl.Policy{p}, cp) {
			return name
		}
	}
	return ""
}

// TestEveryRouteRefusesTheWrongCaller calls every route of the API, on the
// leader and on a follower, with no credential, with the wrong one and
// with the right one: the first two are refused (and counted), the third
// gets past authorization.
func TestEveryRouteRefusesTheWrongCaller(t *testing.T) {
	sc := newSecureCluster(t, 3)
	sc.setup()
	li, leader := sc.leader()
	follower := sc.servers[(li+1)%3]
	anon := sc.httpClient(pki.Identity{})
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	n1 := sc.httpClient(pki.Identity{Role: pki.RoleNode, Name: "n1"})
	n2 := sc.httpClient(pki.Identity{Role: pki.RoleNode, Name: "n2"})
	srv := sc.httpClient(pki.Identity{Role: pki.RoleServer, Name: "s9"})

	type who struct {
		name  string
		hc    *http.Client
		token string
	}
	routes := leader.Routes()
	if len(routes) < 30 {
		t.Fatalf("only %d routes listed", len(routes))
	}
	for _, target := range []*Server{leader, follower} {
		role := "leader"
		if target != leader {
			role = "follower"
		}
		for _, r := range routes {
			path := strings.NewReplacer("{name}", "g1", "{id}", "n1", "{accessor}", "nope").Replace(r.Path)
			if strings.HasPrefix(r.Path, "/v1/acl/policies/") {
				path = "/v1/acl/policies/nope"
			}
			// A body that gets past authorization and then fails to
			// decode, so no right-role call changes the cluster, except a
			// node registering itself.
			var body any = "{not json"
			if r.Method == "GET" {
				body = nil
			}
			if r.Method == "POST" && r.Path == "/v1/nodes" {
				body = nodeBody("n1")
			}
			var none, wrong, right who
			none = who{"no credential", anon, ""}
			switch r.Kind {
			case "token":
				p := minimalPolicy(r.Capability)
				right = who{p + " token", alice, sc.token[p]}
				if p == "read" {
					wrong = who{"node n2 certificate", n2, ""}
				} else {
					wrong = who{"read token", alice, sc.token["read"]}
				}
			case "server":
				right = who{"server certificate", srv, ""}
				wrong = who{"management token", alice, sc.mgmt}
			case "node":
				right = who{"node n1 certificate", n1, ""}
				wrong = who{"node n2 certificate", n2, ""}
			case "cert":
				right = who{"client certificate with a token", alice, sc.mgmt}
				wrong = who{"node n1 certificate", n1, ""}
			case "peer":
				right = who{"node n1 certificate", n1, ""}
				wrong = none // there is no wrong certificate of the cluster
			case "browser":
				// The page's routes: a token alone, no certificate.
				right = who{"read token without a certificate", anon, sc.token[minimalPolicy(r.Capability)]}
				wrong = who{"unknown token without a certificate", anon, "00000000-0000-0000-0000-000000000000"}
			case "public":
				continue // TestUIPage: the static files are anyone's
			case "enroll":
				continue // TestEnrollWithJoinToken
			default:
				t.Fatalf("route %s %s: unknown kind %q", r.Method, r.Path, r.Kind)
			}
			for _, c := range []struct {
				w      who
				refuse bool
			}{{none, true}, {wrong, true}, {right, false}} {
				before := target.Denials() + leader.Denials()
				a := call(t, c.w.hc, r.Method, sc.url(target, path), c.w.token, body)
				if a.status == -1 {
					t.Errorf("%s %s %s as %s: %s", role, r.Method, path, c.w.name, a.body)
					continue
				}
				if a.refused() != c.refuse {
					t.Errorf("%s %s %s (%s) as %s: got %d %s, want refused=%v: %s", role, r.Method, path, r.Access, c.w.name, a.status, a.code, c.refuse, a.body)
				}
				if c.refuse && target.Denials()+leader.Denials() == before {
					t.Errorf("%s %s %s as %s: refusal not counted", role, r.Method, path, c.w.name)
				}
			}
		}
	}
}

// TestNodeSpeaksOnlyForItself: node n1's certificate cannot report about
// node n2, nor about n2's guest under its own name, through the leader or
// a follower; nor register n2.
func TestNodeSpeaksOnlyForItself(t *testing.T) {
	sc := newSecureCluster(t, 3)
	sc.setup()
	li, leader := sc.leader()
	follower := sc.servers[(li+1)%3]
	var g *cluster.Guest
	var gen uint64
	WaitFor(t, 5*time.Second, "g1 placed", func() bool {
		leader.fsm.read(func(st *cluster.State) {
			if x, ok := st.Guests["g1"]; ok && x.Node != "" {
				c := *x
				g = &c
				gen = x.Generation
			}
		})
		return g != nil
	})
	owner, other := g.Node, "n1"
	if owner == "n1" {
		other = "n2"
	}
	hc := sc.httpClient(pki.Identity{Role: pki.RoleNode, Name: other})
	started := func(node string) map[string]any {
		return map[string]any{"items": []map[string]any{{"type": "guest.started", "guest": "g1",
			"payload": map[string]any{"node": node, "pid": 4242, "generation": gen}}}}
	}
	for _, target := range []*Server{leader, follower} {
		// As the owner, on the owner's path.
		if a := call(t, hc, "POST", sc.url(target, "/v1/nodes/"+owner+"/report"), "", started(owner)); !a.refused() {
			t.Errorf("%s: node %s reported on node %s's path: %d %s", target.ID(), other, owner, a.status, a.body)
		}
		// Under its own name, about a guest placed elsewhere.
		if a := call(t, hc, "POST", sc.url(target, "/v1/nodes/"+other+"/report"), "", started(other)); !a.refused() {
			t.Errorf("%s: node %s reported guest g1 of node %s as started on itself: %s", target.ID(), other, owner, a.body)
		}
		// Registering the other node.
		if a := call(t, hc, "POST", sc.url(target, "/v1/nodes"), "", nodeBody(owner)); !a.refused() {
			t.Errorf("%s: node %s registered node %s: %d %s", target.ID(), other, owner, a.status, a.body)
		}
		// Reading the other node's desired state.
		if a := call(t, hc, "GET", sc.url(target, "/v1/nodes/"+owner+"/desired"), "", nil); !a.refused() {
			t.Errorf("%s: node %s read node %s's desired state: %d", target.ID(), other, owner, a.status)
		}
	}
	leader.fsm.read(func(st *cluster.State) {
		if x := st.Guests["g1"]; x.Status == cluster.StatusRunning {
			t.Errorf("g1 is running after forged reports: %+v", x)
		}
	})
	// The owner itself is heard, through the follower.
	owc := sc.httpClient(pki.Identity{Role: pki.RoleNode, Name: owner})
	if a := call(t, owc, "POST", sc.url(follower, "/v1/nodes/"+owner+"/report"), "", started(owner)); a.status != 200 {
		t.Fatalf("owner's report refused: %d %s", a.status, a.body)
	}
	// And the event names it as the actor, not what a header claimed.
	var actor string
	WaitFor(t, 5*time.Second, "guest.started recorded", func() bool {
		recs, _ := leader.store.Read(0, 10000)
		for _, r := range recs {
			if bytes.Contains(r.Data, []byte(`"guest.started"`)) {
				var e struct {
					Actor string `json:"actor"`
				}
				json.Unmarshal(r.Data, &e)
				actor = e.Actor
			}
		}
		return actor != ""
	})
	if actor != "node:"+owner {
		t.Fatalf("guest.started recorded actor %q, want node:%s", actor, owner)
	}
}

// TestActorIsTheAuthenticatedIdentity: a header naming another actor is
// ignored; the event records the token that wrote it.
func TestActorIsTheAuthenticatedIdentity(t *testing.T) {
	sc := newSecureCluster(t, 1)
	sc.setup()
	_, leader := sc.leader()
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	req, _ := http.NewRequest("POST", sc.url(leader, "/v1/guests"), strings.NewReader(`{"name":"g2","driver":"process","memory":"64MiB","command":["true"],"no_start":true}`))
	req.Header.Set(api.HeaderToken, sc.token["write"])
	req.Header.Set(api.HeaderActor, "mallory")
	resp, err := alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("create g2: %d", resp.StatusCode)
	}
	// The store writer may run behind the state machine.
	if err := leader.waitStored(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, _ := leader.store.Read(0, 10000)
	found := false
	for _, r := range recs {
		if bytes.Contains(r.Data, []byte(`"g2"`)) && bytes.Contains(r.Data, []byte(`"guest.defined"`)) {
			found = true
			if bytes.Contains(r.Data, []byte("mallory")) || !bytes.Contains(r.Data, []byte(`"token:write-token/`)) {
				t.Errorf("event of g2 does not name the token as actor: %s", r.Data)
			}
		}
	}
	if !found {
		t.Fatal("no event of g2")
	}
	// The log keeps token hashes only.
	for _, r := range recs {
		for _, secret := range sc.token {
			if bytes.Contains(r.Data, []byte(secret)) {
				t.Fatalf("a token's secret is in the log: %s", r.Data)
			}
		}
	}
}

// TestPlainAndForeignConnectionsRefused: a plain HTTP client, a client of
// another CA and a header claiming to forward are all refused.
func TestPlainAndForeignConnectionsRefused(t *testing.T) {
	sc := newSecureCluster(t, 1)
	sc.setup()
	_, leader := sc.leader()
	resp, err := http.Get("http://" + leader.HTTPAddr() + "/v1/guests")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatalf("plain HTTP served: %s", b)
		}
	}
	other, err := pki.EnsureDir(t.TempDir(), pki.Identity{Role: pki.RoleClient, Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	ol, _ := other[pki.Identity{Role: pki.RoleClient, Name: "alice"}].Load()
	cfg := ol.DialConfig()
	cfg.InsecureSkipVerify = true // even trusting any server, its certificate is refused
	cfg.VerifyConnection = nil
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	if a := call(t, hc, "GET", sc.url(leader, "/v1/guests"), sc.mgmt, nil); a.status != -1 {
		t.Fatalf("a certificate of another CA got an answer: %d %s", a.status, a.body)
	}
	// A client claiming to forward for a server is refused.
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	req, _ := http.NewRequest("GET", sc.url(leader, "/v1/guests"), nil)
	req.Header.Set(headerOnBehalf, "server:s1")
	resp, err = alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("client posing as a forwarding server: %d", resp.StatusCode)
	}
}

// TestLimits: bodies, headers, event streams and request rates past the
// configured limits are refused with errors that say which limit.
func TestLimits(t *testing.T) {
	sc := newSecureClusterWith(t, 1, func(cfg *Config) {
		cfg.Limits = Limits{MaxBodyBytes: 8 << 10, MaxHeaderBytes: 4 << 10, MaxStreams: 2, Rate: 1, Burst: 40}
	})
	sc.setup()
	_, s := sc.leader()
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	big := `{"name":"big","driver":"process","memory":"16MiB","command":["` + strings.Repeat("x", 9<<10) + `"]}`
	if a := call(t, alice, "POST", sc.url(s, "/v1/guests"), sc.token["write"], big); a.status != http.StatusBadRequest || !strings.Contains(a.body, "max-body") {
		t.Errorf("body over the limit: %d %s", a.status, a.body)
	}
	req, _ := http.NewRequest("GET", sc.url(s, "/v1/guests"), nil)
	req.Header.Set(api.HeaderToken, sc.token["read"])
	req.Header.Set("X-Padding", strings.Repeat("y", 8<<10))
	if resp, err := alice.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("headers over the limit: %d", resp.StatusCode)
		}
	}
	// Two streams are held open; the third is refused.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 3 {
		req, _ := http.NewRequestWithContext(ctx, "GET", sc.url(s, "/v1/events?follow=1"), nil)
		req.Header.Set(api.HeaderToken, sc.token["read"])
		resp, err := alice.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if resp.StatusCode != 200 {
				t.Fatalf("stream %d: %d", i, resp.StatusCode)
			}
			defer resp.Body.Close()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(b), "max-streams") {
			t.Errorf("third stream: %d %s", resp.StatusCode, b)
		}
	}
	// The burst is spent soon at 1 request a second; the refusal says
	// when to retry.
	var limited *http.Response
	for range 60 {
		req, _ := http.NewRequest("GET", sc.url(s, "/v1/guests?stale=1"), nil)
		req.Header.Set(api.HeaderToken, sc.token["write"])
		resp, err := alice.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = resp
			break
		}
	}
	if limited == nil || limited.Header.Get("Retry-After") == "" {
		t.Fatalf("60 requests at a 1/s limit with burst 40 were all served, or no Retry-After: %v", limited)
	}
	// Another identity is not limited by it.
	if a := call(t, alice, "GET", sc.url(s, "/v1/guests?stale=1"), sc.token["read"], nil); a.status != 200 {
		t.Errorf("another token was limited too: %d %s", a.status, a.body)
	}
}

// TestEnrollWithJoinToken: an agent holding only the CA and a one-time
// join token gets a certificate for its node, through a follower; the
// token works once and for that node only, and the certificate speaks for
// that node only.
func TestEnrollWithJoinToken(t *testing.T) {
	sc := newSecureCluster(t, 3)
	sc.setup()
	li, leader := sc.leader()
	follower := sc.servers[(li+1)%3]
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	anon := sc.httpClient(pki.Identity{})
	a := call(t, alice, "POST", sc.url(follower, "/v1/acl/join-tokens"), sc.token["operator"], api.CreateJoinToken{Node: "n3"})
	if !a.refused() {
		t.Fatalf("an operator token (no acl:write) made a join token: %d %s", a.status, a.body)
	}
	a = call(t, alice, "POST", sc.url(follower, "/v1/acl/join-tokens"), sc.mgmt, api.CreateJoinToken{Node: "n3"})
	if a.status != 200 {
		t.Fatalf("join token: %d %s", a.status, a.body)
	}
	var jt api.JoinToken
	json.Unmarshal([]byte(a.body), &jt)
	if jt.Secret == "" || jt.ExpiresAt.IsZero() {
		t.Fatalf("join token answer: %s", a.body)
	}
	csr, key, err := pki.NewCSR(pki.Identity{Role: pki.RoleNode, Name: "n3"})
	if err != nil {
		t.Fatal(err)
	}
	// For another node, the token is refused.
	if a := call(t, anon, "POST", sc.url(follower, "/v1/nodes/n4/enroll"), "", api.EnrollRequest{JoinToken: jt.Secret, CSR: string(csr)}); a.status == 200 {
		t.Fatalf("join token for n3 enrolled n4: %s", a.body)
	}
	a = call(t, anon, "POST", sc.url(follower, "/v1/nodes/n3/enroll"), "", api.EnrollRequest{JoinToken: jt.Secret, CSR: string(csr)})
	if a.status != 200 {
		t.Fatalf("enroll: %d %s", a.status, a.body)
	}
	var rep api.EnrollReply
	json.Unmarshal([]byte(a.body), &rep)
	cert, err := pki.ParseCertPEM([]byte(rep.Cert))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := pki.IdentityOf(cert); err != nil || id != (pki.Identity{Role: pki.RoleNode, Name: "n3"}) {
		t.Fatalf("enrolled certificate names %v, %v", id, err)
	}
	// Spent: a second enrollment is refused, on any server.
	if a := call(t, anon, "POST", sc.url(leader, "/v1/nodes/n3/enroll"), "", api.EnrollRequest{JoinToken: jt.Secret, CSR: string(csr)}); a.status == 200 {
		t.Fatalf("join token used twice: %s", a.body)
	}
	// The certificate registers n3 and nothing else.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "n3.pem"), filepath.Join(dir, "n3-key.pem")
	if err := pki.WriteFile(certFile, []byte(rep.Cert), 0o644, false); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(keyFile, key, 0o600, false); err != nil {
		t.Fatal(err)
	}
	ca, _ := pki.CAFileNames(sc.dir)
	l, err := pki.Files{CA: ca, Cert: certFile, Key: keyFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	n3 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: l.DialConfig()}}
	if a := call(t, n3, "POST", sc.url(follower, "/v1/nodes"), "", nodeBody("n3")); a.status != 200 {
		t.Fatalf("n3 registering itself: %d %s", a.status, a.body)
	}
	if a := call(t, n3, "POST", sc.url(follower, "/v1/nodes"), "", nodeBody("n1")); !a.refused() {
		t.Fatalf("n3 registered n1: %d %s", a.status, a.body)
	}
	// The log records the enrollment, and never the token's secret.
	// The store writer may run behind the state machine.
	if err := leader.waitStored(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, _ := leader.store.Read(0, 10000)
	enrolled := false
	for _, r := range recs {
		if bytes.Contains(r.Data, []byte(jt.Secret)) {
			t.Fatalf("the join token's secret is in the log: %s", r.Data)
		}
		enrolled = enrolled || bytes.Contains(r.Data, []byte(`"node.enrolled"`))
	}
	if !enrolled {
		t.Fatal("no node.enrolled event")
	}
}

// TestReadmeListsEveryRoute keeps the README's HTTP API table true: every
// route is there with exactly what the server checks, and nothing else.
func TestReadmeListsEveryRoute(t *testing.T) {
	s := StartTestServer(t, TestConfig(t, "s1", t.TempDir()))
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	listed := map[string]bool{}
	for _, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(line, "| `") && strings.Count(line, " | ") >= 2 {
			route, _, _ := strings.Cut(strings.TrimPrefix(line, "| `"), "`")
			listed[route] = true
		}
	}
	for _, r := range s.Routes() {
		route := r.Method + " " + r.Path
		want := "| `" + route + "` |"
		i := strings.Index(readme, want)
		if i < 0 {
			t.Errorf("README's HTTP API table lacks %s", route)
			continue
		}
		line, _, _ := strings.Cut(readme[i:], "\n")
		if !strings.HasSuffix(line, "| "+r.Access+" |") {
			t.Errorf("README says of %s: %s; the server checks %q", route, line, r.Access)
		}
		delete(listed, route)
	}
	for route := range listed {
		if strings.HasPrefix(route, "GET /") || strings.HasPrefix(route, "POST /") || strings.HasPrefix(route, "DELETE /") {
			t.Errorf("README lists %s, which the server does not serve", route)
		}
	}
}

// TestNoEscalation: a token with acl:write but not the rest cannot make a
// management token, nor a policy granting what it lacks; a server
// certificate joins only under its own name.
func TestNoEscalation(t *testing.T) {
	sc := newSecureCluster(t, 1)
	sc.setup()
	_, s := sc.leader()
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	if a := call(t, alice, "POST", sc.url(s, "/v1/acl/policies"), sc.mgmt, api.ACLPolicy{Name: "aclw", Capabilities: []string{"acl:write"}}); a.status != 200 {
		t.Fatalf("policy aclw: %d %s", a.status, a.body)
	}
	a := call(t, alice, "POST", sc.url(s, "/v1/acl/tokens"), sc.mgmt, api.CreateToken{Name: "limited", Policies: []string{"aclw"}})
	var lim api.ACLTokenSecret
	json.Unmarshal([]byte(a.body), &lim)
	for _, c := range []struct {
		path string
		body any
	}{
		{"/v1/acl/tokens", api.CreateToken{Name: "esc", Policies: []string{"management"}}},
		{"/v1/acl/tokens", api.CreateToken{Name: "esc", Policies: []string{"write"}}},
		{"/v1/acl/policies", api.ACLPolicy{Name: "all", Capabilities: []string{"guest:write"}}},
	} {
		a := call(t, alice, "POST", sc.url(s, c.path), lim.Secret, c.body)
		if a.status != http.StatusForbidden || !strings.Contains(a.body, `"missing"`) {
			t.Errorf("acl:write alone: POST %s %v: %d %s", c.path, c.body, a.status, a.body)
		}
	}
	// What it holds it may hand out.
	if a := call(t, alice, "POST", sc.url(s, "/v1/acl/tokens"), lim.Secret, api.CreateToken{Name: "same", Policies: []string{"aclw"}}); a.status != 200 {
		t.Errorf("acl:write handing out acl:write: %d %s", a.status, a.body)
	}
	srv := sc.httpClient(pki.Identity{Role: pki.RoleServer, Name: "s2"})
	if a := call(t, srv, "POST", sc.url(s, "/v1/cluster/join"), "", map[string]any{"id": "s9", "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:1"}); !a.refused() {
		t.Errorf("server s2's certificate joined as s9: %d %s", a.status, a.body)
	}
}
