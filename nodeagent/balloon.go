package nodeagent

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// The balloon watch: on every usage interval the agent sets each guest's
// balloon target (DesiredGuest.Memory) where it changed, and samples how
// much the guest holds, reporting guest.balloon when the target or the
// guest's compliance changes and guest.balloon_noncompliant once when the
// guest stays above the target for Config.BalloonTimeout. A guest whose
// balloon_enforce knob is on is then pressed down to its soft limit once
// (the target, for qemu plus QEMU's room) by reclaim, and the report says
// how much came back ([cgroupdriver.Driver.Reclaim]: its hard limit is put
// back and its OOM killer held off meanwhile, so corral never gets a guest
// OOM-killed; what the kernel cannot reclaim stays with the guest).

// balloonDevice is the part of an [Instance] a qemu guest adds;
// *driver.Instance has it (and fails with driver.ErrNoBalloon for other
// kinds, which the agent never asks).
type balloonDevice interface {
	SetBalloon(ctx context.Context, target int64) error
	BalloonActual(ctx context.Context) (int64, error)
}

// balloonWatch holds the balloon state of every guest with a target. It
// is used on the Run goroutine only.
type balloonWatch struct {
	guests map[string]*balloonState
}

// balloonState is one guest's balloon under one target.
type balloonState struct {
	gen    uint64
	target int64
	setAt  time.Time
	// reported is set once a guest.balloon for this target was sent;
	// compliant is the compliance it said.
	reported, compliant bool
	noncompliantSent    bool
}

// step is the pure part of a sample: what to report about a guest
// holding actual bytes (usage in its memory cgroup) at now.
func (st *balloonState) step(now time.Time, timeout time.Duration, node string, actual, usage int64) []events.Payload {
	ok := events.BalloonCompliant(st.target, actual)
	var out []events.Payload
	if !st.reported || ok != st.compliant {
		out = append(out, &events.GuestBalloon{Node: node, Generation: st.gen, Target: st.target, Actual: actual, Usage: usage, Compliant: ok})
		st.reported, st.compliant = true, ok
	}
	if !ok && !st.noncompliantSent && now.Sub(st.setAt) >= timeout {
		out = append(out, &events.GuestBalloonNoncompliant{Node: node, Generation: st.gen, Target: st.target, Actual: actual,
			Usage: usage, WaitedMs: now.Sub(st.setAt).Milliseconds()})
		st.noncompliantSent = true
	}
	if ok {
		st.noncompliantSent = false // a later relapse is reported again
	}
	return out
}

// watchBalloons sets changed balloon targets and reports what the guests
// hold. It runs on the Run goroutine, on the usage interval.
func (a *Agent) watchBalloons(ctx context.Context, w *balloonWatch, now time.Time) {
	a.dmu.Lock() // the watch goroutine folds updates into desired
	listed, desired := a.listed, a.desired
	a.dmu.Unlock()
	if a.fenced.Load() || !listed {
		return
	}
	if w.guests == nil {
		w.guests = map[string]*balloonState{}
	}
	want := make(map[string]*DesiredGuest, len(desired.Guests))
	for i := range desired.Guests {
		want[desired.Guests[i].Name] = &desired.Guests[i]
	}
	var items []Report
	for _, name := range slices.Sorted(maps.Keys(a.guests)) {
		g := a.guests[name]
		dp, ok := want[name]
		st := w.guests[name]
		if !ok || g.phase != PhaseRunning || g.inst == nil || g.frozen || dp.Generation != g.gen {
			if st != nil && (!ok || st.gen != g.gen) {
				delete(w.guests, name)
			}
			continue
		}
		d := *dp
		if d.Memory <= 0 && st == nil {
			continue // no balloon, and none to lift: most guests, at every interval
		}
		if _, ended := g.inst.Status(); ended {
			continue
		}
		cg := g.cg()
		if d.Memory <= 0 {
			if st != nil {
				// The target was lifted: the guest gets all its memory
				// back and its soft limit returns to what memtune says.
				a.setBalloon(ctx, g, cg, d, maxMemory(d), d.Resources.MemorySoftLimit)
				delete(w.guests, name)
			}
			continue
		}
		if st == nil || st.gen != g.gen || st.target != d.Memory {
			soft := d.Resources.MemorySoftLimit // an explicit memtune soft limit wins
			if soft == nil {
				soft = new(driver.BalloonSoftLimit(g.kind, d.Memory))
			}
			if !a.setBalloon(ctx, g, cg, d, d.Memory, soft) {
				continue // tried again on the next interval
			}
			st = &balloonState{gen: g.gen, target: d.Memory, setAt: now}
			w.guests[name] = st
		}
		log := a.log.With("guest", name, "generation", g.gen)
		stats, err := a.deps.Cgroups.Usage(cg)
		if err != nil {
			log.Warn("reading a guest's memory usage for its balloon", "err", err)
			continue
		}
		usage := int64(stats.Memory.Usage)
		actual := usage // a guest without a balloon holds what its group holds
		if b, ok := g.inst.(balloonDevice); ok && g.kind == cgroupdriver.KindQEMU {
			if actual, err = b.BalloonActual(ctx); err != nil {
				log.Warn("querying the balloon", "err", err)
				continue
			}
		}
		for _, p := range st.step(now, a.cfg.BalloonTimeout, a.cfg.NodeID, actual, usage) {
			items = append(items, Report{Guest: name, Payload: p})
			if n, ok := p.(*events.GuestBalloonNoncompliant); ok {
				log.Warn("the guest has not come down to its balloon target", "target", n.Target, "actual", n.Actual, "waited_ms", n.WaitedMs)
				if d.BalloonEnforce {
					a.enforceBalloon(cg, d, n, log)
				}
			}
		}
	}
	if len(items) == 0 {
		return
	}
	if _, err := a.report(ctx, items); err != nil {
		a.log.Warn("reporting balloons", "err", err)
	}
}

// setBalloon sets a guest's balloon (qemu) to target and its memory soft
// limit to soft (nil: unlimited). It says whether both were set.
func (a *Agent) setBalloon(ctx context.Context, g *guest, cg cgroupdriver.Guest, d DesiredGuest, target int64, soft *int64) bool {
	log := a.log.With("guest", g.name, "generation", g.gen)
	if b, ok := g.inst.(balloonDevice); ok && g.kind == cgroupdriver.KindQEMU {
		if err := b.SetBalloon(ctx, target); err != nil {
			log.Error("setting the balloon target", "target", target, "err", err)
			return false
		}
	}
	if soft == nil {
		soft = new(int64(cgroupdriver.Unlimited))
	}
	if _, err := a.deps.Cgroups.Apply(cg, cgroupdriver.Resources{MemorySoftLimit: soft}); err != nil {
		log.Error("writing the soft limit of a balloon target", "soft_limit", *soft, "err", err)
		return false
	}
	log.Info("balloon target set", "target", target, "soft_limit", *soft)
	return true
}

// maxMemory is a guest's maximum memory: its definition's, for qemu the
// default when it sets none; 0 for a guest without one.
func maxMemory(d DesiredGuest) int64 {
	if d.Definition.MemoryBytes <= 0 && d.Definition.Driver == events.DriverQEMU {
		return events.DefaultQEMUMemory
	}
	return d.Definition.MemoryBytes
}

// reclaimer presses a guest's memory down by reclaim;
// *cgroupdriver.Driver is one.
type reclaimer interface {
	Reclaim(g cgroupdriver.Guest, size int64) (cgroupdriver.Reclaimed, error)
}

// enforceBalloon presses a noncompliant guest down to its soft limit and
// writes the outcome into n. A host that cannot reclaim leaves n not
// enforced, with the reason logged.
func (a *Agent) enforceBalloon(cg cgroupdriver.Guest, d DesiredGuest, n *events.GuestBalloonNoncompliant, log *slog.Logger) {
	r, ok := a.deps.Cgroups.(reclaimer)
	if !ok {
		log.Warn("balloon_enforce is on, but this agent's cgroups cannot reclaim")
		return
	}
	size := pressSize(cg.Kind, d)
	got, err := r.Reclaim(cg, size)
	if err != nil {
		log.Error("pressing the guest down to its balloon target", "size", size, "err", err)
		return
	}
	n.Enforced, n.Reclaimed, n.UsageAfter = true, int64(got.Freed()), int64(got.After)
	if got.Err != nil {
		n.ReclaimError = got.Err.Error()
	}
	log.Info("pressed the guest towards its balloon target", "size", size, "usage_before", got.Before, "usage_after", got.After,
		"reclaimed", got.Freed(), "short", n.ReclaimError)
}

// pressSize is what enforcement presses a guest's memory cgroup down to:
// its soft limit, the balloon target (for qemu plus QEMU's room) unless
// memtune set one.
func pressSize(kind cgroupdriver.Kind, d DesiredGuest) int64 {
	if s := d.Resources.MemorySoftLimit; s != nil && *s > 0 && *s != cgroupdriver.Unlimited {
		return *s
	}
	return driver.BalloonSoftLimit(kind, d.Memory)
}
