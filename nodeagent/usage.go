package nodeagent

import (
	"context"
	"maps"
	"slices"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// reportUsage sends one node.usage item for every running guest, plus a
// guest.limit_hit item for each guest whose limit-hit counter rose since
// the last report, in one call. The same pass over the guests checks each
// for drift (driftOf), so a host at rest reads its guests once per
// interval, and the call carries the guest.drift items too.
func (a *Agent) reportUsage(ctx context.Context) {
	if a.fenced.Load() {
		return
	}
	// Drift is written back only where the agent may act on guests (the
	// run loop's rule); the counters are read regardless.
	fix := a.fence == nil || a.fence.mayAct()
	usage := &events.NodeUsage{IntervalMs: a.cfg.UsageInterval.Milliseconds(), Guests: make([]events.GuestUsage, 0, len(a.guests))}
	var hits, drift []Report
	samples := make(map[string]guestSample, len(a.guests))
	defer func() { a.metrics.guests.replace(samples) }()
	for _, name := range slices.Sorted(maps.Keys(a.guests)) {
		g := a.guests[name]
		if g.phase != PhaseRunning || g.inst == nil {
			continue
		}
		if _, ended := g.inst.Status(); ended {
			continue
		}
		st, err := a.deps.Cgroups.Usage(g.cg())
		if err != nil {
			a.log.Warn("reading a guest's counters", "guest", g.name, "err", err)
			continue
		}
		samples[g.name] = guestSample{gen: g.gen, stats: st}
		usage.Guests = append(usage.Guests, events.GuestUsage{
			Guest: g.name, Generation: g.gen,
			CPUNanos: st.CPU.TotalNs, UserNanos: st.CPU.UserNs, SystemNanos: st.CPU.SystemNs,
			MemoryBytes: st.Memory.Usage, MemoryPeakBytes: st.Memory.Peak,
			LimitHits: st.LimitHits, Pids: st.Pids.Current,
		})
		// An adopted guest's counter may have risen before this agent
		// ran: the first sample is a baseline. A guest this agent started
		// has fresh groups, so every hit counts.
		var storm uint64
		if (g.hitsKnown || !g.inst.Adopted()) && st.LimitHits > g.hits {
			storm = st.LimitHits - g.hits
			hits = append(hits, Report{Guest: g.name, Payload: &events.GuestLimitHit{
				Node: a.cfg.NodeID, Generation: g.gen, LimitHits: st.LimitHits, Delta: storm}})
		}
		g.hits, g.hitsKnown = st.LimitHits, true
		if p := g.policy; p != nil && p.LimitHits > 0 && storm >= p.LimitHits {
			defer a.endForLimitHits(ctx, g, storm) // after the report that shows the hits
		}
		if fix {
			drift = append(drift, a.driftOf(g)...)
		}
	}
	usage.Partitions = a.partitionReports()
	if len(usage.Guests) == 0 {
		if len(usage.Partitions) == 0 {
			return
		}
		usage.Guests = nil // encoded as before: null, not []
	}
	items := append(append([]Report{{Payload: usage}}, hits...), drift...)
	if _, err := a.report(ctx, items); err != nil {
		a.log.Warn("reporting usage", "err", err)
		for _, p := range usage.Partitions {
			if st := a.parts[p.Name]; st != nil && st.index == p.Index {
				st.reported = false // again with the next report
			}
		}
	}
}

// checkDrift checks every running guest for drift (driftOf) and reports
// what it found; the usage pass does the same on every interval.
func (a *Agent) checkDrift(ctx context.Context) {
	var items []Report
	for _, name := range slices.Sorted(maps.Keys(a.guests)) {
		g := a.guests[name]
		if g.phase != PhaseRunning || g.inst == nil {
			continue
		}
		if _, ended := g.inst.Status(); ended {
			continue
		}
		items = append(items, a.driftOf(g)...)
	}
	if len(items) == 0 {
		return
	}
	if _, err := a.report(ctx, items); err != nil {
		a.log.Warn("reporting drift", "err", err)
	}
}

// driftOf reads back every knob the agent applied to the running guest
// g; a knob changed behind its back is written again, and returned as a
// guest.drift report with the file's expected and found contents. A
// frozen guest is left as it is.
func (a *Agent) driftOf(g *guest) []Report {
	if len(g.applied) == 0 || g.frozen {
		return nil
	}
	res, err := knobResources(g.applied)
	if err != nil {
		return nil
	}
	cg := g.cg()
	obs, err := a.deps.Cgroups.Observe(cg, res)
	if err != nil {
		a.log.Warn("reading back a guest's settings", "guest", g.name, "err", err)
		return nil
	}
	var drifted []cgroupdriver.Observation
	for _, o := range obs {
		if o.Drift {
			drifted = append(drifted, o)
		}
	}
	if len(drifted) == 0 {
		return nil
	}
	_, aerr := a.deps.Cgroups.Apply(cg, res)
	if aerr != nil {
		a.log.Error("correcting drift", "guest", g.name, "err", aerr)
	}
	items := make([]Report, 0, len(drifted))
	for _, o := range drifted {
		knob := o.Knob
		if aerr == nil {
			a.metrics.drift.WithLabelValues(knob).Inc()
		}
		a.log.Warn("drift", "guest", g.name, "knob", knob, "file", o.File, "expected", o.Want, "found", o.Got, "corrected", aerr == nil)
		items = append(items, Report{Guest: g.name, Payload: &events.GuestDrift{
			Node: a.cfg.NodeID, Generation: g.gen, Knob: knob, Expected: o.Want, Found: o.Got, Corrected: aerr == nil}})
	}
	return items
}
