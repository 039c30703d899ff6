package scheduler

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns.
var ErrInvalidConfig = errors.New("corral: invalid scheduler config")

// Algorithm is how feasible nodes are ranked.
type Algorithm string

const (
	// Binpack prefers the node that is fullest after the placement, leaving
	// whole nodes free for large guests. It is the default.
	Binpack Algorithm = "binpack"
	// Spread prefers the emptiest node, evening out load across the cluster.
	Spread Algorithm = "spread"
)

// maxOvercommit bounds the overcommit ratios so capacity arithmetic cannot
// overflow; nobody runs a thousand vCPUs per core.
const maxOvercommit = 1000

// Config is the cluster-wide scheduler configuration, set by
// `corral operator scheduler set-config` or a server flag. The zero value is
// not valid: start from DefaultConfig.
type Config struct {
	// Algorithm ranks feasible nodes: Binpack or Spread.
	Algorithm Algorithm
	// CPUOvercommit is how many shared vCPUs one allocatable CPU carries,
	// at least 1. Exclusive (pinned) CPUs are never overcommitted.
	CPUOvercommit float64
	// MemoryOvercommit is how many bytes of guest memory one allocatable
	// byte carries, at least 1.
	MemoryOvercommit float64
	// CandidateLimit is how many feasible nodes are ranked per guest, as
	// Nomad's LimitIterator does; 0 ranks every feasible node. Nodes are
	// visited in a seeded order and a guest is declared unplaceable only
	// after every node was checked, whatever the limit.
	CandidateLimit int
	// MaxReasons is how many per-node reasons a Failure lists (the first
	// nodes by ID); 0 lists every node. Failure.Counts always covers every
	// node. A limit keeps a 5,000-node cluster from producing 5,000 lines per
	// pending guest.
	MaxReasons int
}

// DefaultConfig returns bin-pack with DefaultCPUOvercommit shared vCPUs per
// CPU and no memory overcommit, 32 candidates per guest
// and at most 20 listed reasons per unplaced guest.
func DefaultConfig() Config {
	return Config{
		Algorithm:        Binpack,
		CPUOvercommit:    DefaultCPUOvercommit,
		MemoryOvercommit: 1,
		CandidateLimit:   32,
		MaxReasons:       20,
	}
}

// Validate returns an error naming the first field that is out of range and
// what to set instead. It wraps ErrInvalidConfig.
func (c Config) Validate() error {
	if c.Algorithm != Binpack && c.Algorithm != Spread {
		return fmt.Errorf("%w: Algorithm %q is unknown; use %q or %q", ErrInvalidConfig, c.Algorithm, Binpack, Spread)
	}
	if err := checkRatio("CPUOvercommit", c.CPUOvercommit); err != nil {
		return err
	}
	if err := checkRatio("MemoryOvercommit", c.MemoryOvercommit); err != nil {
		return err
	}
	if c.CandidateLimit < 0 {
		return fmt.Errorf("%w: CandidateLimit %d is negative; use 0 to rank every feasible node", ErrInvalidConfig, c.CandidateLimit)
	}
	if c.MaxReasons < 0 {
		return fmt.Errorf("%w: MaxReasons %d is negative; use 0 to list every node", ErrInvalidConfig, c.MaxReasons)
	}
	return nil
}

func checkRatio(field string, r float64) error {
	switch {
	case math.IsNaN(r) || r < 1:
		return fmt.Errorf("%w: %s %v is below 1; use 1 for no overcommit, or a larger ratio such as 1.5 to overcommit", ErrInvalidConfig, field, r)
	case r > maxOvercommit:
		return fmt.Errorf("%w: %s %v is above %d; use a ratio between 1 and %d", ErrInvalidConfig, field, r, maxOvercommit, maxOvercommit)
	}
	return nil
}

// overcommitted returns floor(x × ratio), the capacity x allocatable units
// carry. Schedule and CheckPlacement both use it, so they always agree.
func overcommitted(x int64, ratio float64) int64 {
	if x <= 0 {
		return 0
	}
	if ratio == 1 {
		return x
	}
	return int64(math.Floor(float64(x) * ratio))
}

// DefaultCPUOvercommit is how many shared vCPUs one allocatable CPU
// carries unless the operator sets another ratio: guests rarely keep every
// vCPU busy, and OpenStack's and oVirt's defaults overcommit too. Pinned
// CPUs are exclusive and never overcommitted.
const DefaultCPUOvercommit = 4

// VCPUCapacity is how many shared vCPUs a node with alloc allocatable
// CPUs (its CPUs less its reserve, pinned ones included) carries under c.
func (c Config) VCPUCapacity(alloc int64) int64 { return overcommitted(alloc, c.CPUOvercommit) }

// MemoryCapacity is how much guest memory a node with alloc allocatable
// bytes (its memory less its reserve) carries under c.
func (c Config) MemoryCapacity(alloc int64) int64 { return overcommitted(alloc, c.MemoryOvercommit) }
