package scheduler

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrInvalidGuest is wrapped by every error about a guest specification that
// can never be scheduled as written.
var ErrInvalidGuest = errors.New("corral: invalid guest")

// maxBytes bounds memory sizes (4 PiB) so that capacity times the largest
// overcommit ratio still fits in an int64.
const maxBytes = 1 << 52

// maxVCPUs bounds a guest's vCPUs; more than there can be CPU ids is a typo.
const maxVCPUs = MaxCPUID + 1

// Guest is a guest waiting to be placed: what it needs and where it may go.
// Schedule and CheckPlacement read it and never modify it.
type Guest struct {
	// Name identifies the guest; the API has validated its syntax.
	Name string
	// Driver is the driver that runs it (process, lxc, qemu); the node must
	// list it.
	Driver string
	// MemoryBytes is the memory the guest is guaranteed, at least 1.
	MemoryBytes uint64
	// VCPUs is the number of virtual CPUs, at least 1.
	VCPUs int
	// Labels are the guest's own labels, matched by SpreadBy.
	Labels map[string]string
	// Constraints must all hold on the chosen node's labels.
	Constraints []Constraint
	// SpreadBy, when set, is a label key the guest must have: no two guests
	// with the same value for it share a node (in either direction: a guest
	// without SpreadBy still avoids nodes where a guest spreading by that key
	// has its value).
	SpreadBy string
	// CPUSet, when set, pins the guest to exactly these CPUs, which must be
	// free, exclusive and not reserved for the host on the node. It may hold
	// fewer CPUs than VCPUs (vCPUs then share them) but not more.
	CPUSet CPUSet
	// PinCPUs, when positive, asks the scheduler to choose that many free
	// exclusive CPUs on the node (at most VCPUs). CPUSet and PinCPUs are
	// mutually exclusive.
	PinCPUs int
	// Prefer names the node to try first, the one the guest last ran on
	// (its images, logs and caches are there): it is chosen whenever it
	// is feasible, and otherwise the guest is placed as any other.
	Prefer string
}

// Pinned reports whether the guest asks for exclusive CPUs.
func (g *Guest) Pinned() bool { return g.pinCount() > 0 }

// pinCount is the number of exclusive CPUs the guest takes.
func (g *Guest) pinCount() int {
	if len(g.CPUSet) > 0 {
		return len(g.CPUSet)
	}
	return g.PinCPUs
}

// Validate checks the guest on its own, without a cluster: every error names
// the field and says what to change, and wraps ErrInvalidGuest (and
// ErrInvalidConstraint or ErrInvalidCPUSet where one applies). The API calls
// it before a guest becomes an event; Schedule calls it again and reports an
// invalid guest as a Failure with Err set.
func (g *Guest) Validate() error {
	if g.Name == "" {
		return fmt.Errorf("%w: Name is empty", ErrInvalidGuest)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: guest %q: %s", ErrInvalidGuest, g.Name, fmt.Sprintf(format, args...))
	}
	if g.Driver == "" {
		return bad("Driver is empty; name the driver that runs it (process, lxc or qemu)")
	}
	if g.MemoryBytes == 0 {
		return bad("MemoryBytes is 0; give the guest memory, as in --memory 512MiB")
	}
	if g.MemoryBytes > maxBytes {
		return bad("MemoryBytes %d is more than any node can have (%d)", g.MemoryBytes, uint64(maxBytes))
	}
	if g.VCPUs < 1 || g.VCPUs > maxVCPUs {
		return bad("VCPUs is %d; give between 1 and %d vCPUs", g.VCPUs, maxVCPUs)
	}
	for _, k := range sortedKeys(g.Labels) {
		if err := checkLabelPart("label key", k); err != nil {
			return fmt.Errorf("%w: guest %q: Labels: %v", ErrInvalidGuest, g.Name, err)
		}
		if err := checkLabelPart("label value", g.Labels[k]); err != nil {
			return fmt.Errorf("%w: guest %q: Labels[%s]: %v", ErrInvalidGuest, g.Name, k, err)
		}
	}
	for i, c := range g.Constraints {
		if err := c.Validate(); err != nil {
			return wrapCause(ErrInvalidGuest, err, fmt.Sprintf("guest %q: Constraints[%d]", g.Name, i))
		}
	}
	if g.SpreadBy != "" {
		if err := checkLabelPart("spread-by key", g.SpreadBy); err != nil {
			return fmt.Errorf("%w: guest %q: SpreadBy: %v", ErrInvalidGuest, g.Name, err)
		}
		if _, ok := g.Labels[g.SpreadBy]; !ok {
			return bad("SpreadBy is %q but the guest has no label %s; add --label %s=VALUE or drop --spread-by", g.SpreadBy, g.SpreadBy, g.SpreadBy)
		}
	}
	if len(g.CPUSet) > 0 && g.PinCPUs != 0 {
		return bad("CPUSet %s and PinCPUs %d are both set; give an explicit --cpuset or ask for --vcpupin N, not both", g.CPUSet, g.PinCPUs)
	}
	if err := g.CPUSet.check(); err != nil {
		return wrapCause(ErrInvalidGuest, err, fmt.Sprintf("guest %q: CPUSet", g.Name))
	}
	if n := len(g.CPUSet); n > g.VCPUs {
		return fmt.Errorf("%w: guest %q: CPUSet %s has %d CPUs but the guest has only %d vCPUs to fill them; use a cpuset of at most %d CPUs or raise VCPUs to %d",
			ErrInvalidGuest, g.Name, g.CPUSet, n, g.VCPUs, g.VCPUs, n)
	}
	if g.PinCPUs < 0 || g.PinCPUs > g.VCPUs {
		return bad("PinCPUs is %d but the guest has %d vCPUs; pin between 1 and %d CPUs, or 0 for none", g.PinCPUs, g.VCPUs, g.VCPUs)
	}
	return nil
}

// feasibilityKey identifies the node-class-level requirements (driver and
// constraints), so guests that share them share one class evaluation.
func (g *Guest) feasibilityKey() string {
	if len(g.Constraints) == 0 {
		return g.Driver
	}
	var b strings.Builder
	b.WriteString(g.Driver)
	for _, c := range g.Constraints {
		b.WriteByte(0)
		b.WriteString(c.String())
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
