package cgroupdriver

import (
	"errors"
	"maps"
	"testing"
)

func TestKnobTextRoundTrip(t *testing.T) {
	in := map[string]string{
		"cpu_shares": "500", "vcpu_period": "100000", "vcpu_quota": "-1", "cpuset_cpus": "1,3-4", "numa_nodeset": "0",
		"hard_limit": "268435456", "soft_limit": "unlimited", "swap_hard_limit": "unlimited", "pids_max": "64",
		"blkio_weight": "500", "net_cls_classid": "1048577",
	}
	var r Resources
	for k, v := range in {
		if err := r.SetKnob(k, v); err != nil {
			t.Fatalf("SetKnob(%s, %s): %v", k, v, err)
		}
	}
	if got := r.Knobs(); !maps.Equal(got, in) {
		t.Fatalf("Knobs() = %v, want %v", got, in)
	}
	if *r.MemorySoftLimit != Unlimited || *r.CPUQuotaUs != Unlimited || r.CpusetCPUs != "1,3-4" {
		t.Fatalf("fields: %+v", r)
	}
	only := r.Only("cpu_shares", "cpuset_cpus")
	if got := only.Knobs(); len(got) != 2 || got["cpu_shares"] != "500" || got["cpuset_cpus"] != "1,3-4" {
		t.Fatalf("Only = %v", got)
	}
}

func TestSetKnobRefusesBadText(t *testing.T) {
	for _, c := range []struct{ knob, value string }{
		{"cpu_shares", "-3"}, {"cpu_shares", "lots"}, {"hard_limit", "1G"}, {"cpuset_cpus", "3-1"},
		{"cpuset_cpus", ""}, {"blkio_weight", "70000"}, {"nope", "1"},
	} {
		var r Resources
		err := r.SetKnob(c.knob, c.value)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.knob {
			t.Errorf("SetKnob(%q, %q) = %v, want a FieldError naming the knob", c.knob, c.value, err)
		}
	}
}

func TestAppliedReportsWhatWasWritten(t *testing.T) {
	var r Resources
	r.SetKnob("cpu_shares", "500")
	r.SetKnob("hard_limit", "unlimited")
	r.SetKnob("vcpu_quota", "50000")
	// v2 writes cpu.weight for the shares and cpu.max for quota and
	// period together; hard_limit failed before it was written.
	writes := []Write{{Knob: "cpu_shares", File: "cpu.weight", Value: "39"}, {Knob: "vcpu_quota,vcpu_period", File: "cpu.max", Value: "50000 100000"}}
	got := Applied(r, writes)
	want := map[string]string{"cpu_shares": "500", "vcpu_quota": "50000"}
	if !maps.Equal(got, want) {
		t.Fatalf("Applied = %v, want %v", got, want)
	}
}

func TestNUMAKnobText(t *testing.T) {
	var r Resources
	for k, v := range map[string]string{"numa_mode": "interleave", "numa_nodeset": "1,0", "emulatorpin": "3,1-2", "vcpupin": "1:2;0:0-1"} {
		if err := r.SetKnob(k, v); err != nil {
			t.Fatalf("SetKnob(%s, %s): %v", k, v, err)
		}
	}
	want := map[string]string{"numa_mode": "interleave", "numa_nodeset": "0-1", "emulatorpin": "1-3", "vcpupin": "0:0-1;1:2"}
	got := r.Knobs()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Knobs()[%s] = %q, want %q", k, got[k], v)
		}
	}
	if only := r.Only("numa_nodeset"); only.NUMAMode != "interleave" || only.CpusetMems != "0-1" || only.EmulatorPin != "" {
		t.Errorf("Only(numa_nodeset) = %+v, want the mode with the nodeset and nothing else", only)
	}
	for _, c := range [][2]string{{"numa_mode", "bind"}, {"numa_nodeset", ""}, {"emulatorpin", "x"}, {"vcpupin", "0"}, {"vcpupin", "0:1;0:2"}, {"vcpupin", "a:1"}} {
		var r Resources
		if err := r.SetKnob(c[0], c[1]); err == nil {
			t.Errorf("SetKnob(%s, %q) = nil, want an error", c[0], c[1])
		}
	}
}
