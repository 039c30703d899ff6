package acl

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

func TestParseCapability(t *testing.T) {
	for _, c := range All() {
		got, err := ParseCapability(string(c))
		if err != nil || got != c {
			t.Errorf("%s: %q, %v", c, got, err)
		}
	}
	for _, s := range []string{"", "guest", "guest:delete", "GUEST:READ", " guest:read", "*"} {
		_, err := ParseCapability(s)
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "guest:read") {
			t.Errorf("%q: %v, want an invalid-argument error listing the capabilities", s, err)
		}
	}
	if len(All()) != 11 {
		t.Errorf("All has %d capabilities, want 11", len(All()))
	}
	a := All()
	a[0] = "x:y"
	if All()[0] != GuestRead {
		t.Error("All shares its slice with callers")
	}
}

func TestParseCapabilitiesCanonical(t *testing.T) {
	got, err := ParseCapabilities([]string{"acl:write", "guest:read", "acl:write", "node:read"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Capability{GuestRead, NodeRead, ACLWrite}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := ParseCapabilities(nil); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("no capabilities: %v", err)
	}
	if _, err := ParseCapabilities([]string{"guest:read", "guest:fly"}); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("unknown capability: %v", err)
	}
}

// TestBuiltinPolicies pins what each built-in policy grants.
func TestBuiltinPolicies(t *testing.T) {
	want := map[string][]Capability{
		Management: All(),
		Operator:   {GuestRead, NodeRead, NodeWrite, SchedulerRead, SchedulerWrite, ClusterRead, ClusterWrite, EventRead, ACLRead},
		Write:      {GuestRead, GuestWrite, NodeRead, SchedulerRead, ClusterRead, EventRead},
		Read:       {GuestRead, NodeRead, SchedulerRead, ClusterRead, EventRead},
	}
	if got := BuiltinNames(); !slices.Equal(got, []string{Management, Operator, Write, Read}) {
		t.Errorf("BuiltinNames = %v", got)
	}
	for _, name := range BuiltinNames() {
		p, ok := Builtin(name)
		if !ok || p.Name != name || p.Description == "" {
			t.Fatalf("Builtin(%q) = %+v, %v", name, p, ok)
		}
		if !slices.Equal(p.Capabilities, want[name]) {
			t.Errorf("%s grants %v, want %v", name, p.Capabilities, want[name])
		}
		if !IsBuiltin(name) {
			t.Errorf("IsBuiltin(%q) is false", name)
		}
		p.Capabilities[0] = "x:y"
		if again, _ := Builtin(name); again.Capabilities[0] == "x:y" {
			t.Errorf("Builtin(%q) shares its capabilities with callers", name)
		}
	}
	for _, name := range []string{"", "Management", "admin"} {
		if _, ok := Builtin(name); ok || IsBuiltin(name) {
			t.Errorf("%q is taken for a built-in policy", name)
		}
	}
}

func TestAllows(t *testing.T) {
	read, _ := Builtin(Read)
	deploy := Policy{Name: "deploy", Capabilities: []Capability{GuestWrite}}
	cases := []struct {
		policies []Policy
		c        Capability
		want     bool
	}{
		{nil, GuestRead, false},
		{[]Policy{read}, GuestRead, true},
		{[]Policy{read}, GuestWrite, false},
		{[]Policy{read}, ACLRead, false},
		{[]Policy{read, deploy}, GuestWrite, true},
		{[]Policy{deploy}, GuestRead, false},
		// A capability a newer build wrote grants nothing here.
		{[]Policy{{Name: "future", Capabilities: []Capability{"volume:write"}}}, GuestWrite, false},
	}
	for _, c := range cases {
		if got := Allows(c.policies, c.c); got != c.want {
			t.Errorf("Allows(%v, %s) = %v, want %v", c.policies, c.c, got, c.want)
		}
	}
}

func TestGrantedBy(t *testing.T) {
	want := map[Capability]string{
		GuestRead: Read, EventRead: Read, GuestWrite: Write, NodeWrite: Operator,
		ClusterWrite: Operator, ACLRead: Operator, ACLWrite: Management,
	}
	for c, name := range want {
		if got := GrantedBy(c); got != name {
			t.Errorf("GrantedBy(%s) = %s, want %s", c, got, name)
		}
	}
}

func TestDeniedErrorSaysWhatToDo(t *testing.T) {
	err := error(&DeniedError{Identity: TokenIdentity("ci", "0123456789abcdef0123456789abcdef"), Missing: NodeWrite})
	msg := err.Error()
	for _, want := range []string{`token "ci" (01234567…)`, "node:write", "--token or CORRAL_TOKEN", "corral acl token create", "--policy operator"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
	var de *DeniedError
	if !errors.As(err, &de) || de.Missing != NodeWrite {
		t.Errorf("errors.As: %v", de)
	}
	anon := (&DeniedError{Missing: GuestRead}).Error()
	if !strings.Contains(anon, "carries none") || !strings.Contains(anon, "guest:read") {
		t.Errorf("without a token: %q", anon)
	}
}

func TestSecrets(t *testing.T) {
	s1, s2 := NewSecret(), NewSecret()
	if !regexp.MustCompile(`^crl_[0-9a-f]{64}$`).MatchString(s1) || s1 == s2 {
		t.Errorf("secrets %q, %q", s1, s2)
	}
	a1, a2 := NewAccessor(), NewAccessor()
	if err := events.ValidateAccessor("accessor", a1); err != nil || a1 == a2 {
		t.Errorf("accessors %q, %q: %v", a1, a2, err)
	}
	// The hash the log keeps is the one the node secrets already use.
	if got := HashSecret("s1"); got != "e8bc163c82eee18733288c7d4ac636db3a6deb013ef2d37b68322be20edc45cc" {
		t.Errorf("HashSecret(s1) = %s", got)
	}
	h := HashSecret(s1)
	if !SecretMatches(s1, h) || SecretMatches(s2, h) || SecretMatches("", h) || SecretMatches(s1, "") {
		t.Error("SecretMatches")
	}
	if h == s1 || strings.Contains(h, s1[len(SecretPrefix):]) {
		t.Error("the hash shows the secret")
	}
}

func TestValidateNames(t *testing.T) {
	for _, n := range []string{"deploy", "ci-1", strings.Repeat("p", 63)} {
		if err := ValidatePolicyName(n); err != nil {
			t.Errorf("policy %q: %v", n, err)
		}
	}
	for _, n := range []string{"", "Deploy", "a/b", "..", strings.Repeat("p", 64)} {
		if err := ValidatePolicyName(n); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("policy %q: %v", n, err)
		}
	}
	for _, n := range []string{"ci", "Alice.Smith", "deploy_bot-2", strings.Repeat("t", 63)} {
		if err := ValidateTokenName(n); err != nil {
			t.Errorf("token %q: %v", n, err)
		}
	}
	for _, n := range []string{"", "a b", "a\nb", "é", "a/b", strings.Repeat("t", 64)} {
		err := ValidateTokenName(n)
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "token name") {
			t.Errorf("token %q: %v", n, err)
		}
	}
}

func TestValidatePolicy(t *testing.T) {
	p, err := ValidatePolicy(Policy{Name: "deploy", Description: "CI", Capabilities: []Capability{GuestWrite, GuestRead, GuestWrite}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Capabilities, []Capability{GuestRead, GuestWrite}) || p.Description != "CI" {
		t.Errorf("canonical form %+v", p)
	}
	for name, bad := range map[string]Policy{
		"name":        {Name: "De Ploy", Capabilities: []Capability{GuestRead}},
		"none":        {Name: "deploy"},
		"unknown":     {Name: "deploy", Capabilities: []Capability{"guest:fly"}},
		"description": {Name: "deploy", Capabilities: []Capability{GuestRead}, Description: "a\tb"},
	} {
		if _, err := ValidatePolicy(bad); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestJoinTTL(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{0: time.Hour, time.Minute: time.Minute, 168 * time.Hour: 168 * time.Hour} {
		if got, err := JoinTTL(in); err != nil || got != want {
			t.Errorf("JoinTTL(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []time.Duration{-time.Hour, time.Second, 59 * time.Second, 169 * time.Hour} {
		if _, err := JoinTTL(in); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("JoinTTL(%s): %v", in, err)
		}
	}
}
