package scheduler

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrNoFit is wrapped by the *FitError CheckPlacement returns when the guest
// no longer fits on the node.
var ErrNoFit = errors.New("corral: guest does not fit on node")

// ReasonCode says why a node cannot take a guest. Codes are stable and
// append-only: the API and `corral guest show` may key on String().
type ReasonCode uint8

const (
	// ReasonNone means the guest fits.
	ReasonNone ReasonCode = iota
	ReasonStatusUnknown
	ReasonDown
	ReasonIneligible
	ReasonDraining
	// ReasonDriver: Subject is the missing driver.
	ReasonDriver
	// ReasonConstraint: Subject is the constraint, Other what the node has
	// ("rack=b", or "no label rack").
	ReasonConstraint
	// ReasonSpread: Subject is the shared "key=value", Other the guest
	// already on the node.
	ReasonSpread
	// ReasonCPUMissing: the explicit cpuset names CPU, which the node lacks.
	ReasonCPUMissing
	// ReasonCPUReserved: CPU is among the node's host-reserved CPUs.
	ReasonCPUReserved
	// ReasonCPUTaken: CPU is pinned by guest Other.
	ReasonCPUTaken
	// ReasonPinnedCPUs: Need exclusive CPUs, Free unpinned allocatable ones.
	ReasonPinnedCPUs
	// ReasonSharedCPUs: pinning would shrink the shared pool below the
	// Need vCPUs already on it; Free is what it would shrink to.
	ReasonSharedCPUs
	// ReasonMemory: Need bytes, Free bytes (after reserve and overcommit).
	ReasonMemory
	// ReasonCPU: Need shared vCPUs, Free shared vCPUs.
	ReasonCPU
)

var reasonNames = [...]string{
	ReasonNone:          "fits",
	ReasonStatusUnknown: "status-unknown",
	ReasonDown:          "down",
	ReasonIneligible:    "ineligible",
	ReasonDraining:      "draining",
	ReasonDriver:        "driver",
	ReasonConstraint:    "constraint",
	ReasonSpread:        "spread",
	ReasonCPUMissing:    "cpu-missing",
	ReasonCPUReserved:   "cpu-reserved",
	ReasonCPUTaken:      "cpu-taken",
	ReasonPinnedCPUs:    "pinned-cpus",
	ReasonSharedCPUs:    "shared-cpus",
	ReasonMemory:        "memory",
	ReasonCPU:           "cpu",
}

// String returns the stable token for the code, such as "memory".
func (c ReasonCode) String() string {
	if int(c) < len(reasonNames) {
		return reasonNames[c]
	}
	return "ReasonCode(" + strconv.Itoa(int(c)) + ")"
}

// NodeReason is why one node cannot take one guest. It is data, formatted
// only when printed, so that a failure over thousands of nodes stays cheap.
type NodeReason struct {
	Node string
	Code ReasonCode
	// Need and Free are quantities for the resource codes: bytes for
	// ReasonMemory, vCPUs or CPUs for the CPU codes. Free may be negative
	// on a node that is already over-committed.
	Need, Free int64
	// CPU is the CPU id for ReasonCPUMissing, ReasonCPUReserved and
	// ReasonCPUTaken.
	CPU int
	// Subject and Other are described with each code.
	Subject, Other string
}

// String formats the reason as `corral guest show` prints it, in Nomad's
// style: "node n2: needs 2048 MiB memory, 512 MiB free".
func (r NodeReason) String() string { return "node " + r.Node + ": " + r.Detail() }

// Detail is String without the "node ID: " prefix.
func (r NodeReason) Detail() string {
	switch r.Code {
	case ReasonNone:
		return "fits"
	case ReasonStatusUnknown:
		return "status unknown"
	case ReasonDown:
		return "down"
	case ReasonIneligible:
		return "ineligible"
	case ReasonDraining:
		return "draining"
	case ReasonDriver:
		return "driver " + r.Subject + " not present"
	case ReasonConstraint:
		return "constraint " + r.Subject + " not met (" + r.Other + ")"
	case ReasonSpread:
		return fmt.Sprintf("spread-by: guest %s with %s is already there", r.Other, r.Subject)
	case ReasonCPUMissing:
		return fmt.Sprintf("cpuset %s: cpu %d not on node", r.Subject, r.CPU)
	case ReasonCPUReserved:
		return fmt.Sprintf("cpuset %s: cpu %d reserved for the host", r.Subject, r.CPU)
	case ReasonCPUTaken:
		return fmt.Sprintf("cpuset %s: cpu %d pinned by %s", r.Subject, r.CPU, r.Other)
	case ReasonPinnedCPUs:
		return fmt.Sprintf("needs %s, %d free", plural(r.Need, "exclusive CPU"), max(r.Free, 0))
	case ReasonSharedCPUs:
		return fmt.Sprintf("pinning would leave %d shared vCPUs for the %d in use", max(r.Free, 0), r.Need)
	case ReasonMemory:
		return fmt.Sprintf("needs %s memory, %s free", formatBytes(r.Need), formatBytes(max(r.Free, 0)))
	case ReasonCPU:
		return fmt.Sprintf("needs %s, %d free", plural(r.Need, "vCPU"), max(r.Free, 0))
	}
	return r.Code.String()
}

// FitError is CheckPlacement's answer when the node cannot take the guest.
type FitError struct {
	Guest  string
	Reason NodeReason
}

func (e *FitError) Error() string {
	return "corral: guest " + e.Guest + " does not fit: " + e.Reason.String()
}

// Unwrap makes errors.Is(err, ErrNoFit) hold.
func (e *FitError) Unwrap() error { return ErrNoFit }

// plural returns "1 vCPU" or "2 vCPUs".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.FormatInt(n, 10) + " " + noun + "s"
}

const mib = 1 << 20

// formatBytes prints whole MiB as "2048 MiB", anything else with a decimal.
func formatBytes(b int64) string {
	if b%mib == 0 {
		return strconv.FormatInt(b/mib, 10) + " MiB"
	}
	return strconv.FormatFloat(float64(b)/mib, 'f', 1, 64) + " MiB"
}
