package cgroupdriver_test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// checkSelfCgroup parses what a guest printed from /proc/self/cgroup and
// checks that every hierarchy of rep lists the guest's group.
func checkSelfCgroup(t *testing.T, rep cgroupdriver.Report, partition string, g cgroupdriver.Guest, out string) {
	t.Helper()
	want := partition + "/corral/" + g.String()
	byKey := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			byKey[parts[1]] = parts[2]
		}
	}
	for _, h := range rep.Hierarchies {
		key := ""
		if h.Version == 1 {
			key = strings.Join(h.Controllers, ",")
		}
		if got, ok := byKey[key]; !ok || got != want {
			t.Errorf("hierarchy %s: the guest ran in %q, want %q\n%s", h, got, want, out)
		}
	}
}

func partitionOf(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest) string {
	// The first hierarchy's directory is <mount><partition>/corral/<kind>/<id>.
	paths, _ := d.Paths(g)
	h := d.Report().Hierarchies[0]
	p := strings.TrimPrefix(paths[0], h.MountPoint)
	return strings.TrimSuffix(p, "/corral/"+g.String())
}

// TestHostEnterV1 starts processes through the v1 re-exec shim: the first
// thing the guest's program does is read /proc/self/cgroup, and it is
// already in the guest's group in every hierarchy.
func TestHostEnterV1(t *testing.T) {
	d, rep := hostDriver(t)
	g := create(t, d, "enter")
	out, err := run(t, d, g, nil, "sh", "-c", `cat /proc/self/cgroup; echo "marker=[$`+"_CORRAL_CGROUP_SHIM"+`]"`)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkSelfCgroup(t, rep, partitionOf(t, d, g), g, out)
	if !strings.Contains(out, "marker=[]") {
		t.Errorf("the shim's environment marker leaked into the guest:\n%s", out)
	}
	testPidsEverywhere(t, d, g)

	// A failure in the shim comes back from Start.
	missing := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "never-created"}
	err = d.Start(exec.Command("true"), missing)
	if !errors.Is(err, cgroupdriver.ErrShim) {
		t.Errorf("Start into a missing group: %v", err)
	}
	t.Log(err)
}

// testPidsEverywhere starts a process that waits on its stdin and finds its
// pid in the guest's group of every hierarchy as soon as Start returns.
func testPidsEverywhere(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest) {
	t.Helper()
	cmd := exec.Command("cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(cmd, g); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	paths, _ := d.Paths(g)
	pid := strconv.Itoa(cmd.Process.Pid)
	for _, p := range paths {
		if procs := strings.Fields(readHost(t, p+"/cgroup.procs")); !slices.Contains(procs, pid) {
			t.Errorf("%s/cgroup.procs = %v, lacks %s", p, procs, pid)
		}
	}
	io.WriteString(stdin, "")
}

// TestHostComountedV1 mounts a second v1 hierarchy with two controllers
// co-mounted (net_cls,net_prio) at a temporary path and drives it for real.
func TestHostComountedV1(t *testing.T) {
	cgrouptest.RequireHost(t)
	if !cgrouptest.PrivateMounts(t) {
		return
	}
	mnt := cgrouptest.MountV1(t, "net_cls,net_prio")
	rep := cgrouptest.RequireHost(t)
	h, ok := rep.Controller("net_prio")
	if !ok || h.MountPoint != mnt || !h.Has("net_cls") {
		t.Fatalf("co-mounted hierarchy not detected at %s: %+v", mnt, rep.Hierarchies)
	}
	d := hostDriverFor(t, rep)
	g := create(t, d, "netcls")
	ws, err := d.Apply(g, cgroupdriver.Resources{NetClassID: new(uint32(0x100001)), CPUShares: new(uint64(300))})
	if err != nil {
		t.Fatal(err)
	}
	var classid string
	for _, w := range ws {
		if w.File == "net_cls.classid" {
			classid = w.Path()
		}
	}
	if !strings.HasPrefix(classid, mnt+"/") {
		t.Fatalf("net_cls.classid written at %q, not below %s", classid, mnt)
	}
	if got := readHost(t, classid); got != "1048577" {
		t.Errorf("net_cls.classid = %s", got)
	}
	out, err := run(t, d, g, nil, "cat", "/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	checkSelfCgroup(t, rep, partitionOf(t, d, g), g, out)
	if err := d.Remove(ctx(t), g); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(strings.TrimSuffix(classid, "/net_cls.classid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("group left in the co-mounted hierarchy: %v", err)
	}
}

// TestHostV2 drives the host's cgroup2 mount as if it were a pure v2 host.
// Controllers bound to v1 hierarchies are not available there; what v2 does
// without controllers is tested: clone into the group, cgroup.freeze with
// cpu.stat, the BPF device program, cgroup.kill on removal.
func TestHostV2(t *testing.T) {
	full := cgrouptest.RequireHost(t)
	u, ok := full.Unified()
	if !ok {
		t.Skip("skipping: no cgroup2 mount on this host")
	}
	rep := cgroupdriver.Report{Mode: cgroupdriver.ModeV2, Hierarchies: []cgroupdriver.Hierarchy{u}}
	d := hostDriverFor(t, rep)
	for _, knob := range []struct {
		name string
		res  cgroupdriver.Resources
	}{
		{"memory", cgroupdriver.Resources{MemoryHardLimit: new(int64(64 << 20))}},
		{"cpu", cgroupdriver.Resources{CPUShares: new(uint64(512))}},
		{"pids", cgroupdriver.Resources{PidsMax: new(int64(10))}},
		{"io", cgroupdriver.Resources{BlkioWeight: new(uint16(100))}},
	} {
		if err := d.Validate(knob.res); err != nil {
			if !errors.Is(err, cgroupdriver.ErrControllerMissing) {
				t.Errorf("%s: want ErrControllerMissing, got %v", knob.name, err)
			}
			t.Logf("v2 %s knobs not tested here: %v", knob.name, err)
		} else {
			t.Errorf("%s is available on this host's cgroup2 (%v); extend this test", knob.name, u.Controllers)
		}
	}
	g := create(t, d, "v2")
	out, err := run(t, d, g, nil, "cat", "/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if want := "0::" + partitionOf(t, d, g) + "/corral/" + g.String(); !strings.Contains(out, want+"\n") {
		t.Errorf("cloned into the wrong group: want %q in\n%s", want, out)
	}
	testPidsEverywhere(t, d, g)
	t.Run("freeze", func(t *testing.T) { testFreeze(t, d, create(t, d, "v2-busy")) })
	t.Run("devices", func(t *testing.T) { testDevices(t, d, create(t, d, "v2-dev")) })
	t.Run("remove", func(t *testing.T) { testRemove(t, d, create(t, d, "v2-gone")) })
	t.Run("reserve", func(t *testing.T) { testReserve(t, d, cgroupdriver.Reservation{}) })
}

// TestHostStartRefusesFrozenGroup: a start into a frozen group (the
// node's fencer froze its kind directory) is refused at once instead of
// hanging on a process that stops before its first instruction.
func TestHostStartRefusesFrozenGroup(t *testing.T) {
	d, _ := hostDriver(t)
	g := create(t, d, "frozen")
	if err := d.Freeze(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	err := d.Start(exec.Command("true"), g)
	if !errors.Is(err, cgroupdriver.ErrFrozen) {
		t.Fatalf("Start into a frozen group: %v", err)
	}
	t.Log(err)
	if err := d.Thaw(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, d, g, nil, "true"); err != nil {
		t.Fatalf("Start after the thaw: %v\n%s", err, out)
	}
}
