package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/events"
)

// Capability is one thing a request may need to be allowed to do, named
// resource:action.
type Capability string

// The capabilities. The server maps every endpoint to one of them.
const (
	GuestRead      Capability = "guest:read"
	GuestWrite     Capability = "guest:write"
	NodeRead       Capability = "node:read"
	NodeWrite      Capability = "node:write" // static nodes, eligibility, drain, up/down
	SchedulerRead  Capability = "scheduler:read"
	SchedulerWrite Capability = "scheduler:write"
	ClusterRead    Capability = "cluster:read"  // members
	ClusterWrite   Capability = "cluster:write" // remove a peer
	EventRead      Capability = "event:read"    // event stream, state, history
	ACLRead        Capability = "acl:read"
	ACLWrite       Capability = "acl:write" // tokens, policies, join tokens
)

// capabilities lists every capability in the order they are printed.
var capabilities = [...]Capability{
	GuestRead, GuestWrite, NodeRead, NodeWrite, SchedulerRead, SchedulerWrite,
	ClusterRead, ClusterWrite, EventRead, ACLRead, ACLWrite,
}

// All returns every capability, in a fixed order.
func All() []Capability { return slices.Clone(capabilities[:]) }

func (c Capability) String() string { return string(c) }

func capabilityList() string {
	s := make([]string, len(capabilities))
	for i, c := range capabilities {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

// ParseCapability returns the capability named s.
func ParseCapability(s string) (Capability, error) {
	c := Capability(s)
	if !slices.Contains(capabilities[:], c) {
		return "", &events.FieldError{Field: "capability", Value: s, Want: "use one of " + capabilityList()}
	}
	return c, nil
}

// ParseCapabilities parses a policy's capabilities into their canonical
// form: each known, none twice, in All's order. A policy grants at least
// one.
func ParseCapabilities(names []string) ([]Capability, error) {
	if len(names) == 0 {
		return nil, &events.FieldError{Field: "capability", Value: "", Want: "a policy grants at least one: " + capabilityList()}
	}
	want := map[Capability]bool{}
	for _, n := range names {
		c, err := ParseCapability(n)
		if err != nil {
			return nil, err
		}
		want[c] = true
	}
	out := make([]Capability, 0, len(want))
	for _, c := range capabilities {
		if want[c] {
			out = append(out, c)
		}
	}
	return out, nil
}

// Strings returns the capabilities' names.
func Strings(caps []Capability) []string {
	out := make([]string, len(caps))
	for i, c := range caps {
		out[i] = string(c)
	}
	return out
}

// Policy is a named set of capabilities.
type Policy struct {
	Name         string       `json:"name"`
	Description  string       `json:"description,omitempty"`
	Capabilities []Capability `json:"capabilities"`
}

// Grants reports whether p grants c.
func (p Policy) Grants(c Capability) bool { return slices.Contains(p.Capabilities, c) }

// The built-in policies. They cannot be changed or deleted.
const (
	Management = "management"
	Operator   = "operator"
	Write      = "write"
	Read       = "read"
)

// BuiltinNames returns the built-in policies' names, from the one that
// grants most to the one that grants least.
func BuiltinNames() []string { return []string{Management, Operator, Write, Read} }

// IsBuiltin reports whether name is a built-in policy's.
func IsBuiltin(name string) bool {
	_, ok := Builtin(name)
	return ok
}

// Builtin returns the built-in policy called name.
func Builtin(name string) (Policy, bool) {
	reads := []Capability{GuestRead, NodeRead, SchedulerRead, ClusterRead, EventRead}
	switch name {
	case Management:
		return Policy{Name: name, Description: "everything, including tokens and policies", Capabilities: All()}, true
	case Operator:
		return Policy{Name: name, Description: "read everything; run nodes, the scheduler and the cluster's servers",
			Capabilities: sorted(append(reads, ACLRead, NodeWrite, SchedulerWrite, ClusterWrite))}, true
	case Write:
		return Policy{Name: name, Description: "read everything but ACLs; create, change and remove guests",
			Capabilities: sorted(append(reads, GuestWrite))}, true
	case Read:
		return Policy{Name: name, Description: "read everything but ACLs", Capabilities: sorted(reads)}, true
	}
	return Policy{}, false
}

// sorted puts capabilities in All's order.
func sorted(caps []Capability) []Capability {
	slices.SortFunc(caps, func(a, b Capability) int {
		return slices.Index(capabilities[:], a) - slices.Index(capabilities[:], b)
	})
	return caps
}

// Allows reports whether any of policies grants c.
func Allows(policies []Policy, c Capability) bool {
	for _, p := range policies {
		if p.Grants(c) {
			return true
		}
	}
	return false
}

// GrantedBy returns the built-in policy that grants c and least else.
func GrantedBy(c Capability) string {
	names := BuiltinNames()
	for i := len(names) - 1; i >= 0; i-- {
		if p, _ := Builtin(names[i]); p.Grants(c) {
			return names[i]
		}
	}
	return Management
}

// DeniedError says that a request's token does not grant the capability
// it needs. The server wraps it in the API's permission error.
type DeniedError struct {
	// Identity names the caller as the log records it ("token ci
	// (1a2b3c4d…)"); empty when the request carried no token.
	Identity string
	Missing  Capability
}

func (e *DeniedError) Error() string {
	fix := fmt.Sprintf("send a token whose policies grant it: --token or CORRAL_TOKEN (corral acl token create --name NAME --policy %s makes one)", GrantedBy(e.Missing))
	if e.Identity == "" {
		return fmt.Sprintf("this needs a token that grants %s and the request carries none; %s", e.Missing, fix)
	}
	return fmt.Sprintf("%s does not grant %s; %s", e.Identity, e.Missing, fix)
}

// ValidatePolicyName checks a policy's name. Names follow the rules of
// guest and node IDs, as they appear in API paths.
func ValidatePolicyName(name string) error { return events.ValidateID("policy name", name) }

// MaxTokenNameLen bounds a token's name.
const MaxTokenNameLen = 63

// ValidateTokenName checks a token's name: what it is for, as the log
// records its actor ("ci-deploy", "alice").
func ValidateTokenName(name string) error {
	const rule = "use 1 to 63 characters from a-z, A-Z, 0-9, '.', '_' and '-'"
	if name == "" {
		return &events.FieldError{Field: "token name", Value: name, Want: "it is empty; " + rule}
	}
	if len(name) > MaxTokenNameLen {
		return &events.FieldError{Field: "token name", Value: name[:MaxTokenNameLen] + "…", Want: rule}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return &events.FieldError{Field: "token name", Value: name, Want: fmt.Sprintf("character %q is not allowed; %s", c, rule)}
		}
	}
	return nil
}

// ValidatePolicy checks a custom policy as an operator gives it and
// returns it in canonical form (capabilities parsed, in All's order). It
// does not check whether the name is a built-in's.
func ValidatePolicy(p Policy) (Policy, error) {
	if err := ValidatePolicyName(p.Name); err != nil {
		return Policy{}, err
	}
	names := make([]string, len(p.Capabilities))
	for i, c := range p.Capabilities {
		names[i] = string(c)
	}
	caps, err := ParseCapabilities(names)
	if err != nil {
		return Policy{}, err
	}
	ev := events.ACLPolicySet{Name: p.Name, Description: p.Description, Capabilities: Strings(caps)}
	if err := ev.Validate(); err != nil {
		return Policy{}, err
	}
	return Policy{Name: p.Name, Description: p.Description, Capabilities: caps}, nil
}

// Bounds on what the log keeps, so that no caller can grow the state
// without limit.
const (
	MaxTokens     = 4096
	MaxPolicies   = 256
	MaxJoinTokens = 1024 // unused and unexpired at once
)

// Lifetimes of a join token.
const (
	DefaultJoinTTL = time.Hour
	MinJoinTTL     = time.Minute
	MaxJoinTTL     = 7 * 24 * time.Hour
)

// JoinTTL returns the lifetime of a join token asked for with ttl: the
// default for 0, else ttl when it is from a minute to a week.
func JoinTTL(ttl time.Duration) (time.Duration, error) {
	if ttl == 0 {
		return DefaultJoinTTL, nil
	}
	if ttl < MinJoinTTL || ttl > MaxJoinTTL {
		return 0, &events.FieldError{Field: "ttl", Value: ttl.String(), Want: "use 1m to 168h (a week); the default is 1h"}
	}
	return ttl, nil
}

// SecretPrefix starts every token secret, so a leaked one is easy to
// recognise (and to scan for).
const SecretPrefix = "crl_"

// NewSecret returns a new token secret: 32 random bytes in hex after
// SecretPrefix.
func NewSecret() string { return SecretPrefix + randomHex(32) }

// NewAccessor returns a new token accessor: 16 random bytes in hex. The
// accessor names a token in lists and revocations; it proves nothing.
func NewAccessor() string { return randomHex(16) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails: crypto/rand aborts the program instead
	return hex.EncodeToString(b)
}

// HashSecret returns the hex SHA-256 of a secret, as the log keeps it.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches reports whether secret hashes to hash, in time that does
// not depend on where they differ.
func SecretMatches(secret, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(HashSecret(secret)), []byte(hash)) == 1
}

// ShortAccessor is the first 8 digits of an accessor, for messages.
func ShortAccessor(accessor string) string {
	if len(accessor) > 8 {
		return accessor[:8] + "…"
	}
	return accessor
}

// TokenIdentity names a token in messages: token "NAME" (ACCESSOR…).
func TokenIdentity(name, accessor string) string {
	return "token " + strconv.Quote(name) + " (" + ShortAccessor(accessor) + ")"
}
