package scheduler

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidConstraint is wrapped by every error about a constraint or a
// label that does not parse.
var ErrInvalidConstraint = errors.New("corral: invalid constraint")

// Op is the comparison a Constraint makes.
type Op uint8

const (
	// OpEqual holds when the node has the label with exactly this value.
	OpEqual Op = iota + 1
	// OpNotEqual holds when the node lacks the label or has another value.
	OpNotEqual
)

// String returns "=" or "!=".
func (o Op) String() string {
	switch o {
	case OpEqual:
		return "="
	case OpNotEqual:
		return "!="
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Constraint restricts a guest to nodes whose labels match, as
// `--constraint rack=a` or `--constraint rack!=a`.
type Constraint struct {
	Key   string
	Op    Op
	Value string
}

// maxLabelLen bounds label keys and values, as Kubernetes does for names.
const maxLabelLen = 63

// ParseConstraint parses "key=value" or "key!=value". White space around the
// whole and around key and value is ignored. Keys and values are 1 to 63
// characters of letters, digits, '.', '_', '-' and '/', starting with a
// letter or digit. The error wraps ErrInvalidConstraint and says what to
// write instead. String is its inverse.
func ParseConstraint(s string) (Constraint, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Constraint{}, fmt.Errorf("%w: empty; write key=value or key!=value, as in rack=a", ErrInvalidConstraint)
	}
	eq := strings.IndexByte(t, '=')
	if eq < 0 {
		return Constraint{}, fmt.Errorf("%w: %q has no operator; write %s=VALUE or %s!=VALUE", ErrInvalidConstraint, t, t, t)
	}
	c := Constraint{Op: OpEqual, Key: t[:eq], Value: t[eq+1:]}
	if eq > 0 && t[eq-1] == '!' {
		c.Op, c.Key = OpNotEqual, t[:eq-1]
	}
	c.Key, c.Value = strings.TrimSpace(c.Key), strings.TrimSpace(c.Value)
	if c.Key == "" {
		return Constraint{}, fmt.Errorf("%w: %q has no label key before %s; write KEY%sVALUE, as in rack%sa", ErrInvalidConstraint, t, c.Op, c.Op, c.Op)
	}
	if c.Value == "" {
		return Constraint{}, fmt.Errorf("%w: %q has no value after %s; write %s%sVALUE", ErrInvalidConstraint, t, c.Op, c.Key, c.Op)
	}
	if err := c.Validate(); err != nil {
		return Constraint{}, err
	}
	return c, nil
}

// ParseConstraints parses each element with ParseConstraint, as for a
// repeated `--constraint` flag, and reports the first error.
func ParseConstraints(ss []string) ([]Constraint, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	cs := make([]Constraint, 0, len(ss))
	for _, s := range ss {
		c, err := ParseConstraint(s)
		if err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// String returns the constraint as ParseConstraint reads it, "rack!=a".
func (c Constraint) String() string { return c.Key + c.Op.String() + c.Value }

// Validate reports whether c could have come from ParseConstraint.
func (c Constraint) Validate() error {
	if c.Op != OpEqual && c.Op != OpNotEqual {
		return fmt.Errorf("%w: %s has unknown operator %d; use OpEqual or OpNotEqual", ErrInvalidConstraint, c.Key, c.Op)
	}
	if err := checkLabelPart("label key", c.Key); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidConstraint, c.String(), err)
	}
	if err := checkLabelPart("value", c.Value); err != nil {
		return fmt.Errorf("%w: %q: %v; write %s%sVALUE", ErrInvalidConstraint, c.String(), err, c.Key, c.Op)
	}
	return nil
}

// matches reports whether a node with these labels satisfies c.
func (c Constraint) matches(labels map[string]string) bool {
	v, ok := labels[c.Key]
	if c.Op == OpEqual {
		return ok && v == c.Value
	}
	return !ok || v != c.Value
}

// checkLabelPart checks a label key or value; what names it in the error,
// which callers wrap with their own sentinel.
func checkLabelPart(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > maxLabelLen {
		return fmt.Errorf("%s %q is %d characters; the limit is %d", what, s, len(s), maxLabelLen)
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		alnum := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("%s %q must start with a letter or digit", what, s)
		}
		if !alnum && b != '.' && b != '_' && b != '-' && b != '/' {
			return fmt.Errorf("%s %q contains %q; use letters, digits, '.', '_', '-' and '/'", what, s, rune(b))
		}
	}
	return nil
}

// causeError carries its own message yet matches, with errors.Is, both the
// sentinel of the layer that reports it and the cause's, without repeating
// the cause's "corral: " prefix.
type causeError struct {
	msg    string
	causes []error
}

func (e *causeError) Error() string   { return e.msg }
func (e *causeError) Unwrap() []error { return e.causes }

// wrapCause returns "<sentinel>: <context>: <cause without corral: prefix>".
func wrapCause(sentinel, cause error, context string) error {
	msg := sentinel.Error() + ": " + context + ": " + strings.TrimPrefix(cause.Error(), "corral: ")
	return &causeError{msg: msg, causes: []error{sentinel, cause}}
}
