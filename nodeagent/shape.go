package nodeagent

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/shaper"
)

// Shaping (domiftune): after every pass the agent hands the bandwidth of
// every running guest to its [Shaper], which makes the host's nft table
// and HTB classes match (idempotently: a full pass re-applies the same set,
// which repairs what was changed by hand), and reports the knobs it
// applied, or the host's refusal, once per value.

// Shaper makes the host shape exactly the guests given; *shaper.Shaper is
// the real one.
type Shaper interface {
	Apply(ctx context.Context, guests []shaper.Guest) error
	Remove(ctx context.Context) error
}

// shapeState is what the agent last did with the shaper. Only the run
// loop touches it.
type shapeState struct {
	last     string                       // the set applied, as text; "" before the first
	reported map[string]map[string]string // guest -> knob -> value reported
	ifaces   map[string]string            // guest -> its own interface's shaping, as applied
}

// nftCgroupRoot is where nft resolves cgroup v2 paths from.
const nftCgroupRoot = "/sys/fs/cgroup"

// shape applies the bandwidth of the guests running here.
func (a *Agent) shape(ctx context.Context, d Desired, full bool) {
	st := &a.shaping
	if a.deps.Shaper == nil && a.net == nil {
		return
	}
	if st.reported == nil {
		st.reported = map[string]map[string]string{}
	}
	var guests []shaper.Guest
	var names []string
	want := map[string]map[string]string{}
	failed := map[string]string{}
	classes := map[uint16]string{}
	for _, dg := range d.Guests {
		g := a.guests[dg.Name]
		if g == nil || g.phase != PhaseRunning || g.inst == nil || g.gen != dg.Generation {
			continue
		}
		want[dg.Name] = bandwidthKnobs(dg.Bandwidth)
		if dg.Bandwidth == nil {
			continue
		}
		if g.net != nil {
			// A guest on the bridge is shaped on its own interface.
			if err := a.shapeOwnInterface(ctx, g, dg.Bandwidth, full); err != nil {
				failed[dg.Name] = err.Error()
			}
			continue
		}
		if a.deps.Shaper == nil {
			continue
		}
		sg, err := a.shapedGuest(g, dg)
		if err == nil && classes[sg.Class] != "" {
			err = fmt.Errorf("corral: guest %s's HTB class 1:%x is also guest %s's; recreate one of them", g.name, sg.Class, classes[sg.Class])
		}
		if err != nil {
			failed[dg.Name] = err.Error()
			continue
		}
		classes[sg.Class] = g.name
		guests = append(guests, sg)
		names = append(names, g.name)
	}
	text := fmt.Sprintf("%+v", guests)
	var err error
	if a.deps.Shaper != nil && (full || text != st.last) {
		if err = a.deps.Shaper.Apply(ctx, guests); err != nil {
			a.log.Error("shaping guests' traffic", "guests", names, "err", err)
			st.last = ""
			for _, n := range names {
				failed[n] = err.Error()
			}
		} else {
			st.last = text
		}
	}
	var items []Report
	for _, name := range slices.Sorted(maps.Keys(want)) {
		g := a.guests[name]
		prev := st.reported[name]
		for _, k := range events.BandwidthKnobs {
			v := want[name][k]
			if prev[k] == v {
				continue
			}
			if msg, bad := failed[name]; bad {
				if v != "0" {
					items = append(items, Report{Guest: name, Payload: &events.GuestTuningFailed{
						Node: a.cfg.NodeID, Generation: g.gen, Knob: k, Value: v, Error: events.TruncateError(msg)}})
				}
			} else {
				items = append(items, Report{Guest: name, Payload: &events.GuestTuningApplied{
					Node: a.cfg.NodeID, Generation: g.gen, Knob: k, Value: v}})
			}
			if prev == nil {
				prev = map[string]string{}
				st.reported[name] = prev
			}
			prev[k] = v
		}
	}
	for name := range st.reported {
		if _, ok := want[name]; !ok {
			delete(st.reported, name)
		}
	}
	for name := range st.ifaces {
		if _, ok := want[name]; !ok {
			delete(st.ifaces, name)
		}
	}
	if len(items) == 0 {
		return
	}
	if _, err := a.report(ctx, items); err != nil {
		a.log.Warn("reporting shaping", "err", err)
		for _, it := range items {
			delete(st.reported, it.Guest) // sent again next pass
		}
	}
}

// bandwidthKnobs is b as domiftune's knobs.
func bandwidthKnobs(b *api.Bandwidth) map[string]string {
	if b == nil {
		b = &api.Bandwidth{}
	}
	out := map[string]string{}
	for dir, r := range map[string]api.Rate{"inbound": b.Inbound, "outbound": b.Outbound} {
		out[dir+"_average"] = strconv.FormatUint(r.Average, 10)
		out[dir+"_peak"] = strconv.FormatUint(r.Peak, 10)
		out[dir+"_burst"] = strconv.FormatUint(r.Burst, 10)
	}
	return out
}

// shapeClass is a guest's HTB class: derived from its placement's
// generation, which is unique on the cluster and stable for the run.
func shapeClass(gen uint64) uint16 {
	return shaper.MinClass + uint16(gen%uint64(shaper.DefaultClass-shaper.MinClass))
}

// DerivedClassID is the net_cls classid the agent gives a shaped guest on
// cgroup v1 that has none of its own: 1:<its HTB class>.
func DerivedClassID(gen uint64) uint32 { return 0x10000 | uint32(shapeClass(gen)) }

// shapedGuest says how the shaper recognises g: its cgroup v2 group
// where the host has one (also on hybrid hosts), else its net_cls classid,
// which it writes.
func (a *Agent) shapedGuest(g *guest, d DesiredGuest) (shaper.Guest, error) {
	b := d.Bandwidth
	sg := shaper.Guest{Name: g.name, Class: shapeClass(g.gen),
		Inbound:  shaper.Rate{Average: b.Inbound.Average, Peak: b.Inbound.Peak, Burst: b.Inbound.Burst},
		Outbound: shaper.Rate{Average: b.Outbound.Average, Peak: b.Outbound.Peak, Burst: b.Outbound.Burst}}
	rep := a.deps.Cgroups.Report()
	for _, h := range rep.Hierarchies {
		if h.Version != 2 {
			continue
		}
		for _, p := range g.inst.Cgroups() {
			rel, err := filepath.Rel(h.MountPoint, p)
			if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
				continue
			}
			nft, err := filepath.Rel(nftCgroupRoot, p)
			if err != nil || strings.HasPrefix(nft, "..") {
				return sg, fmt.Errorf("corral: the cgroup v2 hierarchy is mounted at %s, outside %s where nft finds groups: mount it below %s to shape guests", h.MountPoint, nftCgroupRoot, nftCgroupRoot)
			}
			sg.Cgroup2 = nft
			sg.Level = len(strings.Split(filepath.Join(h.MountRoot, rel), "/")) - 1
			return sg, nil
		}
	}
	if _, ok := rep.Controller("net_cls"); !ok {
		return sg, fmt.Errorf("corral: this host has no cgroup v2 and no net_cls hierarchy to recognise guest %s's traffic by: mount net_cls (mount -t cgroup -o net_cls,net_prio none DIR)", g.name)
	}
	id := DerivedClassID(g.gen)
	if d.Resources.NetClassID != nil {
		id = *d.Resources.NetClassID
	}
	if _, err := a.deps.Cgroups.Apply(cgroupdriver.Guest{Kind: g.kind, ID: g.name}, cgroupdriver.Resources{NetClassID: &id}); err != nil {
		return sg, err
	}
	sg.ClassID = id
	return sg, nil
}
