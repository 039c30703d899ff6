package events

import "fmt"

// The balloon, as virsh setmem means it: a guest's current memory, at most
// its maximum (GuestDefined.MemoryBytes). A qemu guest's balloon driver is
// asked to give the rest back to the host (the carrot), and its memory
// cgroup's soft limit follows the target plus QEMU's own room, so the
// kernel reclaims from it first under pressure (the stick). A process or
// lxc guest has no balloon: its soft limit is the target itself, and its
// usage is what it holds.

// GuestBalloon is the agent's report of a guest's balloon: the target it
// set, the memory the guest holds by the balloon's count (qemu's
// query-balloon actual; for a guest without a balloon, its memory cgroup's
// usage), the memory cgroup's usage, and whether the guest is within
// [BalloonTolerance] of the target. It is reported when the target changes
// and when compliance changes, not on every sample.
type GuestBalloon struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Target     int64  `json:"target"`
	Actual     int64  `json:"actual"`
	Usage      int64  `json:"usage"`
	Compliant  bool   `json:"compliant"`
}

// GuestBalloonNoncompliant says a guest has not come within tolerance of
// its balloon target for WaitedMs since the target was set (the agent's
// --balloon-timeout): reported once per target. Enforced says the agent
// then pressed its memory cgroup towards the target by reclaim.
type GuestBalloonNoncompliant struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Target     int64  `json:"target"`
	Actual     int64  `json:"actual"`
	Usage      int64  `json:"usage"`
	WaitedMs   int64  `json:"waited_ms"`
	Enforced   bool   `json:"enforced,omitempty"`
}

func (*GuestBalloon) EventType() Type             { return TypeGuestBalloon }
func (*GuestBalloonNoncompliant) EventType() Type { return TypeGuestBalloonNoncompliant }

// MinBalloon is the smallest balloon target: below it no Linux guest
// keeps running, and QEMU's balloon refuses nothing.
const MinBalloon = 16 << 20

// BalloonTolerance is how far above its target a guest may stay and count
// as compliant: the larger of 4 MiB and 5% of the target, as a balloon
// driver gives memory back in pages and a guest's usage moves.
func BalloonTolerance(target int64) int64 { return max(4<<20, target/20) }

// BalloonCompliant says whether a guest holding actual bytes complies with
// target. Below the target is compliant: a balloon only takes memory away.
func BalloonCompliant(target, actual int64) bool {
	return actual <= target+BalloonTolerance(target)
}

// CheckBalloon checks a balloon target against the guest's maximum
// memory, as virsh setmem does against the domain's max memory: positive,
// at least [MinBalloon], at most max. max of 0 means the driver's default
// (for qemu [DefaultQEMUMemory]); a guest without a memory size has no
// maximum to check against.
func CheckBalloon(target, maxMem int64, driver string) error {
	if maxMem <= 0 && driver == DriverQEMU {
		maxMem = DefaultQEMUMemory
	}
	switch {
	case target < MinBalloon:
		return fieldErr("memory", FormatSize(target), fmt.Sprintf("a balloon target of at least %s", FormatSize(MinBalloon)))
	case maxMem > 0 && target > maxMem:
		return fieldErr("memory", FormatSize(target), fmt.Sprintf("at most the guest's memory, %s (its --memory at create)", FormatSize(maxMem)))
	}
	return nil
}

func (p *GuestBalloon) Validate() error {
	return validateBalloon(p.Node, p.Target, p.Actual, p.Usage)
}

func (p *GuestBalloonNoncompliant) Validate() error {
	if err := validateBalloon(p.Node, p.Target, p.Actual, p.Usage); err != nil {
		return err
	}
	if p.WaitedMs < 0 {
		return fieldErr("waited_ms", fmt.Sprint(p.WaitedMs), "how long the agent waited, not negative")
	}
	return nil
}

func validateBalloon(node string, target, actual, usage int64) error {
	if err := ValidateID("node", node); err != nil {
		return err
	}
	switch {
	case target <= 0:
		return fieldErr("target", fmt.Sprint(target), "the balloon target in bytes, positive")
	case actual < 0:
		return fieldErr("actual", fmt.Sprint(actual), "the guest's memory by the balloon, in bytes, not negative")
	case usage < 0:
		return fieldErr("usage", fmt.Sprint(usage), "the memory cgroup's usage in bytes, not negative")
	}
	return nil
}
