package cgroupdriver

import (
	"fmt"
)

// Kind is the driver class of a guest; it is the middle level of the
// mini-hierarchy <partition>/corral/<kind>/<guest>.
type Kind string

const (
	KindQEMU    Kind = "qemu"
	KindLXC     Kind = "lxc"
	KindProcess Kind = "process"
)

// Kinds lists every guest kind, in the order their directories are created.
func Kinds() []Kind { return []Kind{KindQEMU, KindLXC, KindProcess} }

// agentGroup is the leaf under the corral root that holds the agent itself
// after [Driver.Reserve]. It cannot clash with a guest: guests live one level
// deeper.
const agentGroup = "agent"

// Guest names one guest's groups. Build it from a validated ID; every method
// of [Driver] validates it again before a path is built.
type Guest struct {
	Kind Kind   `json:"kind"`
	ID   string `json:"id"`
	// Partition names the cluster partition the guest lives in
	// (<partition>/corral/partitions/<name>/<kind>/<guest>), or "" for
	// none (<partition>/corral/<kind>/<guest>). See [Driver.ApplyPartition].
	Partition string `json:"partition,omitempty"`
}

func (g Guest) String() string {
	if g.Partition != "" {
		return partitionsGroup + "/" + g.Partition + "/" + string(g.Kind) + "/" + g.ID
	}
	return string(g.Kind) + "/" + g.ID
}

// Validate reports whether g has a known kind, a valid ID and, if it has
// one, a valid partition name.
func (g Guest) Validate() error {
	if g.Partition != "" {
		if err := ValidatePartitionName(g.Partition); err != nil {
			return err
		}
	}
	switch g.Kind {
	case KindQEMU, KindLXC, KindProcess:
	default:
		return fmt.Errorf("%w: kind %q is not one of qemu, lxc, process", ErrInvalidGuestID, g.Kind)
	}
	return ValidateGuestID(g.ID)
}

// ValidateGuestID reports whether id matches [a-z0-9][a-z0-9-]{0,62}, the
// only guest IDs from which corral builds paths (DESIGN invariant 8). It
// refuses ".", "..", "/", NUL, control characters, upper case and names over
// 63 bytes with an error naming the offending character or length.
func ValidateGuestID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidGuestID)
	}
	if len(id) > 63 {
		return fmt.Errorf("%w: %d bytes long, at most 63 allowed", ErrInvalidGuestID, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return fmt.Errorf("%w: %q: byte %d (%q) not allowed; use [a-z0-9][a-z0-9-]{0,62}", ErrInvalidGuestID, id, i, c)
		}
	}
	return nil
}
