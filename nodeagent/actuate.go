package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// do performs one action. It is the only place that changes guests on the
// host, and runs on the Run goroutine, so calls for one guest never
// overlap. An action keyed to a generation the agent does not hold is
// ignored (invariant 5). It returns what it removed, for remove-orphan.
func (a *Agent) do(ctx context.Context, d Desired, act Action) string {
	g := a.guests[act.Guest]
	if act.Op != OpStart && act.Op != OpRemoveOrphan && !(act.Op == OpReportExited && act.Missing) {
		if g == nil || g.gen != act.Generation {
			return ""
		}
	}
	log := a.log.With("guest", act.Guest, "generation", act.Generation)
	switch act.Op {
	case OpStart:
		if g != nil && g.gen == act.Generation && g.phase == PhaseRunning {
			return ""
		}
		a.start(ctx, act)
	case OpReportStarted:
		a.reportStarted(ctx, g)
	case OpStop:
		st, err := g.inst.Stop(ctx, a.cfg.StopTimeout)
		if err != nil {
			log.Error("stopping the guest", "err", err)
			return ""
		}
		log.Info("guest stopped", "status", st.String())
		g.phase, g.exit = PhaseEnded, st
		a.reportExited(ctx, g, nil) // asked to stop: not restarted
	case OpReportExited:
		want := desiredOf(d, act.Guest)
		if act.Missing {
			g = &guest{name: act.Guest, kind: act.Kind, gen: act.Generation, phase: PhaseEnded, missing: true,
				exit: driver.ExitStatus{Code: -1, Err: driver.ErrExitUnknown}}
			if want != nil {
				g.run, g.policy = want.Restart, want.Definition.Restart
			}
			a.guests[g.name] = g
			log.Warn("the log says the guest runs here, but the agent has nothing of it")
		}
		if d.NodeDown {
			want = nil // its guests may be placed elsewhere: none restarts here
		}
		a.reportExited(ctx, g, want)
	case OpForget:
		delete(a.guests, g.name)
		a.metrics.guests.forget(g.name)
		if err := os.Remove(a.guestDir(g.name) + "/" + recordFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("removing the agent record", "err", err)
		}
	case OpDestroy:
		a.destroy(ctx, g)
		a.metrics.guests.forget(g.name)
		log.Info("guest destroyed")
	case OpTune:
		a.tune(ctx, g, act.Knobs)
	case OpThaw:
		if err := g.inst.Resume(ctx); err != nil {
			log.Error("thawing the guest", "err", err)
			return ""
		}
		g.frozen = false
		a.persist(g)
		log.Info("guest thawed")
	case OpFreeze:
		if err := g.inst.Suspend(ctx); err != nil {
			log.Error("freezing the guest", "err", err)
			return ""
		}
		g.frozen = true
		a.persist(g)
	case OpRemoveOrphan:
		var err error
		if act.Dir {
			err = os.RemoveAll(a.guestDir(act.Guest))
		} else {
			err = a.deps.Cgroups.RemoveOrphan(ctx, cgroupdriver.Guest{Kind: act.Kind, ID: act.Guest})
		}
		if err != nil {
			log.Error("removing an orphan", "kind", act.Kind, "dir", act.Dir, "err", err)
			return ""
		}
		log.Info("removed an orphan", "kind", act.Kind, "dir", act.Dir)
		return describeOrphan(act)
	}
	return ""
}

// start starts a guest's generation. A start that fails becomes an ended
// run with the error, reported as a failed start; the agent lives on.
func (a *Agent) start(ctx context.Context, act Action) {
	dg := act.Desired
	dir := a.guestDir(act.Guest)
	g := &guest{name: act.Guest, kind: act.Kind, partition: dg.Definition.Partition, gen: act.Generation, phase: PhaseRunning, applied: dg.Resources.Knobs(),
		run: dg.Restart, policy: dg.Definition.Restart}
	a.guests[g.name] = g
	fail := func(err error) {
		g.phase, g.startErr, g.inst = PhaseEnded, err, nil
		g.exit = driver.ExitStatus{Code: -1, Err: err}
		a.log.Warn("guest failed to start", "guest", g.name, "generation", g.gen, "err", err)
		a.reportExited(ctx, g, dg)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fail(fmt.Errorf("corral: guest state directory: %w", err))
		return
	}
	if err := a.deps.Drivers.Supports(dg.Definition.Driver); err != nil {
		fail(err)
		return
	}
	spec := driver.SpecFor(act.Guest, &dg.Definition, dir)
	spec.Resources = dg.Resources
	nw, err := a.networkFor(ctx, act.Guest, &dg.Definition)
	if err != nil {
		fail(err)
		return
	}
	spec.Network, g.net = nw, nw
	a.persist(g) // before the driver's record: a restarted agent must know the kind and generation
	inst, err := a.deps.Drivers.Start(ctx, spec)
	if errors.Is(err, driver.ErrAlreadyRunning) {
		inst, err = a.deps.Drivers.Adopt(ctx, spec)
	}
	if errors.Is(err, cgroupdriver.ErrFrozen) {
		// The node's groups are frozen (fenced): not the guest's fault.
		// Forget this try; a pass once they are thawed starts it.
		delete(a.guests, g.name)
		a.log.Warn("not starting the guest while its groups are frozen; retrying on a later pass", "guest", g.name, "err", err)
		return
	}
	if err != nil {
		fail(err)
		return
	}
	g.inst = inst
	a.watchDone(ctx, inst)
	a.log.Info("guest started", "guest", g.name, "generation", g.gen, "pid", inst.PID())
	a.reportStarted(ctx, g)
}

// destroy kills the guest, removes its groups, state directory and
// record, and forgets it.
func (a *Agent) destroy(ctx context.Context, g *guest) {
	var err error
	if g.inst != nil {
		err = g.inst.Destroy(ctx)
	} else if g.kind != "" {
		err = a.deps.Cgroups.Remove(ctx, g.cg())
	}
	if err != nil {
		a.log.Error("destroying the guest", "guest", g.name, "err", err)
		return // kept: the next pass tries again
	}
	if err := os.RemoveAll(a.guestDir(g.name)); err != nil {
		a.log.Error("removing the guest's state directory", "guest", g.name, "err", err)
	}
	a.releaseAddress(g.name)
	delete(a.guests, g.name)
}

// tune writes the changed knobs to the guest's groups and reports the
// values written. A knob the host refuses is reported once as
// guest.tuning_failed, with the host's error, and not retried until its
// desired value changes again.
func (a *Agent) tune(ctx context.Context, g *guest, knobs map[string]string) {
	write := maps.Clone(knobs)
	// The two limits are written together, as the kernel checks one
	// against the other: memory+swap must stay at least the memory limit
	// (v1), and memory.swap.max is their difference (v2).
	filled := false // a limit was taken from the host, not the log
	for _, pair := range [][2]string{{"swap_hard_limit", "hard_limit"}, {"hard_limit", "swap_hard_limit"}} {
		if _, ok := write[pair[0]]; ok {
			if v, ok := g.applied[pair[1]]; ok && write[pair[1]] == "" {
				write[pair[1]] = v
				filled = true
			}
		}
	}
	// A device dropped from a per-device blkio list keeps its setting on
	// the host unless written as 0.
	for k, v := range write {
		if events.IsDeviceKnob(k) {
			write[k] = events.DeviceListChange(k, g.applied[k], v)
		}
	}
	res, err := knobResources(write)
	var writes []cgroupdriver.Write
	if err == nil {
		writes, err = a.deps.Cgroups.Apply(g.cg(), res)
	}
	var fe *cgroupdriver.FieldError
	_, hard := knobs["hard_limit"]
	_, swap := knobs["swap_hard_limit"]
	if err != nil && filled && hard && !swap && errors.As(err, &fe) && (fe.Field == "swap_hard_limit" || fe.Field == "hard_limit") && len(writes) == 0 {
		// One memtune that raises both limits commits hard_limit first and
		// swap_hard_limit next; between the two, the new memory limit and
		// the old swap limit on the host may not go together. The log
		// never holds such a pair (TuneGuest refuses it), so this is the
		// moment between the two: wait for the other, report nothing.
		a.log.Debug("memory limits wait for their pair", "guest", g.name, "knobs", knobs, "err", err)
		return
	}
	vals := cgroupdriver.Applied(res, writes)
	if g.applied == nil {
		g.applied = map[string]string{}
	}
	maps.Copy(g.applied, vals)
	for k := range vals {
		delete(g.refused, k)
	}
	if err != nil {
		// Not retried, and not drift, until the log asks for another value.
		if g.refused == nil {
			g.refused = map[string]string{}
		}
		for k, v := range knobs {
			if _, ok := vals[k]; !ok {
				g.refused[k] = v
			}
		}
		a.log.Error("applying tuning", "guest", g.name, "knobs", knobs, "err", err)
	}
	a.persist(g)
	items := make([]Report, 0, len(knobs))
	for _, k := range slices.Sorted(maps.Keys(knobs)) {
		if v, ok := vals[k]; ok {
			items = append(items, Report{Guest: g.name, Payload: &events.GuestTuningApplied{
				Node: a.cfg.NodeID, Generation: g.gen, Knob: k, Value: v}})
		} else if err != nil {
			items = append(items, Report{Guest: g.name, Payload: &events.GuestTuningFailed{
				Node: a.cfg.NodeID, Generation: g.gen, Knob: k, Value: knobs[k], Error: knobError(err, k)}})
		}
	}
	if len(items) == 0 {
		return
	}
	if _, err := a.report(ctx, items); err != nil {
		a.log.Warn("reporting applied tuning", "guest", g.name, "err", err)
	}
}

// reportStarted sends guest.started once per run.
func (a *Agent) reportStarted(ctx context.Context, g *guest) {
	started := &events.GuestStarted{Node: a.cfg.NodeID, Generation: g.gen, PID: g.inst.PID(), Cgroups: g.inst.Cgroups(), Restart: g.run}
	startedNetwork(started, g.net)
	items := []Report{{Guest: g.name, Payload: started}}
	// The values the start wrote, so the log holds what the host holds
	// from the first moment, not only after a tuning.
	for _, k := range slices.Sorted(maps.Keys(g.applied)) {
		items = append(items, Report{Guest: g.name, Payload: &events.GuestTuningApplied{
			Node: a.cfg.NodeID, Generation: g.gen, Knob: k, Value: g.applied[k]}})
	}
	_, err := a.report(ctx, items)
	if err != nil && !errors.Is(err, ErrRefused) {
		a.log.Warn("reporting a start", "guest", g.name, "err", err)
		return // retried on the next pass
	}
	g.startReported = true
	a.persist(g)
}

// reportExited removes an ended run's groups (its log stays) and sends
// guest.exited once, with what follows within the guest's restart policy
// (restart.go) for want, the guest as the log wants it (nil when it was
// asked to stop); the run is kept until the log has the report.
func (a *Agent) reportExited(ctx context.Context, g *guest, want *DesiredGuest) {
	if g.inst != nil {
		if err := g.inst.Destroy(ctx); err != nil && !errors.Is(err, driver.ErrReleased) {
			a.log.Warn("removing the groups of an ended guest", "guest", g.name, "err", err)
		}
	}
	e := g.exit.Event(a.cfg.NodeID, g.gen)
	e.Restart = g.run
	if g.startErr != nil {
		e.Error = g.startErr.Error()
	}
	now := time.Now()
	if g.decision == nil { // decided once: a retried report says the same
		ended := *e
		if g.ended != "" {
			ended.Error = g.ended // the agent ended it: a failure, whatever the code
		}
		dec := DecideRestart(want, &ended, a.pastRestarts(g), now)
		g.decision = &dec
	}
	items := append([]Report{{Guest: g.name, Payload: e}}, a.restartItems(g, *g.decision)...)
	idx, err := a.report(ctx, items)
	switch {
	case errors.Is(err, ErrRefused):
		idx = 0 // the log will not take it: nothing to wait for
	case err != nil:
		a.log.Warn("reporting an exit", "guest", g.name, "err", err)
		return
	case g.decision.Restart:
		a.restarted(g, *g.decision, now)
	case g.decision.Exhausted:
		a.log.Warn("the guest's restarts on this node are used up", "guest", g.name, "generation", g.gen,
			"restarts", g.decision.Attempt, "reason", g.decision.Reason)
	}
	g.exitReported, g.exitIndex = true, idx
}

// desiredOf returns the guest named name in d, or nil.
func desiredOf(d Desired, name string) *DesiredGuest {
	for i := range d.Guests {
		if d.Guests[i].Name == name {
			return &d.Guests[i]
		}
	}
	return nil
}

// report sends items unless the node is fenced.
func (a *Agent) report(ctx context.Context, items []Report) (uint64, error) {
	if a.fenced.Load() {
		return 0, errFenced
	}
	return a.deps.Coordinator.Report(ctx, a.cfg.NodeID, a.secret, items)
}

func (a *Agent) reportCleanup(ctx context.Context, removed []string) {
	if _, err := a.report(ctx, []Report{{Payload: &events.NodeCleanup{Removed: removed}}}); err != nil {
		a.log.Warn("reporting a cleanup", "err", err)
	}
}

// knobError is what a failure report says about knob: the host's
// refusals of that knob when it named some (it checks every knob at once),
// else the whole error, cut to what an event may carry.
func knobError(err error, knob string) string {
	var mine []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			var fe *cgroupdriver.FieldError
			if errors.As(e, &fe) && fe.Field == knob {
				mine = append(mine, e.Error())
			}
		}
	}
	msg := err.Error()
	if len(mine) > 0 {
		msg = strings.Join(mine, "; ")
	}
	return events.TruncateError(msg)
}

// knobResources turns knob values, in the cgroup driver's text form, into
// the Resources that write them.
func knobResources(knobs map[string]string) (cgroupdriver.Resources, error) {
	var r cgroupdriver.Resources
	for _, k := range slices.Sorted(maps.Keys(knobs)) {
		if err := r.SetKnob(k, knobs[k]); err != nil {
			return r, fmt.Errorf("%w: %v", ErrBadDesired, err)
		}
	}
	return r, nil
}
