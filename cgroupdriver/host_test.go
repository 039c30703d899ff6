package cgroupdriver_test

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

func TestHostDetect(t *testing.T) {
	d, rep := hostDriver(t)
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s", b)
	hb, _ := json.Marshal(d.Host())
	t.Logf("host: %s", hb)
	for _, h := range rep.Hierarchies {
		if _, err := os.Stat(h.MountPoint); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
}

// TestHostEveryKnob sets every knob the host supports, reads each back from
// the files, detects a hand-made change as drift and repairs it.
func TestHostEveryKnob(t *testing.T) {
	d, _ := hostDriver(t)
	g := create(t, d, "knobs")
	host := d.Host()
	res := cgroupdriver.Resources{
		CPUShares:       new(uint64(512)),
		CPUPeriodUs:     new(uint64(100000)),
		CPUQuotaUs:      new(int64(50000)),
		CpusetCPUs:      "0",
		CpusetMems:      "0",
		MemoryHardLimit: new(int64(256<<20 + 100)), // the kernel rounds to pages
		MemorySoftLimit: new(int64(128 << 20)),
		PidsMax:         new(int64(64)),
	}
	if host.BlkioWeightFile != "" {
		// Without BFQ (or CFQ) a v1 kernel has no proportional weight.
		res.BlkioWeight = new(uint16(500))
	}
	if host.SwapAccounting {
		res.MemorySwapHardLimit = new(int64(512 << 20))
	}
	if len(host.BlockDevices) > 0 {
		var maj, min uint64
		for _, dev := range host.BlockDevices {
			// Prefer a real disk over loop devices.
			a, b, _ := strings.Cut(dev, ":")
			maj, _ = strconv.ParseUint(a, 10, 32)
			min, _ = strconv.ParseUint(b, 10, 32)
			if maj != 7 {
				break
			}
		}
		res.BlkioThrottle = []cgroupdriver.DeviceThrottle{{Major: uint32(maj), Minor: uint32(min), ReadBps: 10 << 20, WriteIOPS: 100}}
	}
	_, blk := blockDevice(t)
	res.Devices = d.DefaultDevices(blk)
	if err := d.Validate(res); err != nil {
		t.Fatalf("this host cannot take the test resources: %v", err)
	}
	ws, err := d.Apply(g, res)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	last := map[string]cgroupdriver.Write{}
	for _, w := range ws {
		last[w.File] = w
	}
	expect := map[string]string{
		"cpu.shares":                  "512",
		"cpu.cfs_period_us":           "100000",
		"cpu.cfs_quota_us":            "50000",
		"cpuset.cpus":                 "0",
		"cpuset.mems":                 "0",
		"memory.limit_in_bytes":       strconv.Itoa(256 << 20),
		"memory.soft_limit_in_bytes":  strconv.Itoa(128 << 20),
		"memory.memsw.limit_in_bytes": strconv.Itoa(512 << 20),
		"pids.max":                    "64",
	}
	if host.BlkioWeightFile != "" {
		expect[host.BlkioWeightFile] = "500"
	}
	for file, want := range expect {
		w, ok := last[file]
		if !ok {
			if file == "memory.memsw.limit_in_bytes" && !host.SwapAccounting {
				continue
			}
			t.Errorf("no write to %s", file)
			continue
		}
		if got := readHost(t, w.Path()); got != want {
			t.Errorf("%s = %q, want %q", w.Path(), got, want)
		}
	}
	if tw, ok := last["blkio.throttle.read_bps_device"]; ok {
		dev, _, _ := strings.Cut(tw.Value, " ")
		if got := readHost(t, tw.Path()); got != dev+" 10485760" {
			t.Errorf("read_bps_device = %q", got)
		}
		if got := readHost(t, tw.Dir+"/blkio.throttle.write_iops_device"); got != dev+" 100" {
			t.Errorf("write_iops_device = %q", got)
		}
		if got := readHost(t, tw.Dir+"/blkio.throttle.write_bps_device"); got != "" {
			t.Errorf("write_bps_device = %q, want no rule", got)
		}
	}
	if dw, ok := last["devices.allow"]; ok {
		list := strings.Split(readHost(t, dw.Dir+"/devices.list"), "\n")
		for _, want := range []string{"c 1:3 rw", "c 136:* rw", blk.String()} {
			if !slices.Contains(list, want) {
				t.Errorf("devices.list %q lacks %q", list, want)
			}
		}
		if len(list) != len(res.Devices.Allow) {
			t.Errorf("devices.list has %d rules, want %d: %q", len(list), len(res.Devices.Allow), list)
		}
	}

	obs, err := d.Observe(g, res)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		if o.Drift {
			t.Errorf("drift right after Apply: %+v", o)
		}
	}
	// Someone writes cpu.shares by hand.
	if err := os.WriteFile(last["cpu.shares"].Path(), []byte("1024"), 0); err != nil {
		t.Fatal(err)
	}
	obs, _ = d.Observe(g, res)
	var drifted []string
	for _, o := range obs {
		if o.Drift {
			drifted = append(drifted, o.Knob+":"+o.Want+"->"+o.Got)
		}
	}
	if !slices.Equal(drifted, []string{"cpu_shares:512->1024"}) {
		t.Errorf("drift = %v", drifted)
	}
	if _, err := d.Apply(g, res); err != nil {
		t.Fatal(err)
	}
	obs, _ = d.Observe(g, res)
	for _, o := range obs {
		if o.Drift {
			t.Errorf("still drifted after repair: %+v", o)
		}
	}

	// A refused value writes nothing, not even the valid knobs before it.
	bad := res
	bad.CPUShares, bad.MemoryHardLimit = new(uint64(2048)), new(int64(0))
	if _, err := d.Apply(g, bad); !errors.Is(err, cgroupdriver.ErrInvalidResources) {
		t.Fatalf("Apply(bad) = %v", err)
	}
	if got := readHost(t, last["cpu.shares"].Path()); got != "512" {
		t.Errorf("refused Apply changed cpu.shares to %s", got)
	}
}

func TestHostNetClsMissing(t *testing.T) {
	d, rep := hostDriver(t)
	if _, ok := rep.Controller("net_cls"); ok {
		t.Skip("net_cls is mounted on this host")
	}
	_, err := d.Plan(cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: "n"}, cgroupdriver.Resources{NetClassID: new(uint32(0x10001))})
	if !errors.Is(err, cgroupdriver.ErrControllerMissing) || !strings.Contains(err.Error(), "net_cls") {
		t.Fatalf("want a clear net_cls error, got %v", err)
	}
	t.Log(err)
}

// TestHostOOM runs a process that allocates past its memory limit: the
// kernel counts failures and kills it.
func TestHostOOM(t *testing.T) {
	d, _ := hostDriver(t)
	g := create(t, d, "oom")
	if _, err := d.Apply(g, cgroupdriver.Resources{MemoryHardLimit: new(int64(16 << 20))}); err != nil {
		t.Fatal(err)
	}
	// dd fills a 64 MiB buffer from /dev/zero, touching every page.
	out, err := run(t, d, g, nil, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("dd was not killed: %v\n%s", err, out)
	}
	st, err := d.Stats(g)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats after OOM: %+v", st)
	if st.LimitHits == 0 || st.Memory.Failcnt == 0 {
		t.Errorf("failcnt did not rise: %+v", st.Memory)
	}
	if st.Memory.Events.OOMKill == 0 {
		t.Errorf("no OOM kill counted: %+v", st.Memory)
	}
	if st.Memory.Peak < 15<<20 {
		t.Errorf("peak %d below the limit", st.Memory.Peak)
	}
}

// TestHostFreeze freezes a busy process: its CPU time stops growing until it
// is thawed.
func TestHostFreeze(t *testing.T) {
	d, _ := hostDriver(t)
	g := create(t, d, "busy")
	testFreeze(t, d, g)
}

func testFreeze(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest) {
	start(t, d, g, nil, "sh", "-c", "while :; do :; done")
	cpu := func() uint64 {
		st, err := d.Stats(g)
		if err != nil {
			t.Fatal(err)
		}
		return st.CPU.TotalNs
	}
	waitFor(t, "the busy loop to use 20ms of CPU", 10*time.Second, func() bool { return cpu() > 20e6 })
	if err := d.Freeze(ctx(t), g); err != nil {
		t.Fatal(err)
	}
	frozen := cpu()
	// Watch for a while: the counter must not move at all.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); <-time.After(10 * time.Millisecond) {
		if now := cpu(); now != frozen {
			t.Fatalf("CPU time grew while frozen: %d -> %d", frozen, now)
		}
	}
	if err := d.Thaw(ctx(t), g); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "CPU time to grow after thaw", 10*time.Second, func() bool { return cpu() > frozen+10e6 })
}

// TestHostDevices denies a block device: opening it fails with EPERM while
// /dev/null works, until the guest's config allows it.
func TestHostDevices(t *testing.T) {
	d, _ := hostDriver(t)
	testDevices(t, d, create(t, d, "dev"))
}

func testDevices(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest) {
	path, rule := blockDevice(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	open := func() string {
		out, err := run(t, d, g, []string{helperEnv + "=open"}, self, path, "/dev/null")
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	res := cgroupdriver.Resources{Devices: d.DefaultDevices()}
	if _, err := d.Apply(g, res); err != nil {
		t.Fatal(err)
	}
	if got, want := open(), path+" EPERM\n/dev/null ok"; got != want {
		t.Errorf("denied: got %q, want %q", got, want)
	}
	assertNoDrift(t, d, g, res)
	res = cgroupdriver.Resources{Devices: d.DefaultDevices(rule)}
	if _, err := d.Apply(g, res); err != nil {
		t.Fatal(err)
	}
	if got, want := open(), path+" ok\n/dev/null ok"; got != want {
		t.Errorf("allowed: got %q, want %q", got, want)
	}
	assertNoDrift(t, d, g, res)
	// Compared with the ACL without the disk, what is installed is drift.
	obs, err := d.Observe(g, cgroupdriver.Resources{Devices: d.DefaultDevices()})
	if err != nil {
		t.Fatal(err)
	}
	if len(obs) != 1 || !obs[0].Drift {
		t.Errorf("a different ACL is not reported as drift: %+v", obs)
	}
	// Taking the disk away from the running guest denies it only: the
	// change never denies every device, even for a moment.
	res = cgroupdriver.Resources{Devices: d.DefaultDevices()}
	ws, err := d.Apply(g, res)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.File == "devices.deny" && w.Value != rule.String() {
			t.Errorf("the change wrote devices.deny %q; want only the rule taken away, %q", w.Value, rule)
		}
	}
	if got, want := open(), path+" EPERM\n/dev/null ok"; got != want {
		t.Errorf("taken away: got %q, want %q", got, want)
	}
	assertNoDrift(t, d, g, res)
}

func assertNoDrift(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest, res cgroupdriver.Resources) {
	t.Helper()
	obs, err := d.Observe(g, res)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		if o.Drift {
			t.Errorf("drift: %+v", o)
		}
	}
}

// TestHostRemove removes a frozen guest that still runs processes: they are
// killed and no directory is left anywhere.
func TestHostRemove(t *testing.T) {
	d, _ := hostDriver(t)
	testRemove(t, d, create(t, d, "gone"))
}

func testRemove(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest) {
	cmd, _ := start(t, d, g, nil, "sh", "-c", "sleep 1000 & sleep 1000")
	waitFor(t, "sh and two sleeps in the group", 5*time.Second, func() bool {
		pids, _ := d.Pids(g)
		return len(pids) == 3
	})
	if err := d.Freeze(ctx(t), g); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx(t), g); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("the guest's process was not killed")
	}
	paths, _ := d.Paths(g)
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
	if err := d.Remove(ctx(t), g); err != nil {
		t.Errorf("removing again: %v", err)
	}
}

func TestHostOrphans(t *testing.T) {
	d, _ := hostDriver(t)
	a := create(t, d, "a")
	b := create(t, d, "b")
	stray := filepath.Join(d.RootDirs()[0], "stray")
	if err := os.Mkdir(stray, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := d.Orphans([]cgroupdriver.Guest{a})
	if err != nil {
		t.Fatal(err)
	}
	want := []cgroupdriver.Guest{b, {Kind: "stray"}}
	if !slices.Equal(got, want) {
		t.Fatalf("Orphans = %v, want %v", got, want)
	}
	for _, o := range got {
		if err := d.RemoveOrphan(ctx(t), o); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := d.Orphans([]cgroupdriver.Guest{a}); len(got) != 0 {
		t.Errorf("orphans left: %v", got)
	}
}

// TestHostReserve moves a process (standing in for the agent) into the
// agent's group and caps the whole tree.
func TestHostReserve(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	// A partition two levels deep, which the driver creates.
	cfg := cgroupdriver.DefaultConfig()
	cfg.Report, cfg.Partition = &rep, cgrouptest.NewPartition(t, rep)+"/machine"
	d, err := cgroupdriver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testReserve(t, d, cgroupdriver.Reservation{MemoryHardLimit: new(int64(512 << 20)), CPUShares: new(uint64(2048))})
	if _, err := d.Reserve(cgroupdriver.Reservation{MemoryHardLimit: new(int64(-7))}, os.Getpid()); !errors.Is(err, cgroupdriver.ErrInvalidResources) {
		t.Errorf("bad reservation: %v", err)
	}
}

func testReserve(t *testing.T, d *cgroupdriver.Driver, r cgroupdriver.Reservation) {
	agent := exec.Command("sleep", "1000")
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
	})
	ws, err := d.Reserve(r, agent.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if got := readHost(t, w.Path()); got != w.Value {
			t.Errorf("%s = %s, want %s", w.Path(), got, w.Value)
		}
	}
	if want := btoi(r.MemoryHardLimit != nil) + btoi(r.CPUShares != nil); len(ws) != want {
		t.Errorf("%d writes, want %d: %v", len(ws), want, ws)
	}
	pid := strconv.Itoa(agent.Process.Pid)
	for _, root := range d.RootDirs() {
		procs := strings.Fields(readHost(t, root+"/agent/cgroup.procs"))
		if !slices.Contains(procs, pid) {
			t.Errorf("%s/agent holds %v, not the agent %s", root, procs, pid)
		}
	}
	// Guests still work below the reserved root, and are no orphans.
	g := create(t, d, "under")
	orphans, err := d.Orphans([]cgroupdriver.Guest{g})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range orphans {
		if o == g || o.Kind == "agent" {
			t.Errorf("%v reported as an orphan", o)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// memoryFiles reads a guest's memory limits from the files: the memory
// limit and the swap limit (v1 memory+swap, v2 swap alone), with every
// unlimited value as "unlimited".
func memoryFiles(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest) (mem, swap string, v2 bool) {
	t.Helper()
	paths, err := d.Paths(g)
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) string {
		if n, err := strconv.ParseInt(s, 10, 64); s == "max" || err == nil && n >= 1<<62 {
			return "unlimited"
		}
		return s
	}
	for _, p := range paths {
		if _, err := os.Stat(p + "/memory.limit_in_bytes"); err == nil {
			return norm(readHost(t, p+"/memory.limit_in_bytes")), norm(readHost(t, p+"/memory.memsw.limit_in_bytes")), false
		}
		if _, err := os.Stat(p + "/memory.max"); err == nil {
			return norm(readHost(t, p+"/memory.max")), norm(readHost(t, p+"/memory.swap.max")), true
		}
	}
	t.Fatalf("no memory controller in %v", paths)
	return "", "", false
}

// TestHostMemoryLimits walks a guest's memory limits through every order
// the kernel cares about (v1 refuses memory.limit_in_bytes above
// memory.memsw.limit_in_bytes, whichever is written): each step is one
// Apply, and every step reads the files back.
func TestHostMemoryLimits(t *testing.T) {
	d, _ := hostDriver(t)
	if !d.Host().SwapAccounting {
		t.Skip("this host does not account swap (no memory.memsw.limit_in_bytes / memory.swap.max)")
	}
	g := create(t, d, "memlimits")
	const (
		m32  = int64(32 << 20)
		m64  = int64(64 << 20)
		m128 = int64(128 << 20)
		unl  = int64(cgroupdriver.Unlimited)
	)
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	steps := []struct {
		name      string
		res       cgroupdriver.Resources
		mem, swap string // expected: v1 memory+swap
		v2swap    string // expected swap alone on v2
	}{
		{"hard 64MiB, swap 128MiB", cgroupdriver.Resources{MemoryHardLimit: new(m64), MemorySwapHardLimit: new(m128)}, n(m64), n(m128), n(m64)},
		{"hard and swap unlimited", cgroupdriver.Resources{MemoryHardLimit: new(unl), MemorySwapHardLimit: new(unl)}, "unlimited", "unlimited", "unlimited"},
		{"hard 32MiB, swap 32MiB", cgroupdriver.Resources{MemoryHardLimit: new(m32), MemorySwapHardLimit: new(m32)}, n(m32), n(m32), "0"},
		{"swap unlimited only", cgroupdriver.Resources{MemorySwapHardLimit: new(unl)}, n(m32), "unlimited", "unlimited"},
		{"hard 64MiB, swap 128MiB again", cgroupdriver.Resources{MemoryHardLimit: new(m64), MemorySwapHardLimit: new(m128)}, n(m64), n(m128), n(m64)},
		// With swap unmanaged, lifting the memory limit lifts memsw too
		// (v1), or leaves swap.max alone (v2).
		{"hard unlimited only", cgroupdriver.Resources{MemoryHardLimit: new(unl)}, "unlimited", "unlimited", n(m64)},
		{"hard 32MiB, swap 64MiB from unlimited", cgroupdriver.Resources{MemoryHardLimit: new(m32), MemorySwapHardLimit: new(m64)}, n(m32), n(m64), n(m32)},
	}
	for _, s := range steps {
		ws, err := d.Apply(g, s.res)
		if err != nil {
			t.Fatalf("%s: Apply: %v", s.name, err)
		}
		mem, swap, v2 := memoryFiles(t, d, g)
		want := s.swap
		if v2 {
			want = s.v2swap
		}
		if mem != s.mem || swap != want {
			t.Errorf("%s: memory %s, swap %s; want %s, %s (writes %v)", s.name, mem, swap, s.mem, want, ws)
		}
		applied := cgroupdriver.Applied(s.res, ws)
		if !maps.Equal(applied, s.res.Knobs()) {
			t.Errorf("%s: Applied = %v, want %v", s.name, applied, s.res.Knobs())
		}
		assertNoDrift(t, d, g, s.res)
	}
	// What the kernel still refuses is refused before any write.
	if _, err := d.Apply(g, cgroupdriver.Resources{MemoryHardLimit: new(m64), MemorySwapHardLimit: new(m32)}); !errors.Is(err, cgroupdriver.ErrInvalidResources) {
		t.Errorf("swap below memory: %v", err)
	}
	if mem, _, _ := memoryFiles(t, d, g); mem != n(m32) {
		t.Errorf("a refused Apply changed the memory limit to %s", mem)
	}
}

// TestApplyFailedMemoryWrite makes the memory limit's write fail after
// memsw was lifted for it: neither knob is reported as applied, since the
// host holds neither value.
func TestApplyFailedMemoryWrite(t *testing.T) {
	for _, l := range cgrouptest.Layouts() {
		t.Run(l.Name, func(t *testing.T) {
			d, fake := fakeDriver(t, l)
			res := cgroupdriver.Resources{MemoryHardLimit: new(int64(64 << 20)), MemorySwapHardLimit: new(int64(128 << 20))}
			ws, err := d.Plan(web, res)
			if err != nil {
				t.Fatal(err)
			}
			fake.Materialize(t, ws)
			var hard string
			v1 := false
			for _, w := range ws {
				if w.Knob == "hard_limit" {
					hard, v1 = w.Path(), w.File == "memory.limit_in_bytes"
				}
			}
			if err := os.Remove(hard); err != nil {
				t.Fatal(err)
			}
			done, err := d.Apply(web, res)
			if err == nil {
				t.Fatal("Apply succeeded without the memory limit's file")
			}
			if got := cgroupdriver.Applied(res, done); len(got) != 0 {
				t.Errorf("Applied after the failure = %v, want nothing (writes %v)", got, done)
			}
			// Lifting the limit alone lifts memsw first on v1, for the
			// memory limit's sake: it is reported as hard_limit only.
			lift := cgroupdriver.Resources{MemoryHardLimit: new(int64(cgroupdriver.Unlimited))}
			ws, err = d.Plan(web, lift)
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, w := range ws {
				files = append(files, w.Knob+":"+w.File+"="+w.Value)
			}
			want := []string{"hard_limit:memory.max=max"}
			if v1 {
				want = []string{"hard_limit:memory.memsw.limit_in_bytes=-1", "hard_limit:memory.limit_in_bytes=-1"}
			}
			if !slices.Equal(files, want) {
				t.Errorf("lifting the memory limit: %v, want %v", files, want)
			}
		})
	}
}
