package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/pki"
)

// testPKI is a test cluster's CA and certificates, in a directory of the
// test, as an operator makes them with corral tls.
type testPKI struct {
	t   testing.TB
	dir string
	mu  sync.Mutex
	// token is the management token once bootstrap ran.
	token string
	// tr is the operator's HTTPS transport, made by clientWith once.
	tr *http.Transport
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{t: t, dir: filepath.Join(t.TempDir(), "tls")}
	if _, err := pki.EnsureDir(p.dir); err != nil {
		t.Fatal(err)
	}
	return p
}

// files makes id's certificate unless it exists and returns its files.
func (p *testPKI) files(id pki.Identity) pki.Files {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	m, err := pki.EnsureDir(p.dir, id)
	if err != nil {
		p.t.Fatal(err)
	}
	return m[id]
}

// caCert and caKey are the CA's files.
func (p *testPKI) caCert() string { c, _ := pki.CAFileNames(p.dir); return c }
func (p *testPKI) caKey() string  { _, k := pki.CAFileNames(p.dir); return k }

func tlsFlags(prefix string, f pki.Files) []string {
	return []string{"--" + prefix + "ca", f.CA, "--" + prefix + "cert", f.Cert, "--" + prefix + "key", f.Key}
}

// serverArgs are the TLS flags of server id.
func (p *testPKI) serverArgs(id string) []string {
	return tlsFlags("tls-", p.files(pki.Identity{Role: pki.RoleServer, Name: id}))
}

// agentArgs are the TLS flags of node id's agent.
func (p *testPKI) agentArgs(id string) []string {
	return tlsFlags("tls-", p.files(pki.Identity{Role: pki.RoleNode, Name: id}))
}

// clientEnv is the environment of a CLI run as the test's operator, with
// the management token once bootstrap has run.
func (p *testPKI) clientEnv() []string {
	f := p.files(pki.Identity{Role: pki.RoleClient, Name: "operator"})
	env := []string{"CORRAL_CACERT=" + f.CA, "CORRAL_CLIENT_CERT=" + f.Cert, "CORRAL_CLIENT_KEY=" + f.Key}
	if p.token != "" {
		env = append(env, "CORRAL_TOKEN="+p.token)
	}
	return env
}

// client is an API client for addrs as the test's operator.
func (p *testPKI) client(addrs string) *api.Client {
	p.t.Helper()
	l, err := p.files(pki.Identity{Role: pki.RoleClient, Name: "operator"}).Load()
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := api.NewClientTLS(addrs, l.DialConfig())
	if err != nil {
		p.t.Fatal(err)
	}
	c.Token = p.token
	return c
}

// clientWith is client with a timeout on every request, over one
// transport that every such client of p shares: the many short-lived
// clients of a long test reuse their connections instead of each making
// a TLS handshake.
func (p *testPKI) clientWith(addrs string, timeout time.Duration) *api.Client {
	p.t.Helper()
	p.mu.Lock()
	tr := p.tr
	p.mu.Unlock()
	if tr == nil {
		l, err := p.files(pki.Identity{Role: pki.RoleClient, Name: "operator"}).Load()
		if err != nil {
			p.t.Fatal(err)
		}
		tr = http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = l.DialConfig()
		tr.MaxIdleConnsPerHost = 64
		p.mu.Lock()
		if p.tr == nil {
			p.tr = tr
			p.t.Cleanup(tr.CloseIdleConnections)
		}
		tr = p.tr
		p.mu.Unlock()
	}
	var urls []string
	for _, a := range strings.Split(addrs, ",") {
		if !strings.Contains(a, "://") {
			a = "https://" + a
		}
		urls = append(urls, a)
	}
	c, err := api.NewClientWith(strings.Join(urls, ","), &http.Client{Timeout: timeout, Transport: tr})
	if err != nil {
		p.t.Fatal(err)
	}
	c.Token = p.token
	return c
}

// bootstrap runs the ACL bootstrap against addrs and keeps the management
// token for clientEnv and client.
func (p *testPKI) bootstrap(addrs string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := p.client(addrs).ACLBootstrap(ctx)
	if err != nil {
		p.t.Fatalf("acl bootstrap: %v", err)
	}
	p.token = tok.Secret
	return tok.Secret
}

// devEnv is the environment of a CLI run against corral dev on dataDir:
// the credentials it made there.
func devEnv(t testing.TB, dataDir string) []string {
	t.Helper()
	f := devClientFiles(dataDir)
	tok, err := os.ReadFile(devTokenFile(dataDir))
	if err != nil {
		t.Fatalf("corral dev made no token: %v", err)
	}
	return []string{"CORRAL_CACERT=" + f.CA, "CORRAL_CLIENT_CERT=" + f.Cert, "CORRAL_CLIENT_KEY=" + f.Key, "CORRAL_TOKEN=" + strings.TrimSpace(string(tok))}
}

// serverTLS is the listener configuration of server id, for stand-in
// servers in tests.
func (p *testPKI) serverTLS(id string) *tls.Config {
	p.t.Helper()
	l, err := p.files(pki.Identity{Role: pki.RoleServer, Name: id}).Load()
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := l.ListenConfig(tls.VerifyClientCertIfGiven)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// envFunc looks names up in env (NAME=value lines) and nowhere else.
func envFunc(env []string) func(string) string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}
