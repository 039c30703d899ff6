package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// restartFlags are guest create's restart and reschedule policy flags,
// as Nomad's restart and reschedule blocks.
type restartFlags struct {
	mode               string
	attempts           int
	interval           time.Duration
	delay              time.Duration
	backoff            float64
	rescheduleAttempts int
	rescheduleInterval time.Duration
	limitHits          uint64
}

func (r *restartFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&r.mode, "restart", events.RestartNo, "restart the guest where it runs when it ends: no, on-failure (non-zero exit, signal, OOM kill, failed start) or always (any end it was not asked for)")
	f.IntVar(&r.attempts, "restart-attempts", events.DefaultRestartAttempts, "restarts allowed within --restart-interval before the guest is rescheduled")
	f.DurationVar(&r.interval, "restart-interval", events.DefaultRestartInterval, "the sliding interval restart attempts count in")
	f.DurationVar(&r.delay, "restart-delay", events.DefaultRestartDelay, "wait before the first restart (at most 1m)")
	f.Float64Var(&r.backoff, "restart-backoff", events.DefaultRestartBackoff, "each further restart waits delay × this factor once more, capped at 1m (1: no backoff)")
	f.IntVar(&r.rescheduleAttempts, "reschedule-attempts", events.DefaultRescheduleAttempts, "once the restarts are used up, place the guest on another node at most this often within --reschedule-interval (0: never)")
	f.DurationVar(&r.rescheduleInterval, "reschedule-interval", events.DefaultRescheduleInterval, "the sliding interval reschedules count in")
	f.Uint64Var(&r.limitHits, "restart-on-limit-hits", 0, "restart the guest when its memory limit was hit at least this often within one usage interval (0: never)")
}

// request is the policy the flags ask for; nil for --restart no. A policy
// flag without --restart on-failure|always is a mistake, said so.
func (r *restartFlags) request(cmd *cobra.Command) (*api.RestartRequest, error) {
	f := cmd.Flags()
	changed := func(name string) bool { return f.Changed(name) }
	if r.mode == events.RestartNo || r.mode == "" {
		for _, name := range []string{"restart-attempts", "restart-interval", "restart-delay", "restart-backoff", "reschedule-attempts", "reschedule-interval", "restart-on-limit-hits"} {
			if changed(name) {
				return nil, usagef("--%s needs --restart on-failure or --restart always", name)
			}
		}
		return nil, nil
	}
	req := &api.RestartRequest{Mode: r.mode, LimitHits: r.limitHits}
	if changed("restart-attempts") {
		req.Attempts = &r.attempts
	}
	if changed("reschedule-attempts") {
		req.RescheduleAttempts = &r.rescheduleAttempts
	}
	if changed("restart-backoff") {
		if r.backoff == 0 {
			return nil, &events.FieldError{Field: "restart-backoff", Value: "0", Want: "use a factor from 1 (no backoff) to 10"}
		}
		req.Backoff = r.backoff
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		into *string
	}{{"restart-interval", r.interval, &req.Interval}, {"restart-delay", r.delay, &req.Delay}, {"reschedule-interval", r.rescheduleInterval, &req.RescheduleInterval}} {
		if changed(d.name) {
			*d.into = d.v.String()
		}
	}
	return req, nil
}

// formatPolicy says a restart policy in the flags' words.
func formatPolicy(p *events.RestartPolicy) string {
	if p == nil {
		return "no"
	}
	s := fmt.Sprintf("%s, %d attempts per %v, delay %v × %s per attempt (at most %v)",
		p.Mode, p.Attempts, p.Interval(), p.Delay(), strconv.FormatFloat(p.Backoff, 'g', -1, 64), events.MaxRestartDelay)
	if p.RescheduleAttempts > 0 {
		s += fmt.Sprintf("; then rescheduled to another node, %d per %v", p.RescheduleAttempts, p.RescheduleInterval())
	} else {
		s += "; never rescheduled"
	}
	if p.LimitHits > 0 {
		s += fmt.Sprintf("; restarted after %d memory limit hits in one usage interval", p.LimitHits)
	}
	return s
}

// restartRows adds a guest's restart policy and what came of it to show.
func restartRows(t *table, g *api.Guest) {
	t.row("Restart:", formatPolicy(g.Restart))
	r := g.Restarts
	if r.Total > 0 {
		last := ""
		if r.Last != nil {
			last = fmt.Sprintf("; last: attempt %d of %d on %s after %s", r.Last.Attempt, r.Last.Of, r.Last.Node, r.Last.Reason)
		}
		t.row("Restarts:", fmt.Sprintf("%d (%d of this placement)%s", r.Total, r.Run, last))
	}
	if r.Exhausted != nil {
		t.row("Restarts used up:", fmt.Sprintf("on %s after %d restarts in %v: %s", r.ExhaustedOn, r.Exhausted.Attempts,
			time.Duration(r.Exhausted.IntervalMs)*time.Millisecond, r.Exhausted.Reason))
	}
	if len(r.Reschedules) > 0 {
		t.row("Rescheduled:", fmt.Sprintf("%d times, the last at %s", len(r.Reschedules), r.Reschedules[len(r.Reschedules)-1].Format(time.RFC3339)))
	}
	if r.Rescheduled != "" {
		t.row("Waiting:", r.Rescheduled+", avoiding "+r.Avoid)
	}
	if r.Stuck != "" {
		t.row("Not restarted:", r.Stuck)
	}
}
