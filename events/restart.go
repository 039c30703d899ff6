package events

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Restart modes, as `corral guest create --restart` spells them.
const (
	RestartNo        = "no"
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"
)

// Restart policy defaults and bounds. A policy in the log always carries
// its values: the defaults are filled in when the guest is created.
const (
	DefaultRestartAttempts    = 3
	DefaultRestartInterval    = 5 * time.Minute
	DefaultRestartDelay       = time.Second
	DefaultRestartBackoff     = 2.0
	DefaultRescheduleAttempts = 1
	DefaultRescheduleInterval = time.Hour
	// MaxRestartDelay caps the backed-off wait before a restart; a
	// --restart-delay above it is refused.
	MaxRestartDelay = time.Minute
	// MaxRestartAttempts bounds attempts per interval, restarts and
	// reschedules alike.
	MaxRestartAttempts = 100
	// MaxRestartBackoff bounds the backoff factor.
	MaxRestartBackoff = 10.0
)

// RestartPolicy is a guest's restart and reschedule policy, as Nomad's
// restart and reschedule blocks: the agent restarts the guest in place
// up to Attempts times within a sliding IntervalMs, waiting DelayMs ×
// Backoff^(n-1) before the n-th (at most [MaxRestartDelay]); once they
// are used up the cluster places it on another node, up to
// RescheduleAttempts times within a sliding RescheduleIntervalMs.
type RestartPolicy struct {
	// Mode is on-failure (after a non-zero exit, a signal, an OOM kill or
	// a failed start) or always (after any end the guest was not asked
	// for). A guest without a policy is never restarted ("no").
	Mode                 string  `json:"mode"`
	Attempts             int     `json:"attempts"`
	IntervalMs           int64   `json:"interval_ms"`
	DelayMs              int64   `json:"delay_ms"`
	Backoff              float64 `json:"backoff"`
	RescheduleAttempts   int     `json:"reschedule_attempts,omitempty"`
	RescheduleIntervalMs int64   `json:"reschedule_interval_ms,omitempty"`
	// LimitHits, when positive, restarts the guest when its memory limit
	// was hit at least that often within one usage interval.
	LimitHits uint64 `json:"limit_hits,omitempty"`
}

// Interval, Delay and RescheduleInterval are the policy's durations.
func (p *RestartPolicy) Interval() time.Duration {
	return time.Duration(p.IntervalMs) * time.Millisecond
}
func (p *RestartPolicy) Delay() time.Duration { return time.Duration(p.DelayMs) * time.Millisecond }
func (p *RestartPolicy) RescheduleInterval() time.Duration {
	return time.Duration(p.RescheduleIntervalMs) * time.Millisecond
}

// DelayFor is the wait before the attempt-th restart (1 for the first):
// Delay × Backoff^(attempt-1), at most MaxRestartDelay.
func (p *RestartPolicy) DelayFor(attempt int) time.Duration {
	d := float64(p.Delay()) * math.Pow(max(p.Backoff, 1), float64(max(attempt-1, 0)))
	if d >= float64(MaxRestartDelay) || math.IsInf(d, 0) || math.IsNaN(d) {
		return MaxRestartDelay
	}
	return time.Duration(d)
}

// Validate checks a policy as the log keeps it.
func (p *RestartPolicy) Validate() error {
	switch p.Mode {
	case RestartOnFailure, RestartAlways:
	default:
		return fieldErr("restart", p.Mode, "use no, on-failure or always")
	}
	if p.Attempts < 0 || p.Attempts > MaxRestartAttempts {
		return fieldErr("restart-attempts", strconv.Itoa(p.Attempts), fmt.Sprintf("use 0 to %d restarts per interval", MaxRestartAttempts))
	}
	if p.IntervalMs <= 0 {
		return fieldErr("restart-interval", p.Interval().String(), "give a positive interval, such as 5m")
	}
	if p.DelayMs < 0 || p.Delay() > MaxRestartDelay {
		return fieldErr("restart-delay", p.Delay().String(), "use 0 to "+MaxRestartDelay.String())
	}
	if p.Backoff < 1 || p.Backoff > MaxRestartBackoff || math.IsNaN(p.Backoff) {
		return fieldErr("restart-backoff", strconv.FormatFloat(p.Backoff, 'g', -1, 64), fmt.Sprintf("use a factor from 1 (no backoff) to %g", MaxRestartBackoff))
	}
	if p.RescheduleAttempts < 0 || p.RescheduleAttempts > MaxRestartAttempts {
		return fieldErr("reschedule-attempts", strconv.Itoa(p.RescheduleAttempts), fmt.Sprintf("use 0 to %d reschedules per interval", MaxRestartAttempts))
	}
	if p.RescheduleAttempts > 0 && p.RescheduleIntervalMs <= 0 {
		return fieldErr("reschedule-interval", p.RescheduleInterval().String(), "give a positive interval, such as 1h")
	}
	return nil
}

// GuestRestarting is an agent's report that it restarts a guest in place,
// within its restart policy, after the run that ended: it is committed
// with that run's guest.exited, so the guest keeps its node's capacity
// across the restart. The restarted run keeps the generation (a
// generation is one placement on one node) and is the next run of it
// (see GuestStarted.Restart). Attempt counts the restarts within the
// policy's interval, Of is the policy's attempts; the agent starts the
// guest again after DelayMs.
type GuestRestarting struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Attempt    int    `json:"attempt"`
	Of         int    `json:"of"`
	DelayMs    int64  `json:"delay_ms"`
	// Reason is why the run ended: "OOM-killed", "exit code 3", "start
	// failed: ...".
	Reason string `json:"reason"`
}

// GuestRestartsExhausted is an agent's report that a guest's run ended
// and its restart policy allows no more restarts on the node: Attempts
// restarts within the interval were used, and Reason is why the last run
// ended. Committed with the exit, it lets the cluster place the guest on
// another node within its reschedule policy.
type GuestRestartsExhausted struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Attempts   int    `json:"attempts"`
	IntervalMs int64  `json:"interval_ms"`
	Reason     string `json:"reason"`
}

// Validate checks a restart report.
func (p *GuestRestarting) Validate() error {
	if p.Attempt < 1 || p.Attempt > p.Of || p.Of > MaxRestartAttempts {
		return fieldErr("attempt", fmt.Sprintf("%d of %d", p.Attempt, p.Of), fmt.Sprintf("an attempt is 1 to of, of at most %d", MaxRestartAttempts))
	}
	if p.DelayMs < 0 || time.Duration(p.DelayMs)*time.Millisecond > MaxRestartDelay {
		return fieldErr("delay_ms", strconv.FormatInt(p.DelayMs, 10), "use 0 to "+MaxRestartDelay.String())
	}
	return validateReason(p.Reason)
}

// Validate checks an exhausted-restarts report.
func (p *GuestRestartsExhausted) Validate() error {
	if p.Attempts < 0 || p.Attempts > MaxRestartAttempts || p.IntervalMs < 0 {
		return fieldErr("attempts", strconv.Itoa(p.Attempts), fmt.Sprintf("use 0 to %d with a non-negative interval", MaxRestartAttempts))
	}
	return validateReason(p.Reason)
}

func validateReason(r string) error {
	if r == "" || len(r) > MaxTuningError {
		return fieldErr("reason", truncate(r), fmt.Sprintf("say why the run ended in 1 to %d bytes", MaxTuningError))
	}
	return nil
}

func (*GuestRestarting) EventType() Type        { return TypeGuestRestarting }
func (*GuestRestartsExhausted) EventType() Type { return TypeGuestRestartsExhausted }
