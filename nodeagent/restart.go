package nodeagent

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/events"
)

// This file is the agent's side of restart policies: deciding, when a run
// ended, whether to restart it in place or to say the node's restarts ran
// out (a pure function), and holding the restarted run's start until its
// delay passed.

// RestartDecision is what the agent does after a guest's run ended.
type RestartDecision struct {
	// Restart: start the generation's next run after Delay; Attempt
	// counts the restarts within the policy's interval, this one
	// included, Of is the policy's attempts.
	Restart bool
	Attempt int
	Of      int
	Delay   time.Duration
	// Exhausted: the policy would restart it, but Attempt-1 restarts
	// within the interval used them up; the cluster may place it
	// elsewhere.
	Exhausted bool
	// Reason is why the run ended, as the events say it.
	Reason string
}

// DecideRestart decides what follows the end of a run reported by exit,
// for a guest the log wants as want (nil: the guest was asked to stop,
// its node is down, or it is no longer placed here, so nothing follows).
// past holds the times of this generation's earlier restarts on the
// node. It is pure.
//
// on-failure restarts after a non-zero exit, a signal, an OOM kill, an
// unknown exit or a failed start; always after any end. Neither restarts
// a guest asked to stop. Attempts count within the sliding interval
// ending at now.
func DecideRestart(want *DesiredGuest, exit *events.GuestExited, past []time.Time, now time.Time) RestartDecision {
	reason := ExitReason(exit)
	if want == nil || want.Definition.Restart == nil || want.Desired != DesiredRunning {
		return RestartDecision{Reason: reason}
	}
	p := want.Definition.Restart
	if p.Mode == events.RestartOnFailure && !failed(exit) {
		return RestartDecision{Reason: reason}
	}
	since := now.Add(-p.Interval())
	recent := 0
	for _, t := range past {
		if t.After(since) {
			recent++
		}
	}
	if recent >= p.Attempts {
		return RestartDecision{Exhausted: true, Attempt: recent, Of: p.Attempts, Reason: reason}
	}
	n := recent + 1
	return RestartDecision{Restart: true, Attempt: n, Of: p.Attempts, Delay: p.DelayFor(n), Reason: reason}
}

func failed(e *events.GuestExited) bool {
	return e.Error != "" || e.Code != 0 || e.Signal != "" || e.OOMKilled
}

// ExitReason says in a few words why a run ended: "OOM-killed", "exit
// code 3", "killed by SIGTERM", "start failed: ...".
func ExitReason(e *events.GuestExited) string {
	var s string
	switch {
	case e.Error != "":
		s = e.Error
		if !strings.HasPrefix(s, "start failed") && !strings.HasPrefix(s, "memory limit") {
			s = "start failed: " + strings.TrimPrefix(s, "corral: ")
		}
	case e.OOMKilled:
		s = "OOM-killed"
	case e.Signal != "":
		s = "killed by " + e.Signal
	case e.Code == -1:
		s = "exit status unknown"
	default:
		s = "exit code " + strconv.Itoa(e.Code)
	}
	return events.TruncateError(s)
}

// restartItems are the reports that go with a run's exit: a restart or
// the end of restarts on this node, or none.
func (a *Agent) restartItems(g *guest, dec RestartDecision) []Report {
	switch {
	case dec.Restart:
		return []Report{{Guest: g.name, Payload: &events.GuestRestarting{Node: a.cfg.NodeID, Generation: g.gen,
			Attempt: dec.Attempt, Of: dec.Of, DelayMs: dec.Delay.Milliseconds(), Reason: dec.Reason}}}
	case dec.Exhausted:
		var interval int64
		if g.policy != nil {
			interval = g.policy.IntervalMs
		}
		return []Report{{Guest: g.name, Payload: &events.GuestRestartsExhausted{Node: a.cfg.NodeID, Generation: g.gen,
			Attempts: dec.Attempt, IntervalMs: interval, Reason: dec.Reason}}}
	}
	return nil
}

// restartLog is what the agent remembers of one guest's restarts on its
// node: the times of the current generation's restarts, and the run that
// may start only from notBefore. Agent memory only: an agent that
// restarts begins counting again.
type restartLog struct {
	gen       uint64
	times     []time.Time
	run       int
	notBefore time.Time
}

// pastRestarts returns the times of the restarts of g's generation.
func (a *Agent) pastRestarts(g *guest) []time.Time {
	if l := a.restarts[g.name]; l != nil && l.gen == g.gen {
		return l.times
	}
	return nil
}

// restarted records a restart the log took: run may start after delay.
func (a *Agent) restarted(g *guest, dec RestartDecision, now time.Time) {
	l := a.restarts[g.name]
	if l == nil || l.gen != g.gen {
		l = &restartLog{gen: g.gen}
		a.restarts[g.name] = l
	}
	// Only the times within the longest interval matter.
	if g.policy != nil {
		since := now.Add(-g.policy.Interval())
		l.times = slices.DeleteFunc(l.times, func(t time.Time) bool { return !t.After(since) })
	}
	l.times = append(l.times, now)
	l.run, l.notBefore = g.run+1, now.Add(dec.Delay)
	a.log.Info("restarting the guest", "guest", g.name, "generation", g.gen, "run", l.run,
		"attempt", fmt.Sprintf("%d of %d", dec.Attempt, dec.Of), "delay", dec.Delay, "reason", dec.Reason)
}

// restartWait is how long a start must wait for its restart delay: the
// run the log asks for is one this agent restarted and its delay has not
// passed. A start by hand (another run) never waits.
func (a *Agent) restartWait(act Action, now time.Time) time.Duration {
	l := a.restarts[act.Guest]
	if l == nil || act.Desired == nil || l.gen != act.Generation || l.run != act.Desired.Restart {
		return 0
	}
	return l.notBefore.Sub(now)
}

// wakeAt makes sure a pass runs once wait has passed; the timer is the
// loop's, and pokes it.
func (a *Agent) wakeAt(wait time.Duration) {
	if a.restartTimer == nil {
		a.restartTimer = time.AfterFunc(wait, a.poke)
		return
	}
	a.restartTimer.Reset(wait)
}

// endForLimitHits ends a run whose memory limit was hit hits times in
// one usage interval, at least its policy's LimitHits: a storm the guest
// does not get out of on its own. The end is a failure whatever the exit
// code, and the restart that follows says why.
func (a *Agent) endForLimitHits(ctx context.Context, g *guest, hits uint64) {
	if g.phase != PhaseRunning || g.inst == nil || g.ended != "" {
		return
	}
	g.ended = fmt.Sprintf("memory limit hit %d times in %v", hits, a.cfg.UsageInterval)
	a.log.Warn("ending the guest: its memory limit is hit over and over", "guest", g.name, "generation", g.gen, "hits", hits)
	st, err := g.inst.Stop(ctx, 0)
	if err != nil {
		a.log.Error("ending the guest", "guest", g.name, "err", err)
		return // it runs on; the next storm tries again
	}
	g.phase, g.exit = PhaseEnded, st
	a.poke()
}

// followPolicies keeps the held guests' restart policies as the log has
// them, for guests adopted from an earlier agent.
func (a *Agent) followPolicies(d Desired) {
	for i := range d.Guests {
		if g := a.guests[d.Guests[i].Name]; g != nil && g.gen == d.Guests[i].Generation {
			g.policy = d.Guests[i].Definition.Restart
		}
	}
}
