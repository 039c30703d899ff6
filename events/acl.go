package events

import (
	"fmt"
	"strconv"
	"time"
)

// ACLTokenCreated records an ACL token: who it is for (Name), what it may
// do (Policies, by name) and the SHA-256 (hex) of its secret. The secret
// itself is never written to the log. Bootstrap marks the cluster's first
// management token, which only the ACL bootstrap creates.
type ACLTokenCreated struct {
	Accessor   string   `json:"accessor"`
	Name       string   `json:"name"`
	Policies   []string `json:"policies"`
	SecretHash string   `json:"secret_hash"`
	Bootstrap  bool     `json:"bootstrap,omitempty"`
}

// ACLTokenDeleted revokes a token: its secret stops working at once.
type ACLTokenDeleted struct {
	Accessor string `json:"accessor"`
}

// ACLPolicySet creates or replaces a custom policy. Capabilities are kept
// as written; one this build does not know grants nothing.
type ACLPolicySet struct {
	Name         string   `json:"name"`
	Description  string   `json:"description,omitempty"`
	Capabilities []string `json:"capabilities"`
}

// ACLPolicyDeleted removes a custom policy. Tokens that name it keep the
// name, which then grants nothing.
type ACLPolicyDeleted struct {
	Name string `json:"name"`
}

// NodeJoinTokenCreated records a one-time token with which the agent of
// exactly one node, Node, may enroll (get its certificate) until ExpiresAt.
// Like an ACL token's, only the secret's hash is in the log.
type NodeJoinTokenCreated struct {
	Accessor   string    `json:"accessor"`
	Node       string    `json:"node"`
	SecretHash string    `json:"secret_hash"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// NodeEnrolled says a node's agent spent join token JoinToken (its
// accessor) and was issued the certificate with Fingerprint.
type NodeEnrolled struct {
	Node        string `json:"node"`
	JoinToken   string `json:"join_token"`
	Fingerprint string `json:"fingerprint"`
}

func (*ACLTokenCreated) EventType() Type      { return TypeACLTokenCreated }
func (*ACLTokenDeleted) EventType() Type      { return TypeACLTokenDeleted }
func (*ACLPolicySet) EventType() Type         { return TypeACLPolicySet }
func (*ACLPolicyDeleted) EventType() Type     { return TypeACLPolicyDeleted }
func (*NodeJoinTokenCreated) EventType() Type { return TypeNodeJoinTokenCreated }
func (*NodeEnrolled) EventType() Type         { return TypeNodeEnrolled }

// Shapes of the ACL values in the log.
const (
	// AccessorLen is the length of a token's accessor: 16 random bytes
	// in lower-case hex.
	AccessorLen = 32
	// secretHashLen is the length of a hex SHA-256.
	secretHashLen = 64
	// MaxTokenPolicies bounds the policies one token names.
	MaxTokenPolicies = 16
	// MaxPolicyCapabilities bounds the capabilities one policy lists.
	MaxPolicyCapabilities = 64
	// MaxDescriptionLen bounds a policy's description.
	MaxDescriptionLen = 256
	// minFingerprintLen and maxFingerprintLen bound a certificate
	// fingerprint in hex.
	minFingerprintLen = 16
	maxFingerprintLen = 128
)

// ValidateAccessor checks a token's accessor: 32 lower-case hex digits.
// Accessors name tokens in API paths, so nothing else is allowed.
func ValidateAccessor(field, s string) error {
	return validateHex(field, s, AccessorLen, AccessorLen, "an accessor is 32 lower-case hex digits, as corral acl token list shows it")
}

func validateHex(field, s string, minLen, maxLen int, want string) error {
	if len(s) < minLen || len(s) > maxLen {
		return fieldErr(field, truncate(s), want)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fieldErr(field, truncate(s), want)
		}
	}
	return nil
}

func validateSecretHash(s string) error {
	return validateHex("secret_hash", s, secretHashLen, secretHashLen, "the hex SHA-256 of the secret, set by the server")
}

// validateNames checks a list of policy names: at least one, at most max,
// each a valid ID, none twice.
func validateNames(field string, names []string, max int) error {
	if len(names) == 0 {
		return fieldErr(field, "", "name at least one")
	}
	if len(names) > max {
		return fieldErr(field, strconv.Itoa(len(names)), fmt.Sprintf("at most %d", max))
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if err := ValidateID(field, n); err != nil {
			return err
		}
		if seen[n] {
			return fieldErr(field, n, "it is named twice")
		}
		seen[n] = true
	}
	return nil
}

// Validate checks a token as the log keeps it. The name's stricter rules
// are the ACL package's, checked when the token is created.
func (p *ACLTokenCreated) Validate() error {
	if err := ValidateAccessor("accessor", p.Accessor); err != nil {
		return err
	}
	if p.Name == "" {
		return fieldErr("name", p.Name, "a token needs a name")
	}
	if err := shortText("name", p.Name); err != nil {
		return err
	}
	if err := validateNames("policy", p.Policies, MaxTokenPolicies); err != nil {
		return err
	}
	return validateSecretHash(p.SecretHash)
}

// Validate checks a token revocation.
func (p *ACLTokenDeleted) Validate() error { return ValidateAccessor("accessor", p.Accessor) }

// Validate checks a policy's name, description and the shape of its
// capabilities (resource:action); which capabilities exist is the ACL
// package's to say.
func (p *ACLPolicySet) Validate() error {
	if err := ValidateID("policy name", p.Name); err != nil {
		return err
	}
	if len(p.Description) > MaxDescriptionLen {
		return fieldErr("description", truncate(p.Description), fmt.Sprintf("at most %d characters", MaxDescriptionLen))
	}
	for _, c := range p.Description {
		if c < 0x20 || c == 0x7f {
			return fieldErr("description", strconv.Quote(truncate(p.Description)), "no control characters")
		}
	}
	if len(p.Capabilities) == 0 {
		return fieldErr("capability", "", "a policy grants at least one capability")
	}
	if len(p.Capabilities) > MaxPolicyCapabilities {
		return fieldErr("capability", strconv.Itoa(len(p.Capabilities)), fmt.Sprintf("at most %d", MaxPolicyCapabilities))
	}
	for _, c := range p.Capabilities {
		if !capabilityShape(c) {
			return fieldErr("capability", truncate(c), "a capability is resource:action in lower case, such as guest:read")
		}
	}
	return nil
}

// capabilityShape reports whether s looks like a capability: two runs of
// a-z joined by one ':', 32 bytes at most.
func capabilityShape(s string) bool {
	if len(s) > 32 {
		return false
	}
	colon := -1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z':
		case c == ':' && colon < 0:
			colon = i
		default:
			return false
		}
	}
	return colon > 0 && colon < len(s)-1
}

// Validate checks a policy deletion.
func (p *ACLPolicyDeleted) Validate() error { return ValidateID("policy name", p.Name) }

// Validate checks a join token as the log keeps it.
func (p *NodeJoinTokenCreated) Validate() error {
	if err := ValidateAccessor("accessor", p.Accessor); err != nil {
		return err
	}
	if err := ValidateID("node id", p.Node); err != nil {
		return err
	}
	if p.ExpiresAt.IsZero() {
		return fieldErr("expires_at", "", "a join token needs an expiry time")
	}
	return validateSecretHash(p.SecretHash)
}

// Validate checks an enrollment.
func (p *NodeEnrolled) Validate() error {
	if err := ValidateID("node id", p.Node); err != nil {
		return err
	}
	if err := ValidateAccessor("join_token", p.JoinToken); err != nil {
		return err
	}
	return validateHex("fingerprint", p.Fingerprint, minFingerprintLen, maxFingerprintLen,
		fmt.Sprintf("a certificate fingerprint is %d to %d lower-case hex digits", minFingerprintLen, maxFingerprintLen))
}
