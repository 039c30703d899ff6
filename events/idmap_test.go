package events

import (
	"errors"
	"testing"
)

func TestParseIDRange(t *testing.T) {
	r, err := ParseIDRange("0:100000:65536")
	if err != nil || r != (IDRange{0, 100000, 65536}) {
		t.Errorf("0:100000:65536: %v, %v", r, err)
	}
	for _, bad := range []string{"", "0:100000", "0:100000:65536:1", "a:1:1", "-1:100000:1", "0:100000:0",
		"0:0:65536", "0:4294967290:10", "4294967295:1000:1"} {
		var fe *FieldError
		if _, err := ParseIDRange(bad); !errors.As(err, &fe) || fe.Field != "idmap" {
			t.Errorf("ParseIDRange(%q): %v, want an idmap field error", bad, err)
		}
	}
}

func TestValidateIDMap(t *testing.T) {
	for _, ok := range [][]IDRange{nil, DefaultIDMap, {{0, 100000, 1}, {1, 200001, 65535}}} {
		if err := ValidateIDMap(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][]IDRange{
		{{1, 100000, 10}},                   // no root
		{{0, 100000, 10}, {5, 300000, 10}},  // container ids overlap
		{{0, 100000, 10}, {10, 100005, 10}}, // host ids overlap
		{{0, 100000, 10}, {10, 0, 1}},       // the host's root
		make([]IDRange, MaxIDRanges+1),
	} {
		if err := ValidateIDMap(bad); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	if h, ok := HostID(DefaultIDMap, 65535); !ok || h != 165535 {
		t.Errorf("HostID 65535: %d %v", h, ok)
	}
	if _, ok := HostID(DefaultIDMap, 65536); ok {
		t.Error("HostID 65536 is mapped")
	}
	g := GuestDefined{Name: "p", Driver: DriverProcess, MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024,
		Command: []string{"/bin/true"}, IDMap: DefaultIDMap}
	if err := g.Validate(); err == nil {
		t.Error("a process guest with an id map is valid")
	}
	g.Driver, g.Command, g.Rootfs = DriverLXC, nil, "/srv/rootfs"
	if err := g.Validate(); err != nil {
		t.Errorf("an lxc guest with the default map: %v", err)
	}
}
