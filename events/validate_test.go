package events

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestValidateID(t *testing.T) {
	good := []string{"a", "web-1", "0", strings.Repeat("a", 63)}
	for _, id := range good {
		if err := ValidateID("guest name", id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	bad := []string{"", ".", "..", "a/b", "-a", "A", "a.b", "a\x00", "a\n", "é", strings.Repeat("a", 64), "../etc"}
	for _, id := range bad {
		err := ValidateID("guest name", id)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: accepted or wrong error %v", id, err)
		} else if !strings.Contains(err.Error(), "guest name") {
			t.Errorf("%q: error does not name the field: %v", id, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{"512MiB": 512 << 20, "1G": 1 << 30, "1g": 1 << 30, "64m": 64 << 20, "2048K": 2 << 20,
		"1048576": 1 << 20, "1GB": 1e9, "3 MiB": 3 << 20, "1TiB": 1 << 40}
	for in, want := range good {
		got, err := ParseSize("memory", in)
		if err != nil || got != want {
			t.Errorf("%q = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1G", "1.5G", "1X", "G", "99999999999T"} {
		if _, err := ParseSize("memory", in); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted (%v)", in, err)
		}
	}
}

func TestGuestDefinedValidate(t *testing.T) {
	base := func() GuestDefined {
		return GuestDefined{Name: "g", Driver: "process", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Command: []string{"/bin/true"}}
	}
	g := base()
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*GuestDefined){
		"name":          func(g *GuestDefined) { g.Name = "../x" },
		"driver":        func(g *GuestDefined) { g.Driver = "xen" },
		"memory":        func(g *GuestDefined) { g.MemoryBytes = 1 },
		"vcpus":         func(g *GuestDefined) { g.VCPUs = 0 },
		"cpu_shares":    func(g *GuestDefined) { g.CPUShares = 1 },
		"cpu_shares hi": func(g *GuestDefined) { g.CPUShares = 262145 },
		"command":       func(g *GuestDefined) { g.Command = nil },
		"rootfs":        func(g *GuestDefined) { g.Driver = "lxc" },
		"rel rootfs":    func(g *GuestDefined) { g.Driver = "lxc"; g.Rootfs = "rel/dir" },
		"kernel":        func(g *GuestDefined) { g.Driver = "qemu" },
		"label":         func(g *GuestDefined) { g.Labels = map[string]string{"a b": "c"} },
	}
	for name, mut := range cases {
		g := base()
		mut(&g)
		if err := g.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: accepted or wrong error %v", name, err)
		}
	}
}

func TestKnobs(t *testing.T) {
	good := map[[2]string]string{
		{"cpu_shares", "500"}: "500", {"hard_limit", "1G"}: "1073741824", {"hard_limit", "-1"}: Unlimited,
		{"vcpu_quota", "-1"}: "-1", {"vcpu_quota", "50000"}: "50000", {"vcpu_period", "100000"}: "100000",
	}
	for in, want := range good {
		k, err := LookupKnob(in[0])
		if err != nil {
			t.Fatal(err)
		}
		got, err := k.Canonical(in[1])
		if err != nil || got != want {
			t.Errorf("%v = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := [][2]string{{"cpu_shares", "1"}, {"cpu_shares", "x"}, {"vcpu_quota", "999"}, {"vcpu_period", "999"}, {"hard_limit", "0"}}
	for _, in := range bad {
		k, _ := LookupKnob(in[0])
		if _, err := k.Canonical(in[1]); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v accepted", in)
		}
	}
	if _, err := LookupKnob("cpu_sharez"); !errors.Is(err, ErrInvalid) {
		t.Error("unknown knob accepted")
	}
}

func FuzzValidate(f *testing.F) {
	f.Add("web", "process", "512MiB", 2, 1024, "/bin/true")
	f.Add("..", "lxc", "1G", 0, 1, "")
	f.Fuzz(func(t *testing.T, name, driver, mem string, vcpus, shares int, cmd string) {
		size, err := ParseSize("memory", mem)
		if err != nil {
			size = 0
		}
		g := GuestDefined{Name: name, Driver: driver, MemoryBytes: size, VCPUs: vcpus, CPUShares: shares, Command: []string{cmd}, Rootfs: cmd, Kernel: cmd}
		if g.Validate() == nil {
			if ValidateID("x", g.Name) != nil {
				t.Fatalf("invalid name %q passed", name)
			}
		}
	})
}

func TestValidateRegistrationBounds(t *testing.T) {
	ok := NodeRegistered{ID: "n1", CPUs: MaxNodeCPUs, MemoryBytes: 1 << 30, Drivers: map[string]string{"process": "1", "qemu": "7.2"},
		Controllers: []string{"cpu", "memory"}, CgroupMode: "v1"}
	if err := ok.ValidateRegistration(); err != nil {
		t.Fatalf("a valid registration: %v", err)
	}
	for name, mod := range map[string]func(*NodeRegistered){
		"too many cpus":     func(n *NodeRegistered) { n.CPUs = MaxNodeCPUs + 1 },
		"too much memory":   func(n *NodeRegistered) { n.MemoryBytes = MaxNodeMemoryBytes + 1 },
		"bad driver name":   func(n *NodeRegistered) { n.Drivers = map[string]string{"../x": "1"} },
		"long version":      func(n *NodeRegistered) { n.Drivers = map[string]string{"process": strings.Repeat("1", 65)} },
		"control character": func(n *NodeRegistered) { n.CgroupMode = "v1\n" },
		"too many controllers": func(n *NodeRegistered) {
			n.Controllers = make([]string, 33)
		},
	} {
		n := ok
		n.Drivers = maps.Clone(ok.Drivers)
		mod(&n)
		if err := n.ValidateRegistration(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
}
