package nodeagent

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// Phase is what the agent holds of a guest on its host.
type Phase int

const (
	// PhaseRunning: the agent holds a driver instance whose guest runs.
	PhaseRunning Phase = iota + 1
	// PhaseEnded: the guest ended, or never started, and the agent holds
	// its exit until the log has it.
	PhaseEnded
	// PhaseStray: groups or a state directory that the agent holds
	// nothing for (left by a crash, or by hand).
	PhaseStray
)

func (p Phase) String() string {
	switch p {
	case PhaseRunning:
		return "running"
	case PhaseEnded:
		return "ended"
	case PhaseStray:
		return "stray"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// Observed is one guest as the agent finds it on its host.
type Observed struct {
	// Name is the guest ID; empty for a stray group whose name is not a
	// guest ID.
	Name string
	// Kind is the guest's driver kind; for a stray, the kind directory
	// its group is under, empty when only a state directory was found.
	Kind       cgroupdriver.Kind
	Generation uint64
	Phase      Phase

	// Frozen is set while the agent keeps the guest frozen: fenced, or
	// suspended as the log asks.
	Frozen bool
	// StartReported is set once guest.started was committed for this run.
	StartReported bool
	// ExitReported is set once the exit was committed, at ExitIndex.
	ExitReported bool
	ExitIndex    uint64
	// Applied maps each knob the agent wrote to the canonical value.
	Applied map[string]string
	// Dir is set for a stray state directory.
	Dir bool
}

// Op is what an [Action] does.
type Op string

// The actions, in the order Reconcile emits them for one guest.
const (
	OpDestroy       Op = "destroy"        // kill, remove groups and state directory, forget
	OpThaw          Op = "thaw"           // unfreeze a guest fenced earlier
	OpFreeze        Op = "freeze"         // fence: freeze a running guest
	OpReportStarted Op = "report-started" // guest.started with PID and groups
	OpStop          Op = "stop"           // graceful stop, then kill
	OpTune          Op = "tune"           // write changed knobs, report what was written
	OpReportExited  Op = "report-exited"  // guest.exited, then remove the groups
	OpForget        Op = "forget"         // drop an ended run the log has recorded
	OpStart         Op = "start"          // start the guest's generation
	OpRemoveOrphan  Op = "remove-orphan"  // remove stray groups or a stray state directory
)

// Action is one step the actuator takes. Actions are keyed by guest and
// generation: the actuator ignores one whose generation is not the one it
// holds (or, for start, one it already runs).
type Action struct {
	Op         Op
	Guest      string
	Kind       cgroupdriver.Kind
	Generation uint64
	// Desired is the guest as the log wants it (start, tune).
	Desired *DesiredGuest
	// Knobs are the knobs to write and their canonical values (tune).
	Knobs map[string]string
	// Missing is set on report-exited when the log thinks the guest runs
	// here and the agent has nothing of it: its exit is unknown.
	Missing bool
	// Dir is set on remove-orphan for a stray state directory.
	Dir bool
}

// String is the action in the compact form the tests compare.
func (a Action) String() string {
	var b strings.Builder
	b.WriteString(string(a.Op))
	if a.Guest != "" {
		b.WriteString(" " + a.Guest)
	}
	if a.Kind != "" {
		b.WriteString(" kind=" + string(a.Kind))
	}
	if a.Generation != 0 {
		fmt.Fprintf(&b, " gen=%d", a.Generation)
	}
	for _, k := range slices.Sorted(maps.Keys(a.Knobs)) {
		fmt.Fprintf(&b, " %s=%s", k, a.Knobs[k])
	}
	if a.Missing {
		b.WriteString(" missing")
	}
	if a.Dir {
		b.WriteString(" dir")
	}
	return b.String()
}

// Reconcile decides what the agent does to make its host match desired.
// It is pure: the same inputs always give the same actions, ordered by
// guest name, strays last.
//
// For each guest the agent holds or the log places here:
//   - held but not placed here, or held at another generation: destroy
//     (then, for a new generation, go on as if nothing were held);
//   - running: thaw if frozen and not asked to pause, freeze if asked to
//     pause, report started once, stop when desired
//     stopped, else tune the knobs whose value differs from the one
//     applied;
//   - ended: report the exit once; once the log has it (its index is at
//     most desired.Index) forget the run, and go on as if nothing were
//     held, so a guest asked to run again starts again;
//   - nothing held: start when desired running and placed; report an
//     unknown exit when the log says it runs here.
//
// Strays that the log does not name are removed.
func Reconcile(desired Desired, observed []Observed) []Action {
	want := make(map[string]*DesiredGuest, len(desired.Guests))
	names := make(map[string]bool, max(len(desired.Guests), len(observed)))
	for i := range desired.Guests {
		d := &desired.Guests[i]
		want[d.Name] = d
		names[d.Name] = true
	}
	held := make(map[string]*Observed, len(observed))
	var strays []*Observed
	for i := range observed {
		o := &observed[i]
		if o.Phase == PhaseStray {
			strays = append(strays, o)
			continue
		}
		held[o.Name] = o
		names[o.Name] = true
	}

	var out []Action
	for _, name := range slices.Sorted(maps.Keys(names)) {
		d, o := want[name], held[name]
		if m := migrationOf(d); m != nil && m.Role == MigrationSource && m.Phase == MigrationSwitched {
			d = nil // the target runs the guest now: this copy goes
		}
		if o != nil && (d == nil || o.Generation != d.Generation) {
			out = append(out, Action{Op: OpDestroy, Guest: name, Kind: o.Kind, Generation: o.Generation})
			o = nil
		}
		if d == nil {
			continue
		}
		if m := d.Migration; m != nil && m.Role == MigrationTarget && m.Phase != MigrationSwitched {
			// An incoming instance: the migration runs it (migrate.go)
			// until the switch; only a fence is lifted here.
			if o != nil && o.Frozen && !d.Paused {
				out = append(out, Action{Op: OpThaw, Guest: name, Kind: o.Kind, Generation: o.Generation})
			}
			continue
		}
		if o != nil {
			act := func(op Op) Action { return Action{Op: op, Guest: name, Kind: o.Kind, Generation: o.Generation} }
			switch o.Phase {
			case PhaseRunning:
				switch {
				case o.Frozen && !d.Paused:
					out = append(out, act(OpThaw))
				case !o.Frozen && d.Paused && d.Desired != DesiredStopped:
					out = append(out, act(OpFreeze))
				}
				if !o.StartReported {
					out = append(out, act(OpReportStarted))
				}
				if d.Desired == DesiredStopped {
					out = append(out, act(OpStop))
				} else if k := changedKnobs(*d, o.Applied); len(k) > 0 {
					a := act(OpTune)
					a.Desired, a.Knobs = d, k
					out = append(out, a)
				}
				continue
			case PhaseEnded:
				if !o.ExitReported {
					out = append(out, act(OpReportExited))
					continue
				}
				if o.ExitIndex > desired.Index {
					continue // the log has not caught up with the report yet
				}
				out = append(out, act(OpForget))
			}
		}
		kind := cgroupdriver.Kind(d.Definition.Driver)
		switch {
		case d.Desired == DesiredRunning && d.Status == StatusPlaced:
			out = append(out, Action{Op: OpStart, Guest: name, Kind: kind, Generation: d.Generation, Desired: d})
		case d.Status == StatusRunning:
			out = append(out, Action{Op: OpReportExited, Guest: name, Kind: kind, Generation: d.Generation, Missing: true})
		}
	}

	sort.SliceStable(strays, func(i, j int) bool {
		a, b := strays[i], strays[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Kind < b.Kind
	})
	for _, o := range strays {
		// A stray group of a desired guest's own kind is about to be used
		// by it; one of another kind (the guest was defined again with
		// another driver) is left over and goes.
		if d := want[o.Name]; o.Name != "" && d != nil && !o.Dir && o.Kind == cgroupdriver.Kind(d.Definition.Driver) {
			continue
		}
		out = append(out, Action{Op: OpRemoveOrphan, Guest: o.Name, Kind: o.Kind, Dir: o.Dir})
	}
	return out
}

// Fence decides how to fence the host: freeze every running guest not yet
// frozen. It is pure.
func Fence(observed []Observed) []Action {
	var out []Action
	for _, o := range observed {
		if o.Phase == PhaseRunning && !o.Frozen {
			out = append(out, Action{Op: OpFreeze, Guest: o.Name, Kind: o.Kind, Generation: o.Generation})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Guest < out[j].Guest })
	return out
}

// changedKnobs returns the knobs whose value for d differs from the one
// applied; a knob applied earlier that d no longer sets goes back to its
// default.
func changedKnobs(d DesiredGuest, applied map[string]string) map[string]string {
	want := d.Resources.Knobs()
	var out map[string]string // made on the first change: at rest there is none, for any guest
	set := func(k, v string) {
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	for k, v := range want {
		if applied[k] != v {
			set(k, v)
		}
	}
	for k, v := range applied {
		if _, ok := want[k]; ok {
			continue
		}
		if def := knobDefault(k); def != "" && v != def {
			set(k, def)
		}
	}
	return out
}

// knobDefault is the value a knob returns to when its tuning is removed,
// in the cgroup driver's text form; "" when it has none to return to.
func knobDefault(knob string) string {
	k, err := events.LookupKnob(knob)
	if err != nil {
		return ""
	}
	return k.Default
}
