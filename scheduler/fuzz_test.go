package scheduler_test

import (
	"slices"
	"testing"
	"time"

	"github.com/corral-dev/corral/scheduler"
)

var zeroTime time.Time

// FuzzParseCPUSet: whatever the input, ParseCPUSet either refuses it or
// returns a canonical set that its String form parses back to.
func FuzzParseCPUSet(f *testing.F) {
	for _, s := range []string{"0", "0-3,6", " 6,0-1 ", "3-1", "8191", "8192", "0-", ",", "1,,2", "0-8191", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := scheduler.ParseCPUSet(s)
		if err != nil {
			return
		}
		if len(set) == 0 {
			t.Fatalf("ParseCPUSet(%q) accepted an empty set", s)
		}
		for i, c := range set {
			if c < 0 || c > scheduler.MaxCPUID || i > 0 && c <= set[i-1] {
				t.Fatalf("ParseCPUSet(%q) = %v is not canonical", s, set)
			}
		}
		again, err := scheduler.ParseCPUSet(set.String())
		if err != nil || !slices.Equal(again, set) {
			t.Fatalf("round trip of %q via %q: %v, %v", s, set.String(), again, err)
		}
	})
}

// FuzzParseConstraint: an accepted constraint validates and round-trips
// through String.
func FuzzParseConstraint(f *testing.F) {
	for _, s := range []string{"rack=a", "rack!=a", " rack != a ", "=a", "rack=", "a!b=c", "a=b!=c", "!=", "k=v=w", "x/y.z_1=-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := scheduler.ParseConstraint(s)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConstraint(%q) = %+v, which does not validate: %v", s, c, err)
		}
		again, err := scheduler.ParseConstraint(c.String())
		if err != nil || again != c {
			t.Fatalf("round trip of %q via %q: %+v, %v", s, c.String(), again, err)
		}
	})
}
