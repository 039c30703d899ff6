package events

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestACLPayloadsValidate(t *testing.T) {
	const (
		acc  = "0123456789abcdef0123456789abcdef"
		hash = "e8bc163c82eee18733288c7d4ac636db3a6deb013ef2d37b68322be20edc45cc"
	)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := []interface{ Validate() error }{
		&ACLTokenCreated{Accessor: acc, Name: "ci", Policies: []string{"read", "deploy"}, SecretHash: hash},
		&ACLTokenDeleted{Accessor: acc},
		&ACLPolicySet{Name: "deploy", Description: "CI deploys", Capabilities: []string{"guest:write", "future:thing"}},
		&ACLPolicyDeleted{Name: "deploy"},
		&NodeJoinTokenCreated{Accessor: acc, Node: "n1", SecretHash: hash, ExpiresAt: at},
		&NodeEnrolled{Node: "n1", JoinToken: acc, Fingerprint: "0011223344556677"},
	}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%T: %v", p, err)
		}
	}
	bad := map[string]interface{ Validate() error }{
		"short accessor":      &ACLTokenDeleted{Accessor: "abc"},
		"upper-case accessor": &ACLTokenDeleted{Accessor: strings.ToUpper(acc)},
		"accessor with path":  &ACLTokenDeleted{Accessor: "0123456789abcdef0123456789abc/.."},
		"no name":             &ACLTokenCreated{Accessor: acc, Policies: []string{"read"}, SecretHash: hash},
		"control in name":     &ACLTokenCreated{Accessor: acc, Name: "a\nb", Policies: []string{"read"}, SecretHash: hash},
		"no policies":         &ACLTokenCreated{Accessor: acc, Name: "ci", SecretHash: hash},
		"policy twice":        &ACLTokenCreated{Accessor: acc, Name: "ci", Policies: []string{"read", "read"}, SecretHash: hash},
		"bad policy name":     &ACLTokenCreated{Accessor: acc, Name: "ci", Policies: []string{"../x"}, SecretHash: hash},
		"secret, not hash":    &ACLTokenCreated{Accessor: acc, Name: "ci", Policies: []string{"read"}, SecretHash: "crl_secret"},
		"too many policies": &ACLTokenCreated{Accessor: acc, Name: "ci", SecretHash: hash,
			Policies: strings.Split(strings.Repeat("p,", MaxTokenPolicies)+"q", ",")},
		"policy path name":    &ACLPolicySet{Name: "a/b", Capabilities: []string{"guest:read"}},
		"no capabilities":     &ACLPolicySet{Name: "p"},
		"capability shape":    &ACLPolicySet{Name: "p", Capabilities: []string{"guest:"}},
		"capability case":     &ACLPolicySet{Name: "p", Capabilities: []string{"Guest:read"}},
		"two colons":          &ACLPolicySet{Name: "p", Capabilities: []string{"a:b:c"}},
		"long description":    &ACLPolicySet{Name: "p", Capabilities: []string{"guest:read"}, Description: strings.Repeat("x", MaxDescriptionLen+1)},
		"control in desc":     &ACLPolicySet{Name: "p", Capabilities: []string{"guest:read"}, Description: "a\x1bb"},
		"delete bad name":     &ACLPolicyDeleted{Name: ""},
		"join without node":   &NodeJoinTokenCreated{Accessor: acc, SecretHash: hash, ExpiresAt: at},
		"join without expiry": &NodeJoinTokenCreated{Accessor: acc, Node: "n1", SecretHash: hash},
		"enroll bad node":     &NodeEnrolled{Node: "N1", JoinToken: acc, Fingerprint: "0011223344556677"},
		"enroll short print":  &NodeEnrolled{Node: "n1", JoinToken: acc, Fingerprint: "00"},
		"enroll bad token":    &NodeEnrolled{Node: "n1", JoinToken: "x", Fingerprint: "0011223344556677"},
	}
	for name, p := range bad {
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
}
