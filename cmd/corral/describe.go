package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/events"
)

// eventDetails says in one line what an event changed: the DETAILS column
// of `corral events` and `corral guest history`.
func eventDetails(e events.Event) string {
	var d string
	switch p := e.Payload.(type) {
	case *events.NodeRegistered:
		d = fmt.Sprintf("cpus=%d memory=%s drivers=%s", p.CPUs, formatBytes(p.MemoryBytes), formatMap(p.Drivers))
		if p.Address != "" {
			d += " address=" + p.Address
		}
	case *events.GuestDefined:
		d = fmt.Sprintf("driver=%s memory=%s vcpus=%d cpu_shares=%d", p.Driver, formatBytes(p.MemoryBytes), p.VCPUs, p.CPUShares)
		if len(p.Command) > 0 {
			d += " command=" + strconv.Quote(joinCommand(p.Command))
		}
		for _, kv := range [][2]string{{"rootfs", p.Rootfs}, {"kernel", p.Kernel}, {"initrd", p.Initrd}} {
			if kv[1] != "" {
				d += " " + kv[0] + "=" + kv[1]
			}
		}
		if len(p.Labels) > 0 {
			d += " labels=" + formatMap(p.Labels)
		}
		if p.Restart != nil {
			d += " restart=" + strconv.Quote(formatPolicy(p.Restart))
		}
	case *events.GuestRestarting:
		d = fmt.Sprintf("node=%s generation=%d: restart %d of %d in %v after %s", p.Node, p.Generation, p.Attempt, p.Of,
			time.Duration(p.DelayMs)*time.Millisecond, p.Reason)
	case *events.GuestRestartsExhausted:
		d = fmt.Sprintf("node=%s generation=%d: %d restarts in %v used up, the last run ended: %s", p.Node, p.Generation, p.Attempts,
			time.Duration(p.IntervalMs)*time.Millisecond, p.Reason)
	case *events.GuestPlaced:
		d = fmt.Sprintf("node=%s generation=%d", p.Node, e.Index) // a placement's generation is its index
	case *events.GuestStarted:
		d = fmt.Sprintf("node=%s generation=%d pid=%d", p.Node, p.Generation, p.PID)
		if p.Restart > 0 {
			d += fmt.Sprintf(" restart=%d", p.Restart)
		}
	case *events.GuestExited:
		d = fmt.Sprintf("node=%s generation=%d %s", p.Node, p.Generation, formatExit(p))
		if p.Restart > 0 {
			d += fmt.Sprintf(" restart=%d", p.Restart)
		}
	case *events.GuestTuned:
		d = fmt.Sprintf("%s %s → %s", p.Knob, formatKnob(p.Knob, p.Old), formatKnob(p.Knob, p.New))
		switch {
		case p.Live && !p.Persistent:
			d += " (live only)"
		case p.Persistent && !p.Live:
			d += " (config only)"
		}
	case *events.GuestTuningFailed:
		d = fmt.Sprintf("%s %s refused on %s (generation %d): %s", p.Knob, formatKnob(p.Knob, p.Value), p.Node, p.Generation, p.Error)
	case *events.GuestBalloon:
		d = fmt.Sprintf("node=%s target=%s actual=%s usage=%s compliant=%t", p.Node, formatBytes(p.Target), formatBytes(p.Actual), formatBytes(p.Usage), p.Compliant)
	case *events.GuestBalloonNoncompliant:
		d = fmt.Sprintf("node=%s target=%s actual=%s usage=%s after %s", p.Node, formatBytes(p.Target), formatBytes(p.Actual), formatBytes(p.Usage), time.Duration(p.WaitedMs)*time.Millisecond)
	case *events.GuestTuningApplied:
		d = fmt.Sprintf("%s %s applied on %s (generation %d)", p.Knob, formatKnob(p.Knob, p.Value), p.Node, p.Generation)
	case *events.GuestDrift:
		d = fmt.Sprintf("%s was %s on %s, want %s", p.Knob, formatKnob(p.Knob, p.Found), p.Node, formatKnob(p.Knob, p.Expected))
		if p.Corrected {
			d += ": put back"
		} else {
			d += ": not put back"
		}
	case *events.GuestLimitHit:
		d = fmt.Sprintf("node=%s generation=%d limit_hits=%d (+%d)", p.Node, p.Generation, p.LimitHits, p.Delta)
	case *events.NodeUsage:
		var mem uint64
		for _, g := range p.Guests {
			mem += g.MemoryBytes
		}
		d = fmt.Sprintf("guests=%d memory=%s interval=%s", len(p.Guests), formatBytes(int64(mem)), time.Duration(p.IntervalMs)*time.Millisecond)
	case *events.NodeEligibility:
		d = p.Eligibility
		if !p.Deadline.IsZero() {
			d += " deadline=" + formatTime(p.Deadline)
		}
		if p.MaxParallel > 0 {
			d += " max_parallel=" + strconv.Itoa(p.MaxParallel)
		}
	case *events.NodeCleanup:
		d = "removed " + strings.Join(p.Removed, ", ")
	case *events.SchedulerConfig:
		d = fmt.Sprintf("algorithm=%s cpu_overcommit=%g memory_overcommit=%g", p.Algorithm, p.CPUOvercommit, p.MemoryOvercommit)
	case *events.ServerRegistered:
		d = fmt.Sprintf("id=%s raft=%s http=%s", p.ID, p.RaftAddr, p.HTTPAddr)
	case *events.ACLTokenCreated:
		d = fmt.Sprintf("accessor=%s name=%s policies=%s", p.Accessor, p.Name, strings.Join(p.Policies, ","))
		if p.Bootstrap {
			d += " bootstrap"
		}
	case *events.ACLTokenDeleted:
		d = "accessor=" + p.Accessor
	case *events.ACLPolicySet:
		d = fmt.Sprintf("name=%s capabilities=%s", p.Name, strings.Join(p.Capabilities, ","))
	case *events.ACLPolicyDeleted:
		d = "name=" + p.Name
	case *events.NodeJoinTokenCreated:
		d = fmt.Sprintf("accessor=%s node=%s expires=%s", p.Accessor, p.Node, formatTime(p.ExpiresAt))
	case *events.NodeEnrolled:
		d = fmt.Sprintf("join_token=%s fingerprint=%s", p.JoinToken, p.Fingerprint)
	}
	if e.Reason != "" {
		if d != "" {
			d += " "
		}
		d += "reason=" + strconv.Quote(e.Reason)
	}
	return d
}

// subjectOf names what an event is about: guest/NAME, node/ID or both.
func subjectOf(e events.Event) string {
	var parts []string
	if e.Guest != "" {
		parts = append(parts, "guest/"+e.Guest)
	}
	if e.Node != "" {
		parts = append(parts, "node/"+e.Node)
	}
	return strings.Join(parts, " ")
}

// formatExit says how a guest's process ended.
func formatExit(x *events.GuestExited) string {
	var parts []string
	switch {
	case x.Error != "":
		parts = append(parts, "failed: "+x.Error)
	case x.Signal != "":
		parts = append(parts, "killed by signal "+x.Signal)
	default:
		parts = append(parts, fmt.Sprintf("exit code %d", x.Code))
	}
	if x.OOMKilled {
		parts = append(parts, "OOM-killed")
	}
	return strings.Join(parts, ", ")
}

// memoryKnobs hold sizes in bytes (or "unlimited").
var memoryKnobs = map[string]bool{"memory": true, "max_memory": true, "hard_limit": true, "soft_limit": true, "swap_hard_limit": true}

// formatKnob prints a canonical knob value for people: sizes with units.
func formatKnob(knob, v string) string {
	if v == "" {
		return "unset" // no nodeset, no pin, no target: the default
	}
	if memoryKnobs[knob] && v != events.Unlimited {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return formatBytes(n)
		}
	}
	return v
}

func formatMap(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}
