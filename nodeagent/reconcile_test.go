package nodeagent

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// dg is a process guest with the settings the coordinator computes for
// its definition: cpu_shares 1024 and a 64 MiB hard limit.
func dg(name string, gen uint64, desired, status string) DesiredGuest {
	def := events.GuestDefined{Name: name, Driver: "process", MemoryBytes: 64 << 20, CPUShares: 1024, Command: []string{"sleep", "1000"}}
	return DesiredGuest{Name: name, Generation: gen, Desired: desired, Status: status, Definition: def,
		Resources: cgroupdriver.Resources{CPUShares: new(uint64(1024)), MemoryHardLimit: new(int64(64 << 20))}}
}

func running(name string, gen uint64) Observed {
	return Observed{Name: name, Kind: "process", Generation: gen, Phase: PhaseRunning, StartReported: true,
		Applied: map[string]string{"cpu_shares": "1024", "hard_limit": "67108864"}}
}

// TestReconcile pins one rule per case; the expected actions are in the
// compact form of Action.String.
func TestReconcile(t *testing.T) {
	tuned := dg("web", 5, DesiredRunning, StatusRunning)
	tuned.Resources.CPUShares = new(uint64(500))
	pinned := dg("web", 5, DesiredRunning, StatusRunning)
	if err := pinned.Resources.SetKnob("cpuset_cpus", "0-1"); err != nil {
		t.Fatal(err)
	}
	resetObs := running("web", 5)
	resetObs.Applied["vcpu_quota"] = "50000"
	frozen := running("web", 5)
	frozen.Frozen = true
	notReported := running("web", 5)
	notReported.StartReported = false
	ended := Observed{Name: "web", Kind: "process", Generation: 5, Phase: PhaseEnded}
	reported := ended
	reported.ExitReported, reported.ExitIndex = true, 12
	paused := dg("web", 5, DesiredRunning, StatusRunning)
	paused.Paused = true

	for _, tc := range []struct {
		name     string
		index    uint64
		desired  []DesiredGuest
		observed []Observed
		want     []string
	}{
		{name: "nothing", want: nil},
		{name: "running, asked to pause: freeze",
			desired: []DesiredGuest{paused}, observed: []Observed{running("web", 5)},
			want: []string{"freeze web kind=process gen=5"}},
		{name: "paused and frozen: nothing",
			desired: []DesiredGuest{paused}, observed: []Observed{frozen}},
		{name: "frozen, no longer paused: thaw",
			desired: []DesiredGuest{dg("web", 5, DesiredRunning, StatusRunning)}, observed: []Observed{frozen},
			want: []string{"thaw web kind=process gen=5"}},
		{name: "placed and desired running: start",
			desired: []DesiredGuest{dg("web", 5, DesiredRunning, StatusPlaced)},
			want:    []string{"start web kind=process gen=5"}},
		{name: "placed but desired stopped: nothing",
			desired: []DesiredGuest{dg("web", 5, DesiredStopped, StatusPlaced)}},
		{name: "running as desired: nothing",
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusRunning)},
			observed: []Observed{running("web", 5)}},
		{name: "running, placed status, start already reported: nothing (idempotent)",
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusPlaced)},
			observed: []Observed{running("web", 5)}},
		{name: "running, start not reported yet: report it",
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusPlaced)},
			observed: []Observed{notReported},
			want:     []string{"report-started web kind=process gen=5"}},
		{name: "desired stopped while running: stop",
			desired:  []DesiredGuest{dg("web", 5, DesiredStopped, StatusRunning)},
			observed: []Observed{running("web", 5)},
			want:     []string{"stop web kind=process gen=5"}},
		{name: "not placed here any more: destroy",
			observed: []Observed{running("web", 5)},
			want:     []string{"destroy web kind=process gen=5"}},
		{name: "an ended run of a guest no longer placed here: destroy",
			observed: []Observed{ended},
			want:     []string{"destroy web kind=process gen=5"}},
		{name: "another generation runs locally: destroy the old, start the new",
			desired:  []DesiredGuest{dg("web", 9, DesiredRunning, StatusPlaced)},
			observed: []Observed{running("web", 5)},
			want:     []string{"destroy web kind=process gen=5", "start web kind=process gen=9"}},
		{name: "ended, not reported: report the exit",
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusRunning)},
			observed: []Observed{ended},
			want:     []string{"report-exited web kind=process gen=5"}},
		{name: "exit reported, log not caught up: wait, never restart",
			index:    11,
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusPlaced)},
			observed: []Observed{reported},
			want:     nil},
		{name: "exit in the log: forget",
			index:    12,
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusExited)},
			observed: []Observed{reported},
			want:     []string{"forget web kind=process gen=5"}},
		{name: "exit in the log, asked to run again: forget and start",
			index:    14,
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusPlaced)},
			observed: []Observed{reported},
			want:     []string{"forget web kind=process gen=5", "start web kind=process gen=5"}},
		{name: "failed start in the log: nothing",
			desired: []DesiredGuest{dg("web", 5, DesiredRunning, StatusFailed)}},
		{name: "log says running, nothing here: report an unknown exit",
			desired: []DesiredGuest{dg("web", 5, DesiredRunning, StatusRunning)},
			want:    []string{"report-exited web kind=process gen=5 missing"}},
		{name: "tuning differs: tune",
			desired:  []DesiredGuest{tuned},
			observed: []Observed{running("web", 5)},
			want:     []string{"tune web kind=process gen=5 cpu_shares=500"}},
		{name: "cpuset differs: tune",
			desired:  []DesiredGuest{pinned},
			observed: []Observed{running("web", 5)},
			want:     []string{"tune web kind=process gen=5 cpuset_cpus=0-1"}},
		{name: "tuning removed: back to the default",
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusRunning)},
			observed: []Observed{resetObs},
			want:     []string{"tune web kind=process gen=5 vcpu_quota=-1"}},
		{name: "frozen and still assigned: thaw",
			desired:  []DesiredGuest{dg("web", 5, DesiredRunning, StatusRunning)},
			observed: []Observed{frozen},
			want:     []string{"thaw web kind=process gen=5"}},
		{name: "frozen and no longer assigned: destroy",
			observed: []Observed{frozen},
			want:     []string{"destroy web kind=process gen=5"}},
		{name: "strays the log does not name: remove; those it names: keep",
			desired: []DesiredGuest{dg("db", 3, DesiredStopped, StatusExited)},
			observed: []Observed{
				{Name: "old", Kind: "lxc", Phase: PhaseStray},
				{Name: "old", Phase: PhaseStray, Dir: true},
				{Name: "", Kind: "process", Phase: PhaseStray},
				{Name: "db", Kind: "process", Phase: PhaseStray},
			},
			want: []string{"remove-orphan kind=process", "remove-orphan old dir", "remove-orphan old kind=lxc"}},
		{name: "several guests: ordered by name",
			desired: []DesiredGuest{dg("b", 2, DesiredRunning, StatusPlaced), dg("a", 1, DesiredRunning, StatusPlaced)},
			want:    []string{"start a kind=process gen=1", "start b kind=process gen=2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acts := Reconcile(Desired{Index: tc.index, Guests: tc.desired}, tc.observed)
			var got []string
			for _, a := range acts {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Reconcile:\n got %s\nwant %s", strings.Join(got, "; "), strings.Join(tc.want, "; "))
			}
			// Pure: the same inputs give the same actions.
			again := Reconcile(Desired{Index: tc.index, Guests: tc.desired}, tc.observed)
			if len(again) != len(acts) {
				t.Errorf("second call gave %d actions, first %d", len(again), len(acts))
			}
		})
	}
}

func TestFence(t *testing.T) {
	fz := running("b", 2)
	fz.Frozen = true
	got := Fence([]Observed{running("c", 3), fz, running("a", 1), {Name: "d", Phase: PhaseEnded}})
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	want := []string{"freeze a kind=process gen=1", "freeze c kind=process gen=3"}
	if !slices.Equal(s, want) {
		t.Errorf("Fence = %v, want %v", s, want)
	}
}

// TestKnobResources: knob text, as Resources.Knobs gives it and the
// agent records it as applied, turns back into the Resources that write
// it; text that is not a knob's is refused as a bad desired state.
func TestKnobResources(t *testing.T) {
	r, err := knobResources(map[string]string{"hard_limit": "unlimited", "vcpu_quota": "-1", "cpu_shares": "500", "soft_limit": "1048576", "cpuset_cpus": "0-1"})
	if err != nil || *r.MemoryHardLimit != -1 || *r.CPUQuotaUs != -1 || *r.CPUShares != 500 || *r.MemorySoftLimit != 1<<20 || r.CpusetCPUs != "0-1" {
		t.Errorf("knobResources = %+v, %v", r, err)
	}
	want := dg("p", 1, DesiredRunning, StatusPlaced).Resources
	want.PidsMax = new(int64(cgroupdriver.Unlimited))
	back, err := knobResources(want.Knobs())
	if err != nil || !maps.Equal(back.Knobs(), want.Knobs()) {
		t.Errorf("knobResources(%v) = %v, %v", want.Knobs(), back.Knobs(), err)
	}
	for _, bad := range []map[string]string{{"cpu_shares": "lots"}, {"no_such_knob": "1"}} {
		if _, err := knobResources(bad); !errors.Is(err, ErrBadDesired) {
			t.Errorf("knobResources(%v) = %v, want ErrBadDesired", bad, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.NodeID, c.StateDir = "n1", "/var/lib/corral"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := c
	bad.NodeID, bad.StateDir, bad.FenceTimeout = "N/1", "rel", c.HeartbeatInterval
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, s := range []string{"node ID", "state directory", "fence timeout"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %s", err, s)
		}
	}
}
