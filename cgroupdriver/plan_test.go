package cgroupdriver_test

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

var web = cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "web-1"}

// allKnobs manages every knob of the model.
func allKnobs() cgroupdriver.Resources {
	return cgroupdriver.Resources{
		CPUShares:           new(uint64(512)),
		CPUPeriodUs:         new(uint64(100000)),
		CPUQuotaUs:          new(int64(50000)),
		CpusetCPUs:          "1,0",
		CpusetMems:          "0",
		MemoryHardLimit:     new(int64(256 << 20)),
		MemorySoftLimit:     new(int64(128 << 20)),
		MemorySwapHardLimit: new(int64(512 << 20)),
		BlkioWeight:         new(uint16(500)),
		BlkioThrottle:       []cgroupdriver.DeviceThrottle{{Major: 254, Minor: 0, ReadBps: 10 << 20, WriteIOPS: 100}},
		Devices: &cgroupdriver.DeviceACL{Allow: append(cgroupdriver.DefaultDeviceRules(true),
			cgroupdriver.DeviceRule{Type: 'b', Major: 254, Minor: 0, Access: "rw"})},
		NetClassID: new(uint32(0x100001)),
		PidsMax:    new(int64(128)),
	}
}

// fakeDriver builds a driver for a fake layout: host facts probed from the
// fake cgroupfs, and the host-global ones (disks, kvm, page size) fixed.
func fakeDriver(t *testing.T, l cgrouptest.Layout) (*cgroupdriver.Driver, *cgrouptest.Fake) {
	t.Helper()
	fake := l.Build(t)
	rep := fake.Report(t)
	cfg := cgroupdriver.DefaultConfig()
	cfg.Report, cfg.Partition = &rep, l.Partition
	probe, err := cgroupdriver.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	host := probe.Host()
	host.BlockDevices, host.KVM, host.PageSize, host.SwapAccounting = []string{"254:0", "8:0"}, true, 4096, true
	cfg.Host = &host
	d, err := cgroupdriver.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d, fake
}

// TestPlanGolden pins, for each layout, the detected report, the probed host
// facts, the steps that create the tree and the writes of every knob.
func TestPlanGolden(t *testing.T) {
	for _, l := range cgrouptest.Layouts() {
		t.Run(l.Name, func(t *testing.T) {
			d, fake := fakeDriver(t, l)
			var b strings.Builder
			rep, _ := json.MarshalIndent(d.Report(), "", "  ")
			host, _ := json.MarshalIndent(d.Host(), "", "  ")
			fmt.Fprintf(&b, "# layout %s, partition %q\n# report\n%s\n# host\n%s\n", l.Name, l.Partition, fake.Relative(string(rep)), host)
			b.WriteString("# tree: what Create does the first time\n")
			for _, w := range d.PlanTree() {
				if w.File == "" {
					fmt.Fprintf(&b, "mkdir %s\n", fake.Relative(w.Dir))
				} else {
					fmt.Fprintf(&b, "write %s = %q\n", fake.Relative(w.Path()), w.Value)
				}
			}
			res := allKnobs()
			ws, err := d.Plan(web, res)
			if errors.Is(err, cgroupdriver.ErrControllerMissing) {
				fmt.Fprintf(&b, "# refused\n%s\n", err)
				res.NetClassID = nil
				ws, err = d.Plan(web, res)
			}
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			fmt.Fprintf(&b, "# apply %s\n", web)
			for _, w := range ws {
				fmt.Fprintf(&b, "%-22s %s = %q\n", w.Knob, fake.Relative(w.Path()), w.Value)
			}
			golden(t, filepath.Join("testdata", "plan", l.Name+".golden"), b.String())
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update)", err, t.Name())
	}
	if string(want) != got {
		t.Errorf("%s differs; run with -update and review the diff.\ngot:\n%s", path, got)
	}
}

// TestObserveFake applies a plan to the fake cgroupfs, then finds no drift
// until a file is changed by hand.
func TestObserveFake(t *testing.T) {
	for _, l := range cgrouptest.Layouts() {
		t.Run(l.Name, func(t *testing.T) {
			d, fake := fakeDriver(t, l)
			res := allKnobs()
			// A plain directory cannot show what the kernel derives from
			// these (devices.list, per-device lines); the real-host test
			// covers them.
			res.NetClassID, res.Devices, res.BlkioThrottle = nil, nil, nil
			ws, err := d.Plan(web, res)
			if err != nil {
				t.Fatal(err)
			}
			fake.Materialize(t, ws)
			obs, err := d.Observe(web, res)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range obs {
				if o.Drift {
					t.Errorf("drift right after apply: %+v", o)
				}
			}
			var shares string
			for _, w := range ws {
				if w.Knob == "cpu_shares" {
					shares = w.Path()
				}
			}
			if err := os.WriteFile(shares, []byte("7\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			obs, err = d.Observe(web, res)
			if err != nil {
				t.Fatal(err)
			}
			var drifted []string
			for _, o := range obs {
				if o.Drift {
					drifted = append(drifted, o.Knob+"="+o.Got)
				}
			}
			if len(drifted) != 1 || drifted[0] != "cpu_shares=7" {
				t.Errorf("drifted = %v, want [cpu_shares=7]", drifted)
			}
		})
	}
}

// TestBadInput checks that values the host cannot take are refused with the
// field named, and that nothing is written.
func TestBadInput(t *testing.T) {
	layouts := map[string]cgrouptest.Layout{}
	for _, l := range cgrouptest.Layouts() {
		layouts[l.Name] = l
	}
	type R = cgroupdriver.Resources
	for _, tc := range []struct {
		layout  string
		name    string
		res     R
		field   string
		missing bool // ErrControllerMissing rather than ErrInvalidResources
	}{
		{"hybrid", "zero memory", R{MemoryHardLimit: new(int64(0))}, "hard_limit", false},
		{"hybrid", "negative memory", R{MemoryHardLimit: new(int64(-5))}, "hard_limit", false},
		{"hybrid", "below a page", R{MemorySoftLimit: new(int64(100))}, "soft_limit", false},
		{"hybrid", "swap below memory", R{MemoryHardLimit: new(int64(1 << 30)), MemorySwapHardLimit: new(int64(1 << 20))}, "swap_hard_limit", false},
		{"hybrid", "swap limited, memory not", R{MemoryHardLimit: new(int64(-1)), MemorySwapHardLimit: new(int64(1 << 30))}, "swap_hard_limit", false},
		{"hybrid", "quota below 1000us", R{CPUQuotaUs: new(int64(999))}, "vcpu_quota", false},
		{"hybrid", "period too short", R{CPUPeriodUs: new(uint64(999))}, "vcpu_period", false},
		{"hybrid", "period too long", R{CPUPeriodUs: new(uint64(1000001))}, "vcpu_period", false},
		{"hybrid", "shares too low", R{CPUShares: new(uint64(1))}, "cpu_shares", false},
		{"hybrid", "shares too high", R{CPUShares: new(uint64(262145))}, "cpu_shares", false},
		{"hybrid", "cpus the host lacks", R{CpusetCPUs: "2-7"}, "cpuset_cpus", false},
		{"hybrid", "cpuset garbage", R{CpusetCPUs: "one"}, "cpuset_cpus", false},
		{"hybrid", "memory node the host lacks", R{CpusetMems: "1"}, "numa_nodeset", false},
		{"hybrid", "numa mode unknown", R{NUMAMode: "bind"}, "numa_mode", false},
		{"hybrid", "emulatorpin outside the guest's cpuset", R{CpusetCPUs: "0", EmulatorPin: "1"}, "emulatorpin", false},
		{"hybrid", "vcpupin the host lacks", R{VCPUPin: map[int]string{1: "9"}}, "vcpupin[1]", false},
		{"hybrid", "bfq weight zero", R{BlkioWeight: new(uint16(0))}, "blkio_weight", false},
		{"hybrid", "bfq weight too high", R{BlkioWeight: new(uint16(1001))}, "blkio_weight", false},
		{"hybrid", "throttle a partition", R{BlkioThrottle: []cgroupdriver.DeviceThrottle{{Major: 254, Minor: 1, ReadBps: 1}}}, "blkio_throttle[0]", false},
		{"hybrid", "throttle twice", R{BlkioThrottle: []cgroupdriver.DeviceThrottle{{Major: 8}, {Major: 8}}}, "blkio_throttle[1]", false},
		{"hybrid", "device rule that does not parse", R{Devices: &cgroupdriver.DeviceACL{Allow: []cgroupdriver.DeviceRule{{Type: 'x', Access: "r"}}}}, "devices.allow[0]", false},
		{"hybrid", "device rule bad access", R{Devices: &cgroupdriver.DeviceACL{Allow: []cgroupdriver.DeviceRule{{Type: 'c', Major: 1, Minor: 3, Access: "rx"}}}}, "devices.allow[0]", false},
		{"hybrid", "zero pids", R{PidsMax: new(int64(0))}, "pids_max", false},
		{"hybrid", "net_cls not mounted", R{NetClassID: new(uint32(1))}, "net_cls_classid", true},
		{"v2", "net_cls on v2", R{NetClassID: new(uint32(1))}, "net_cls_classid", true},
		{"v2", "period without quota", R{CPUPeriodUs: new(uint64(100000))}, "vcpu_period", false},
		{"v2", "swap without memory", R{MemorySwapHardLimit: new(int64(1 << 30))}, "swap_hard_limit", false},
		{"v2", "io.weight range", R{BlkioWeight: new(uint16(20000))}, "blkio_weight", false},
	} {
		t.Run(tc.layout+"/"+tc.name, func(t *testing.T) {
			d, _ := fakeDriver(t, layouts[tc.layout])
			ws, err := d.Plan(web, tc.res)
			want := cgroupdriver.ErrInvalidResources
			if tc.missing {
				want = cgroupdriver.ErrControllerMissing
			}
			if !errors.Is(err, want) || ws != nil {
				t.Fatalf("Plan = %v, %v; want %v", ws, err, want)
			}
			var fe *cgroupdriver.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("error %q does not name field %s", err, tc.field)
			}
			if _, err := d.Apply(web, tc.res); !errors.Is(err, want) {
				t.Errorf("Apply: %v", err)
			}
			t.Log(err)
		})
	}
	d, fake := fakeDriver(t, layouts["hybrid"])
	for _, id := range []string{"../etc", "a/b", ".", "Web"} {
		g := cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: id}
		if _, err := d.Plan(g, allKnobs()); !errors.Is(err, cgroupdriver.ErrInvalidGuestID) {
			t.Errorf("guest %q: %v", id, err)
		}
		if err := d.Create(g); !errors.Is(err, cgroupdriver.ErrInvalidGuestID) {
			t.Errorf("Create(%q): %v", id, err)
		}
	}
	// Nothing was written anywhere: no corral directory exists.
	filepath.WalkDir(fake.Root, func(p string, e os.DirEntry, err error) error {
		if err == nil && strings.Contains(p, "corral") && e.Name() != "corral.service" {
			t.Errorf("written despite refusal: %s", p)
		}
		return nil
	})
}

// TestStatsFake parses the kernel's statistics files as v1 and v2 write them.
func TestStatsFake(t *testing.T) {
	for _, tc := range []struct {
		layout string
		files  map[string]string
		want   cgroupdriver.Stats
	}{{
		layout: "separate",
		files: map[string]string{
			"cpuacct.usage_all":                         "cpu user system\n0 100 20\n1 300 80\n",
			"memory.usage_in_bytes":                     "4096\n",
			"memory.max_usage_in_bytes":                 "8192\n",
			"memory.failcnt":                            "3\n",
			"memory.memsw.failcnt":                      "2\n",
			"memory.oom_control":                        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
			"pids.current":                              "4\n",
			"blkio.throttle.io_service_bytes_recursive": "254:0 Read 512\n254:0 Write 1024\n254:0 Sync 0\n254:0 Total 1536\n8:0 Read 10\nTotal 1546\n",
			"blkio.throttle.io_serviced_recursive":      "254:0 Read 1\n254:0 Write 2\nTotal 3\n",
		},
		want: cgroupdriver.Stats{
			CPU:       cgroupdriver.CPUStats{TotalNs: 500, UserNs: 400, SystemNs: 100, PerCPUNs: []uint64{120, 380}},
			Memory:    cgroupdriver.MemoryStats{Usage: 4096, Peak: 8192, Failcnt: 3, SwapFailcnt: 2, Events: cgroupdriver.MemoryEvents{OOMKill: 1}},
			LimitHits: 5,
			Pids:      cgroupdriver.PidsStats{Current: 4},
			IO:        cgroupdriver.IOStats{ReadBytes: 522, WriteBytes: 1024, ReadOps: 1, WriteOps: 2},
		},
	}, {
		layout: "v2",
		files: map[string]string{
			"cpu.stat":       "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 0\n",
			"memory.current": "4096\n",
			"memory.peak":    "8192\n",
			"memory.events":  "low 0\nhigh 7\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n",
			"pids.current":   "2\n",
			"io.stat":        "254:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
		},
		want: cgroupdriver.Stats{
			CPU:       cgroupdriver.CPUStats{TotalNs: 5000, UserNs: 3000, SystemNs: 2000},
			Memory:    cgroupdriver.MemoryStats{Usage: 4096, Peak: 8192, Events: cgroupdriver.MemoryEvents{High: 7, Max: 9, OOM: 1, OOMKill: 1}},
			LimitHits: 9,
			Pids:      cgroupdriver.PidsStats{Current: 2},
			IO:        cgroupdriver.IOStats{ReadBytes: 513, WriteBytes: 1024, ReadOps: 2, WriteOps: 2},
		},
	}} {
		t.Run(tc.layout, func(t *testing.T) {
			var l cgrouptest.Layout
			for _, x := range cgrouptest.Layouts() {
				if x.Name == tc.layout {
					l = x
				}
			}
			d, _ := fakeDriver(t, l)
			paths, _ := d.Paths(web)
			for _, dir := range paths {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				for name, content := range tc.files {
					if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			st, err := d.Stats(web)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(st)
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestOrphansFake(t *testing.T) {
	d, fake := fakeDriver(t, cgrouptest.Layouts()[0])
	var ws []cgroupdriver.Write
	for _, root := range d.RootDirs() {
		for _, dir := range []string{"qemu/web-1", "qemu/old", "lxc/db", "process/Bad.Name", "agent", "stray"} {
			ws = append(ws, cgroupdriver.Write{Dir: root + "/" + dir})
		}
	}
	fake.Materialize(t, ws)
	got, err := d.Orphans([]cgroupdriver.Guest{web, {Kind: cgroupdriver.KindLXC, ID: "db"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, g.String())
	}
	if strings.Join(names, " ") != "process/Bad.Name qemu/old stray/" {
		t.Errorf("orphans = %v", names)
	}
}
