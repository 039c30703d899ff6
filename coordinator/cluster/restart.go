package cluster

import (
	"fmt"
	"slices"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// This file is the state's side of restart policies: the policy a create
// asks for, the agent's restart reports, and the reschedule that follows
// when a node's restarts ran out. The agent decides restarts in place
// (it sees the exits); the state decides reschedules, from the events
// alone (their times, written by whoever proposed them), so every server
// replays the same decision.

// NodeLabel is the label every node carries, in the scheduler's view
// only, with its own ID as the value: a reschedule avoids a node with the
// constraint NodeLabel!=ID.
const NodeLabel = "corral/node"

// restartPolicy turns a create's restart request into the policy the log
// keeps, defaults filled in; nil for none.
func restartPolicy(r *api.RestartRequest) (*events.RestartPolicy, error) {
	if r == nil {
		return nil, nil
	}
	if r.Mode == "" || r.Mode == events.RestartNo {
		if r.Attempts != nil || r.Interval != "" || r.Delay != "" || r.Backoff != 0 || r.RescheduleAttempts != nil || r.RescheduleInterval != "" || r.LimitHits != 0 {
			return nil, &events.FieldError{Field: "restart", Value: events.RestartNo,
				Want: "restart and reschedule attempts, intervals, delay, backoff and limit hits need --restart on-failure or --restart always"}
		}
		return nil, nil
	}
	p := &events.RestartPolicy{
		Mode: r.Mode, Attempts: events.DefaultRestartAttempts, Backoff: events.DefaultRestartBackoff,
		IntervalMs: events.DefaultRestartInterval.Milliseconds(), DelayMs: events.DefaultRestartDelay.Milliseconds(),
		RescheduleAttempts: events.DefaultRescheduleAttempts, RescheduleIntervalMs: events.DefaultRescheduleInterval.Milliseconds(),
		LimitHits: r.LimitHits,
	}
	if r.Attempts != nil {
		p.Attempts = *r.Attempts
	}
	if r.RescheduleAttempts != nil {
		p.RescheduleAttempts = *r.RescheduleAttempts
	}
	if r.Backoff != 0 {
		p.Backoff = r.Backoff
	}
	for _, d := range []struct {
		field, text string
		ms          *int64
	}{{"restart-interval", r.Interval, &p.IntervalMs}, {"restart-delay", r.Delay, &p.DelayMs}, {"reschedule-interval", r.RescheduleInterval, &p.RescheduleIntervalMs}} {
		if d.text == "" {
			continue
		}
		v, err := time.ParseDuration(d.text)
		if err != nil || v < 0 || v%time.Millisecond != 0 {
			return nil, &events.FieldError{Field: d.field, Value: d.text, Want: "give a duration in whole milliseconds, such as 500ms, 5m or 1h"}
		}
		*d.ms = v.Milliseconds()
	}
	if p.RescheduleAttempts == 0 {
		p.RescheduleIntervalMs = 0
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// applyGuestRestarting records an agent's restart in place: the run that
// ended (its guest.exited comes first, in the same report) is followed by
// the next run of the same generation, and the guest takes its node's
// capacity again, which the exit released a moment before in the same
// raft entry. Refused when the guest is not ended and asked to run, when
// its node is draining or down (it moves instead), or when the node no
// longer has room for it.
func (s *State) applyGuestRestarting(idx uint64, e *events.Event, p *events.GuestRestarting) error {
	g, err := s.current(e, p.Node, p.Generation)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if g.Restart == nil {
		return fmt.Errorf("%w: guest %q has no restart policy; it is not restarted", api.ErrConflict, g.Name)
	}
	if g.Desired != DesiredRunning || (g.Status != StatusExited && g.Status != StatusFailed) {
		return fmt.Errorf("%w: guest %q is %s and asked to be %s: only an ended guest asked to run is restarted", api.ErrConflict, g.Name, g.Status, g.Desired)
	}
	if s.movable(g.Node) {
		return fmt.Errorf("%w: guest %q is not restarted on node %q, which is draining or down: it is placed elsewhere", api.ErrConflict, g.Name, g.Node)
	}
	if !holdsCapacity(g) {
		if err := s.checkPlacement(g, &events.GuestPlaced{Node: g.Node, CPUs: g.CPUs}); err != nil {
			return fmt.Errorf("guest %q is not restarted on node %q: %w", g.Name, g.Node, err)
		}
	}
	c := *p
	g.Status = StatusPlaced
	g.Restarts.Run++
	g.Restarts.Total++
	g.Restarts.Last = &c
	g.ModifyIndex = idx
	s.refreshNode(g.Node)
	return nil
}

// applyGuestRestartsExhausted records that a guest's restarts ran out on
// its node, and reschedules it when its policy allows: it is taken off
// the node (whose agent removes what is left of it) and waits for a
// placement that avoids that node. Reschedules count within the policy's
// sliding interval, measured by the events' times. Otherwise it stays
// ended there, and Stuck says why.
func (s *State) applyGuestRestartsExhausted(idx uint64, e *events.Event, p *events.GuestRestartsExhausted) error {
	g, err := s.current(e, p.Node, p.Generation)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if g.Restart == nil {
		return fmt.Errorf("%w: guest %q has no restart policy", api.ErrConflict, g.Name)
	}
	if g.Status != StatusExited && g.Status != StatusFailed {
		return fmt.Errorf("%w: guest %q is %s: restarts run out only for an ended guest", api.ErrConflict, g.Name, g.Status)
	}
	c := *p
	r := &g.Restarts
	r.Exhausted, r.ExhaustedOn = &c, p.Node
	g.ModifyIndex = idx
	pol := g.Restart
	since := e.Time.Add(-pol.RescheduleInterval())
	recent := slices.DeleteFunc(slices.Clone(r.Reschedules), func(t time.Time) bool { return !t.After(since) })
	what := fmt.Sprintf("%d restarts on %s: %s", p.Attempts, p.Node, p.Reason)
	switch {
	case g.Desired != DesiredRunning:
		r.Stuck = fmt.Sprintf("ended after %s, and is asked to stay stopped", what)
		return nil
	case pol.RescheduleAttempts == 0:
		r.Stuck = fmt.Sprintf("not rescheduled after %s: its policy has --reschedule-attempts 0; fix the cause and start it again (corral guest start %s)", what, g.Name)
		return nil
	case len(recent) >= pol.RescheduleAttempts:
		r.Stuck = fmt.Sprintf("not rescheduled after %s: its %d reschedules per %v are used (the last at %s); fix the cause and start it again (corral guest start %s)",
			what, pol.RescheduleAttempts, pol.RescheduleInterval(), recent[len(recent)-1].Format(time.RFC3339), g.Name)
		return nil
	}
	r.Reschedules = append(recent, e.Time)
	r.Avoid, r.Stuck = p.Node, ""
	r.Rescheduled = "rescheduled after " + what
	s.unplace(g)
	s.setPending(g.Name, wantsPlacement(g))
	return nil
}

// avoid makes a guest's placement avoid the node its restarts ran out on.
func avoid(sg *scheduler.Guest, g *Guest) {
	if g.Restarts.Avoid == "" {
		return
	}
	if sg.Prefer == g.Restarts.Avoid {
		sg.Prefer = ""
	}
	sg.Constraints = append(slices.Clip(sg.Constraints), scheduler.Constraint{Key: NodeLabel, Op: scheduler.OpNotEqual, Value: g.Restarts.Avoid})
}

// currentRun refuses a report about an earlier run of the generation: a
// late or repeated one from before a restart.
func currentRun(g *Guest, run int) error {
	if run != g.Restarts.Run {
		return fmt.Errorf("%w: report about run %d of guest %q generation %d, but it was restarted and runs run %d", api.ErrConflict, run, g.Name, g.Generation, g.Restarts.Run)
	}
	return nil
}
