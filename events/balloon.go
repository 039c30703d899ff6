package events

import (
	"fmt"
	"strconv"
	"strings"
)

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
// then pressed its memory cgroup towards the target by reclaim (the
// guest's balloon_enforce knob): Reclaimed is how far its usage fell,
// UsageAfter what it held afterwards, and ReclaimError the kernel's answer
// when it could not reclaim all the way (the guest keeps its memory and
// its hard limit; corral never gets it OOM-killed).
type GuestBalloonNoncompliant struct {
	Node         string `json:"node"`
	Generation   uint64 `json:"generation"`
	Target       int64  `json:"target"`
	Actual       int64  `json:"actual"`
	Usage        int64  `json:"usage"`
	WaitedMs     int64  `json:"waited_ms"`
	Enforced     bool   `json:"enforced,omitempty"`
	Reclaimed    int64  `json:"reclaimed,omitempty"`
	UsageAfter   int64  `json:"usage_after,omitempty"`
	ReclaimError string `json:"reclaim_error,omitempty"`
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
// memory (its max_memory in the scope the change reaches), as virsh setmem
// does against the domain's max memory: positive,
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
		return fieldErr("memory", FormatSize(target), fmt.Sprintf("at most the guest's maximum memory, %s (raise it first with corral setmaxmem NAME SIZE --config; it takes effect at the next start)", FormatSize(maxMem)))
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
	switch {
	case p.WaitedMs < 0:
		return fieldErr("waited_ms", fmt.Sprint(p.WaitedMs), "how long the agent waited, not negative")
	case p.Reclaimed < 0 || p.UsageAfter < 0:
		return fieldErr("reclaimed", fmt.Sprint(p.Reclaimed, "/", p.UsageAfter), "bytes reclaimed and held after, not negative")
	case !p.Enforced && (p.Reclaimed != 0 || p.UsageAfter != 0 || p.ReclaimError != ""):
		return fieldErr("enforced", "false", "a reclaim's outcome belongs to an enforced report")
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

// maxMemoryKnob parses a maximum memory: a size within what a guest
// definition may hold.
func maxMemoryKnob(s string) (string, error) {
	n, err := ParseSize("max_memory", s)
	if err != nil {
		return "", err
	}
	if n < MinMemoryBytes || n > MaxMemoryBytes {
		return "", fieldErr("max_memory", FormatSize(n), fmt.Sprintf("use %s to %s", FormatSize(MinMemoryBytes), FormatSize(MaxMemoryBytes)))
	}
	return strconv.FormatInt(n, 10), nil
}

// onOff parses a switch knob: on or off (yes/no, true/false, 1/0 too).
func onOff(field string) func(string) (string, error) {
	return func(s string) (string, error) {
		switch strings.ToLower(s) {
		case "on", "yes", "true", "1":
			return "on", nil
		case "off", "no", "false", "0":
			return "off", nil
		}
		return "", fieldErr(field, s, "use on or off")
	}
}
