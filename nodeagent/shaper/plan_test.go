package shaper

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestDecideGolden pins the nft script and tc commands for a few hosts:
// one file per scenario, rewritten with -update and reviewed as a diff.
func TestDecideGolden(t *testing.T) {
	web := Guest{Name: "web", Class: 0x10, ClassID: 0x10010, Outbound: Rate{Average: 1024, Peak: 2048, Burst: 64}, Inbound: Rate{Average: 512}}
	db := Guest{Name: "db", Class: 0x2a, Cgroup2: "unified/corral/qemu/db", Level: 3, Outbound: Rate{Average: 100}}
	in := Guest{Name: "inonly", Class: 0x11, ClassID: 0x10011, Inbound: Rate{Average: 2048, Burst: 128}}
	for _, c := range []struct {
		name   string
		ifaces []Interface
		limits []string
		guests []Guest
	}{
		{"two-guests-fresh-host", []Interface{{Name: "eth0", LineRate: 1_000_000_000}}, nil, []Guest{db, web}},
		// web's policer is kept; inonly's and web's old one go.
		{"stale-class-removed", []Interface{{Name: "eth0", LineRate: 1_000_000_000, Shaped: true, Classes: []uint16{0x10, 0x2a, 0xffff}}},
			[]string{"in_10_256_256", "in_10_512_512", "in_11_2048_128"}, []Guest{web}},
		{"inbound-only-two-interfaces", []Interface{{Name: "eth0", LineRate: 1e9}, {Name: "eth1", LineRate: 1e10}}, nil, []Guest{in}},
		{"no-guests-removes", []Interface{{Name: "eth0", Shaped: true, Classes: []uint16{0x10, 0xffff}}, {Name: "eth1"}}, []string{"in_10_512_512"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Decide("corral-n1", c.ifaces, c.limits, c.guests)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "# nft -f -\n%s# tc\n", p.Nft)
			for _, cmd := range p.TC {
				fmt.Fprintf(&b, "tc %s\n", strings.Join(cmd, " "))
			}
			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if b.String() != string(want) {
				t.Errorf("plan differs from %s:\n%s", path, b.String())
			}
		})
	}
}

func TestDecideRefuses(t *testing.T) {
	ok := Guest{Name: "a", Class: 0x10, ClassID: 1, Outbound: Rate{Average: 10}}
	for _, c := range []struct {
		g    Guest
		want string
	}{
		{Guest{Name: "b", Class: 0x10, ClassID: 2}, "also guest a's"},
		{Guest{Name: "b", Class: 0x11}, "either its net_cls classid"},
		{Guest{Name: "b", Class: 0x11, ClassID: 2, Cgroup2: "x", Level: 1}, "either its net_cls classid"},
		{Guest{Name: "b", Class: 0x11, Cgroup2: "x"}, "not a group below the root"},
		{Guest{Name: "b", Class: 0xffff, ClassID: 2}, "out of range"},
		{Guest{Name: "b", Class: 0x11, ClassID: 2, Outbound: Rate{Average: 100, Peak: 50}}, "below the average"},
		{Guest{Name: "b", Class: 0x11, ClassID: 2, Inbound: Rate{Burst: 50}}, "without an average"},
	} {
		_, err := Decide("t", nil, nil, []Guest{ok, c.g})
		if !errors.Is(err, ErrBadGuest) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want ErrBadGuest saying %q", c.g, err, c.want)
		}
	}
}
