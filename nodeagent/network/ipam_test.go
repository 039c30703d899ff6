package network

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
)

// TestIPAM: first free address from the second host address, kept in the
// file across a reopen, a released one reused first, the range's end
// refused with ErrRangeFull.
func TestIPAM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.json")
	cidr := netip.MustParsePrefix("10.9.0.0/29") // .2 to .6 for guests
	m, err := OpenIPAM(cidr, path)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range []string{"a", "b", "c"} {
		got, err := m.Allocate(g)
		if want := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(2 + i)}), 29); err != nil || got != want {
			t.Fatalf("Allocate(%s) = %v, %v; want %v", g, got, err, want)
		}
	}
	if again, _ := m.Allocate("b"); again.String() != "10.9.0.3/29" {
		t.Errorf("b again: %v, want its own 10.9.0.3/29", again)
	}
	if err := m.Release("a"); err != nil {
		t.Fatal(err)
	}
	m2, err := OpenIPAM(cidr, path)
	if err != nil {
		t.Fatal(err)
	}
	if h := m2.Held(); len(h) != 2 || h["b"].String() != "10.9.0.3" || h["c"].String() != "10.9.0.4" {
		t.Errorf("reopened: %v", h)
	}
	if d, _ := m2.Allocate("d"); d.String() != "10.9.0.2/29" {
		t.Errorf("d got %v, want a's freed 10.9.0.2/29", d)
	}
	for _, g := range []string{"e", "f"} {
		if _, err := m2.Allocate(g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m2.Allocate("g"); !errors.Is(err, ErrRangeFull) {
		t.Errorf("seventh guest in a /29: %v, want ErrRangeFull (the broadcast address is never given)", err)
	}
	if err := (Config{Bridge: "corral0", CIDR: netip.MustParsePrefix("10.9.0.1/24")}).Validate(); err == nil {
		t.Error("a range with host bits set was accepted")
	}
}
