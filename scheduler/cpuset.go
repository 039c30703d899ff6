package scheduler

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// MaxCPUID is the largest CPU id a CPUSet may name. Linux's NR_CPUS tops out
// at 8192, and the bound keeps a hostile "0-999999999" from allocating.
const MaxCPUID = 8191

// ErrInvalidCPUSet is wrapped by every error about a cpuset that does not
// parse or is not in canonical form.
var ErrInvalidCPUSet = errors.New("corral: invalid cpuset")

// CPUSet is a set of CPU ids in ascending order without duplicates, the
// canonical form [ParseCPUSet] returns. A nil or empty CPUSet is the empty set.
// Code that builds a CPUSet by hand must keep it canonical; [Guest.Validate]
// and [NewSnapshot] refuse one that is not.
type CPUSet []int

// ParseCPUSet parses the Linux list format used by cpuset.cpus and by
// `--cpuset`: comma-separated CPU ids and inclusive ranges, such as "0-3,6".
// Overlapping elements are merged. Surrounding white space is ignored; the
// empty string is an error, because an empty exclusive cpuset is always a
// mistake at the places this is called.
func ParseCPUSet(s string) (CPUSet, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return nil, fmt.Errorf("%w: empty; write CPU ids and ranges such as 0-3,6", ErrInvalidCPUSet)
	}
	var seen [(MaxCPUID + 1) / 64]uint64
	n := 0
	for part := range strings.SplitSeq(t, ",") {
		if part == "" {
			return nil, fmt.Errorf("%w: %q has an empty element; separate ids and ranges with single commas, as in 0-3,6", ErrInvalidCPUSet, t)
		}
		lo, hi := part, part
		if i := strings.IndexByte(part, '-'); i >= 0 {
			lo, hi = part[:i], part[i+1:]
		}
		a, err := parseCPUID(t, lo)
		if err != nil {
			return nil, err
		}
		b, err := parseCPUID(t, hi)
		if err != nil {
			return nil, err
		}
		if b < a {
			return nil, fmt.Errorf("%w: %q: range %s runs backwards; write it as %d-%d", ErrInvalidCPUSet, t, part, b, a)
		}
		for c := a; c <= b; c++ {
			if seen[c/64]&(1<<(c%64)) == 0 {
				seen[c/64] |= 1 << (c % 64)
				n++
			}
		}
	}
	set := make(CPUSet, 0, n)
	for w, word := range seen {
		for ; word != 0; word &= word - 1 {
			set = append(set, w*64+bits.TrailingZeros64(word))
		}
	}
	return set, nil
}

func parseCPUID(whole, s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: %q has a range with a missing end; write ranges as FIRST-LAST, as in 0-3", ErrInvalidCPUSet, whole)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%w: %q: %q is not a CPU id; use decimal ids and ranges such as 0-3,6", ErrInvalidCPUSet, whole, s)
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || v > MaxCPUID {
		return 0, fmt.Errorf("%w: %q: cpu %s is beyond the largest supported id %d", ErrInvalidCPUSet, whole, s, MaxCPUID)
	}
	return v, nil
}

// String returns the canonical list form, such as "0-3,6"; the empty set
// gives "". ParseCPUSet(s.String()) returns s for every non-empty canonical s.
func (s CPUSet) String() string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(s[j]))
		}
		i = j + 1
	}
	return b.String()
}

// Contains reports whether cpu is in the set.
func (s CPUSet) Contains(cpu int) bool {
	_, ok := slices.BinarySearch(s, cpu)
	return ok
}

// check returns an error unless s is canonical: ascending, no duplicates,
// every id in 0..MaxCPUID.
func (s CPUSet) check() error {
	for i, c := range s {
		if c < 0 || c > MaxCPUID {
			return fmt.Errorf("%w: cpu %d is outside 0-%d", ErrInvalidCPUSet, c, MaxCPUID)
		}
		if i > 0 && c <= s[i-1] {
			return fmt.Errorf("%w: ids must be ascending without duplicates (%d follows %d); build it with ParseCPUSet", ErrInvalidCPUSet, c, s[i-1])
		}
	}
	return nil
}
