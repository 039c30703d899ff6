package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

func TestPolicyFromFlags(t *testing.T) {
	p, err := policyFromFlags("deploy", "CI deploys", []string{"guest:write", "guest:read", "guest:write"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "deploy" || p.Description != "CI deploys" || strings.Join(p.Capabilities, ",") != "guest:read,guest:write" || p.Builtin {
		t.Errorf("policy %+v", p)
	}
	for _, c := range []struct {
		name string
		caps []string
		want string
	}{
		{"read", []string{"guest:read"}, `policy name "read" is invalid: it is a built-in policy`},
		{"De Ploy", []string{"guest:read"}, `policy name "De Ploy" is invalid`},
		{"deploy", []string{"guest:fly"}, `capability "guest:fly" is invalid: use one of guest:read`},
		{"deploy", nil, "a policy grants at least one"},
	} {
		_, err := policyFromFlags(c.name, "", c.caps)
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: %v, want %q", c.name, c.caps, err, c.want)
		}
	}
}

func TestJoinTokenRequest(t *testing.T) {
	req, err := joinTokenRequest("n1", 24*time.Hour)
	if err != nil || req != (api.CreateJoinToken{Node: "n1", TTLSeconds: 86400}) {
		t.Errorf("%+v, %v", req, err)
	}
	for _, c := range []struct {
		node string
		ttl  time.Duration
		want string
	}{
		{"N1", time.Hour, `node id "N1" is invalid`},
		{"n1", 30 * time.Second, `ttl "30s" is invalid: use 1m to 168h`},
		{"n1", 8 * 24 * time.Hour, `ttl "192h0m0s" is invalid`},
		{"n1", 90*time.Second + time.Millisecond, "whole seconds"},
		{"n1", 0, "leave --ttl out for the default"},
	} {
		_, err := joinTokenRequest(c.node, c.ttl)
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.node, c.ttl, err, c.want)
		}
	}
}

func TestACLTables(t *testing.T) {
	var b bytes.Buffer
	if err := writeTokens(&b, []api.ACLToken{
		{Accessor: "aaaaaaaa000000000000000000000001", Name: "bootstrap", Policies: []string{"management"}, Bootstrap: true, CreateIndex: 1},
		{Accessor: "cccccccc000000000000000000000003", Name: "ci\tx", Policies: []string{"deploy", "read"}, CreateIndex: 3},
	}); err != nil {
		t.Fatal(err)
	}
	want := `ACCESSOR                          NAME       POLICIES     BOOTSTRAP  CREATED
aaaaaaaa000000000000000000000001  bootstrap  management   yes        1
cccccccc000000000000000000000003  ci x       deploy,read  no         3
`
	if b.String() != want {
		t.Errorf("token table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := writePolicies(&b, []api.ACLPolicy{
		{Name: "read", Capabilities: []string{"guest:read", "node:read"}, Builtin: true, Description: "read everything but ACLs"},
		{Name: "deploy", Capabilities: []string{"guest:write"}},
	}); err != nil {
		t.Fatal(err)
	}
	want = `NAME    BUILTIN  CAPABILITIES          DESCRIPTION
read    yes      guest:read,node:read  read everything but ACLs
deploy  no       guest:write           -
`
	if b.String() != want {
		t.Errorf("policy table:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestACLBootstrapPrintsSecretOnce runs corral acl bootstrap against a
// stand-in server: the request is a POST with a request ID, and the
// secret is printed with the line saying it is shown only now (or, with
// -o json, as the API's answer).
func TestACLBootstrapPrintsSecretOnce(t *testing.T) {
	answer := api.ACLTokenSecret{
		ACLToken: api.ACLToken{Accessor: "aaaaaaaa000000000000000000000001", Name: "bootstrap", Policies: []string{"management"}, Bootstrap: true, CreateIndex: 1},
		Secret:   "crl_" + strings.Repeat("ab", 32),
	}
	var got []string
	p := newTestPKI(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, strings.TrimSpace(r.Method+" "+r.URL.Path+" "+string(body)))
		if r.Header.Get(api.HeaderRequestID) == "" {
			t.Errorf("%s %s carries no request ID", r.Method, r.URL.Path)
		}
		json.NewEncoder(w).Encode(answer)
	}))
	srv.TLS = p.serverTLS("s1")
	srv.StartTLS()
	defer srv.Close()
	getenv := envFunc(p.clientEnv())

	runACL := func(args ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		a := &app{stdout: &out, stderr: &errb, getenv: getenv, output: "table"}
		cmd := a.aclCommand()
		cmd.SetArgs(append(args, "--addr", srv.URL))
		cmd.SetOut(&out)
		cmd.SetErr(&errb)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cmd.ExecuteContext(ctx); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String(), errb.String()
	}
	out, _ := runACL("bootstrap")
	for _, want := range []string{answer.Secret, answer.Accessor, "management", "shown only now"} {
		if !strings.Contains(out, want) {
			t.Errorf("bootstrap printed\n%s\nwithout %q", out, want)
		}
	}
	out, _ = runACL("bootstrap", "-o", "json")
	var decoded api.ACLTokenSecret
	if err := json.Unmarshal([]byte(out), &decoded); err != nil || decoded.Secret != answer.Secret || decoded.Accessor != answer.Accessor {
		t.Errorf("bootstrap -o json printed %q (%v)", out, err)
	}
	runACL("token", "create", "--name", "ci", "--policy", "write", "--policy", "deploy")
	want := []string{
		"POST /v1/acl/bootstrap",
		"POST /v1/acl/bootstrap",
		`POST /v1/acl/tokens {"name":"ci","policies":["write","deploy"]}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
