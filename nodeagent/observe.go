package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// recordFile is the agent's own record in a guest's state directory, next
// to the driver's: what a restarted agent needs to adopt the guest and
// know where it left off.
const recordFile = "agent.json"

type agentRecord struct {
	Guest         cgroupdriver.Guest `json:"guest"`
	Generation    uint64             `json:"generation"`
	StartReported bool               `json:"start_reported,omitempty"`
	Frozen        bool               `json:"frozen,omitempty"`
	Applied       map[string]string  `json:"applied,omitempty"`
	Run           int                `json:"run,omitempty"`
}

// persist rewrites g's record atomically.
func (a *Agent) persist(g *guest) {
	rec := agentRecord{
		Guest: g.cg(), Generation: g.gen,
		StartReported: g.startReported, Frozen: g.frozen, Applied: g.applied, Run: g.run,
	}
	b, err := json.Marshal(rec)
	if err == nil {
		path := filepath.Join(a.guestDir(g.name), recordFile)
		tmp := path + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		a.log.Error("writing the agent record", "guest", g.name, "err", err)
	}
}

// adopt re-attaches to the guests a previous agent process started, from
// the records in the state directory. It never starts anything; what
// cannot be adopted is left for the orphan scan.
func (a *Agent) adopt(ctx context.Context) {
	ents, err := os.ReadDir(filepath.Join(a.cfg.StateDir, guestsDir))
	if err != nil {
		a.log.Error("reading the guests' state directories", "err", err)
		return
	}
	for _, e := range ents {
		if !e.IsDir() || cgroupdriver.ValidateGuestID(e.Name()) != nil {
			continue
		}
		dir := a.guestDir(e.Name())
		b, err := os.ReadFile(filepath.Join(dir, recordFile))
		if err != nil {
			continue
		}
		var rec agentRecord
		if err := json.Unmarshal(b, &rec); err != nil || rec.Guest.ID != e.Name() || rec.Guest.Validate() != nil {
			a.log.Warn("ignoring an unreadable agent record", "dir", dir, "err", err)
			continue
		}
		inst, err := a.deps.Drivers.Adopt(ctx, driver.Spec{Guest: rec.Guest, StateDir: dir})
		if err != nil {
			if !errors.Is(err, driver.ErrNoRecord) {
				a.log.Warn("adopting a guest", "guest", rec.Guest, "err", err)
			}
			continue
		}
		g := &guest{
			name: rec.Guest.ID, kind: rec.Guest.Kind, partition: rec.Guest.Partition, gen: rec.Generation, inst: inst, phase: PhaseRunning,
			startReported: rec.StartReported, frozen: rec.Frozen, applied: rec.Applied, run: rec.Run,
		}
		g.net = a.adoptedNetwork(g.name, inst)
		a.guests[g.name] = g
		a.watchDone(ctx, inst)
		a.log.Info("adopted guest", "guest", g.name, "generation", g.gen, "pid", inst.PID())
	}
}

// observe describes what the agent holds and, with scan, what it finds on
// the host that it does not hold, for Reconcile. The scan reads every
// hierarchy's corral tree (about a millisecond).
func (a *Agent) observe(d Desired, scan bool) []Observed {
	out := a.observeHeld()
	if !scan {
		return out
	}
	a.scanned = time.Now()
	a.scans.Add(1)
	known := make([]cgroupdriver.Guest, 0, len(a.guests)+len(d.Guests))
	named := map[string]bool{}
	for _, g := range a.guests {
		named[g.name] = true
		if g.kind != "" {
			known = append(known, g.cg())
		}
	}
	for _, dg := range d.Guests {
		named[dg.Name] = true
		if cg := (cgroupdriver.Guest{Kind: cgroupdriver.Kind(dg.Definition.Driver), ID: dg.Name, Partition: dg.Definition.Partition}); cg.Validate() == nil {
			known = append(known, cg)
		}
	}
	orphans, err := a.deps.Cgroups.Orphans(known)
	if err != nil {
		a.log.Warn("listing orphaned groups", "err", err)
	}
	for _, o := range orphans {
		out = append(out, Observed{Name: o.ID, Kind: o.Kind, Phase: PhaseStray})
	}
	ents, err := os.ReadDir(filepath.Join(a.cfg.StateDir, guestsDir))
	if err != nil {
		a.log.Warn("listing the guests' state directories", "err", err)
	}
	for _, e := range ents {
		if !named[e.Name()] {
			out = append(out, Observed{Name: e.Name(), Phase: PhaseStray, Dir: true})
		}
	}
	return out
}

// observeHeld describes the guests the agent holds. A guest whose
// instance ended becomes PhaseEnded here, with its status.
func (a *Agent) observeHeld() []Observed {
	out := make([]Observed, 0, len(a.guests))
	for _, g := range a.guests {
		if g.phase == PhaseRunning {
			if st, ended := g.inst.Status(); ended {
				g.phase, g.exit = PhaseEnded, st
			}
		}
		out = append(out, Observed{
			Name: g.name, Kind: g.kind, Generation: g.gen, Phase: g.phase, Frozen: g.frozen,
			StartReported: g.startReported, ExitReported: g.exitReported, ExitIndex: g.exitIndex,
			Applied: appliedOrRefused(g),
		})
	}
	return out
}

// describeOrphan names what remove-orphan removed, for node.cleanup.
func describeOrphan(act Action) string {
	if act.Dir {
		return fmt.Sprintf("state directory %s/%s", guestsDir, act.Guest)
	}
	return fmt.Sprintf("cgroup %s/%s", act.Kind, act.Guest)
}

// appliedOrRefused is what Reconcile compares the desired knobs with: the
// values written, and those the host refused (not to be tried again until
// the log asks for another value).
func appliedOrRefused(g *guest) map[string]string {
	if len(g.refused) == 0 {
		// Not a copy: Reconcile only reads it, before any action of the
		// pass changes it, and every pass would copy every guest's.
		return g.applied
	}
	out := maps.Clone(g.applied)
	if len(g.refused) > 0 && out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, g.refused)
	return out
}
