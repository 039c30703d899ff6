package cgroupdriver

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestValidateGuestID(t *testing.T) {
	for _, ok := range []string{"a", "0", "web-1", "a-", strings.Repeat("a", 63)} {
		if err := ValidateGuestID(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "/", "-a", "A", "a.b", "a\x00", "a\n", "é", strings.Repeat("a", 64), "a b"} {
		if err := ValidateGuestID(bad); !errors.Is(err, ErrInvalidGuestID) {
			t.Errorf("%q accepted (err %v)", bad, err)
		}
	}
	if err := (Guest{Kind: "vm", ID: "a"}).Validate(); !errors.Is(err, ErrInvalidGuestID) {
		t.Errorf("unknown kind accepted: %v", err)
	}
}

// TestValidateGuestIDProperty checks the hand-written validator against the
// regular expression of DESIGN invariant 8 on arbitrary strings.
func TestValidateGuestIDProperty(t *testing.T) {
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	rapid.Check(t, func(t *rapid.T) {
		id := rapid.OneOf(
			rapid.String(),
			rapid.StringMatching(`[a-z0-9][a-z0-9-]{0,70}`),
			rapid.StringMatching(`[a-z0-9./\-]{0,5}`),
		).Draw(t, "id")
		if got, want := ValidateGuestID(id) == nil, re.MatchString(id); got != want {
			t.Fatalf("ValidateGuestID(%q) accepts=%v, regexp says %v", id, got, want)
		}
	})
}
