package cgroupdriver_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// TestHostSpare: a spare's process runs in groups of its own, which the
// orphan scan leaves alone; claimed, those groups are the guest's with the
// process in them everywhere (after join, where one is left) and nothing
// of the spare's is left. A spare cannot take a guest whose groups exist;
// it stays as it was and is removed with its process.
func TestHostSpare(t *testing.T) {
	full := cgrouptest.RequireHost(t)
	t.Run("host", func(t *testing.T) { testSpare(t, hostDriverFor(t, full)) })
	if u, ok := full.Unified(); ok && len(full.Hierarchies) > 1 {
		t.Run("v2", func(t *testing.T) {
			testSpare(t, hostDriverFor(t, cgroupdriver.Report{Mode: cgroupdriver.ModeV2, Hierarchies: []cgroupdriver.Hierarchy{u}}))
		})
	}
}

func testSpare(t *testing.T, d *cgroupdriver.Driver) {
	startSpare := func() (*cgroupdriver.Spare, *exec.Cmd) {
		t.Helper()
		cmd := exec.Command("sleep", "1000")
		s, err := d.StartSpare(cmd, cgroupdriver.KindLXC)
		if err != nil {
			t.Fatalf("StartSpare: %v", err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		if s.PID() != cmd.Process.Pid {
			t.Fatalf("spare pid %d, want %d", s.PID(), cmd.Process.Pid)
		}
		return s, cmd
	}
	kindDirs := func() []string {
		var out []string
		for _, r := range d.RootDirs() {
			out = append(out, filepath.Join(r, string(cgroupdriver.KindLXC)))
		}
		return out
	}
	spareDirs := func() []string {
		var out []string
		for _, k := range kindDirs() {
			m, _ := filepath.Glob(filepath.Join(k, "_spare-*"))
			out = append(out, m...)
		}
		return out
	}
	s, cmd := startSpare()
	pid := strconv.Itoa(cmd.Process.Pid)
	dirs := spareDirs()
	if len(dirs) != len(d.RootDirs()) {
		t.Fatalf("spare groups %v, want one in each of %v", dirs, d.RootDirs())
	}
	for _, dir := range dirs {
		if procs := strings.Fields(readHost(t, dir+"/cgroup.procs")); !slices.Equal(procs, []string{pid}) {
			t.Errorf("%s/cgroup.procs = %v, want the spare's %s", dir, procs, pid)
		}
	}
	if o, err := d.Orphans(nil); err != nil || len(o) != 0 {
		t.Errorf("orphans with a spare held: %v, %v; want none", o, err)
	}

	g := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "claimed"}
	join, err := d.ClaimSpare(s, g)
	if err != nil {
		t.Fatalf("ClaimSpare: %v", err)
	}
	if join != nil {
		if err := join(); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	paths, _ := d.Paths(g)
	for _, p := range paths {
		if procs := strings.Fields(readHost(t, p+"/cgroup.procs")); !slices.Equal(procs, []string{pid}) {
			t.Errorf("%s/cgroup.procs = %v, want the spare's %s", p, procs, pid)
		}
	}
	if left := spareDirs(); len(left) != 0 {
		t.Errorf("spare groups left after the claim: %v", left)
	}
	if o, err := d.Orphans([]cgroupdriver.Guest{g}); err != nil || len(o) != 0 {
		t.Errorf("orphans after the claim: %v, %v; want none", o, err)
	}
	if _, err := d.ClaimSpare(s, cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "again"}); !errors.Is(err, cgroupdriver.ErrSpareUnusable) {
		t.Errorf("a second claim of one spare: %v, want ErrSpareUnusable", err)
	}
	if err := d.Remove(ctx(t), g); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// Groups that exist already, or a guest in a partition: unusable.
	s, cmd = startSpare()
	taken := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "taken"}
	if err := d.Create(taken); err != nil {
		t.Fatal(err)
	}
	for _, g := range []cgroupdriver.Guest{taken, {Kind: cgroupdriver.KindLXC, ID: "p", Partition: "part"}, {Kind: cgroupdriver.KindQEMU, ID: "vm"}} {
		if _, err := d.ClaimSpare(s, g); !errors.Is(err, cgroupdriver.ErrSpareUnusable) {
			t.Errorf("claim for %s: %v, want ErrSpareUnusable", g, err)
		}
	}
	if got := spareDirs(); len(got) != len(d.RootDirs()) {
		t.Errorf("spare groups after refused claims: %v", got)
	}
	if err := d.RemoveSpare(ctx(t), s); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("the spare's process outlived RemoveSpare")
	}
	if left := spareDirs(); len(left) != 0 {
		t.Errorf("spare groups left after RemoveSpare: %v", left)
	}

	// A spare's groups that no Driver holds (an agent that crashed) are
	// orphans.
	for _, k := range kindDirs() {
		if err := os.Mkdir(filepath.Join(k, "_spare-stale"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o, err := d.Orphans([]cgroupdriver.Guest{taken})
	if want := []cgroupdriver.Guest{{Kind: cgroupdriver.KindLXC, ID: "_spare-stale"}}; err != nil || !slices.Equal(o, want) {
		t.Errorf("orphans: %v, %v; want %v", o, err, want)
	}
	for _, g := range o {
		if err := d.RemoveOrphan(ctx(t), g); err != nil {
			t.Fatal(err)
		}
	}
}
