package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestDevImportLibvirt imports the two domains virsh dumped
// (testdata/libvirt) through corral dev and checks that guest show has
// the XML's values: memory, vCPUs and every tuning knob, and that the
// elements corral cannot map are listed.
func TestDevImportLibvirt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	t.Parallel()
	p := startDev(t, t.TempDir())
	kib := func(n int64) string { return fmt.Sprint(n * 1024) }

	cases := []struct {
		file, name string
		// xml holds lines of the file the values below come from.
		xml    []string
		check  func(t *testing.T, g *api.Guest)
		knobs  map[string]string
		notMap []string
	}{{
		file: "kvm-web-vm.xml", name: "web-vm",
		xml: []string{"<memory unit='KiB'>1048576</memory>", "<currentMemory unit='KiB'>786432</currentMemory>",
			"<vcpu placement='static'>2</vcpu>", "<shares>2048</shares>", "<quota>50000</quota>",
			"<global_quota>150000</global_quota>", "<emulator_quota>20000</emulator_quota>",
			"<vcpupin vcpu='1' cpuset='1'/>", "<emulatorpin cpuset='0-1'/>",
			"<hard_limit unit='KiB'>1572864</hard_limit>", "<soft_limit unit='KiB'>1048576</soft_limit>",
			"<swap_hard_limit unit='KiB'>2097152</swap_hard_limit>", "<weight>300</weight>",
			"<read_bytes_sec>10485760</read_bytes_sec>", "<write_iops_sec>200</write_iops_sec>",
			"<memory mode='strict' nodeset='0'/>", "<driver name='qemu' type='qcow2' cache='none' discard='unmap'/>"},
		check: func(t *testing.T, g *api.Guest) {
			if g.Driver != "qemu" || g.MemoryBytes != 1048576*1024 || g.VCPUs != 2 || g.CPUShares != 2048 {
				t.Errorf("definition: driver %s, memory %d, vcpus %d, shares %d", g.Driver, g.MemoryBytes, g.VCPUs, g.CPUShares)
			}
			want := []events.GuestDisk{
				{Image: "/var/lib/libvirt/images/web-vm.qcow2", Format: "qcow2", Cache: "none"},
				{Image: "/var/lib/libvirt/images/web-data.img", Format: "raw", Cache: "writeback"},
			}
			if !reflect.DeepEqual(g.Disks, want) {
				t.Errorf("disks %+v, want %+v", g.Disks, want)
			}
		},
		knobs: map[string]string{
			"max_memory": kib(1048576), "memory": kib(786432), "cpu_shares": "2048",
			"vcpu_period": "100000", "vcpu_quota": "50000", "global_period": "100000", "global_quota": "150000",
			"emulator_period": "100000", "emulator_quota": "20000", "vcpupin": "0:0;1:1", "emulatorpin": "0-1",
			"hard_limit": kib(1572864), "soft_limit": kib(1048576), "swap_hard_limit": kib(2097152),
			"blkio_weight": "500", "device_weight": "/dev/vda,300", "device_read_bytes_sec": "/dev/vda,10485760",
			"device_write_iops_sec": "/dev/vda,200", "numa_mode": "strict", "numa_nodeset": "0",
		},
		notMap: []string{"cpu", "devices/disk target=sda", "devices/hostdev", "devices/interface", "devices/graphics",
			"devices/video", "devices/channel", "devices/rng"},
	}, {
		file: "lxc-ct1.xml", name: "ct1",
		xml: []string{"<memory unit='KiB'>524288</memory>", "<currentMemory unit='KiB'>393216</currentMemory>",
			"<shares>512</shares>", "<period>200000</period>", "<quota>100000</quota>",
			"<hard_limit unit='KiB'>524288</hard_limit>", "<soft_limit unit='KiB'>262144</soft_limit>",
			"<swap_hard_limit unit='KiB'>786432</swap_hard_limit>", "<weight>300</weight>",
			"<read_iops_sec>500</read_iops_sec>", "<write_bytes_sec>5242880</write_bytes_sec>",
			"<source dir='/var/lib/lxc/ct1/rootfs'/>", "<init>/bin/sh</init>", "<char>/dev/net/tun</char>", "<block>/dev/loop0</block>"},
		check: func(t *testing.T, g *api.Guest) {
			if g.Driver != "lxc" || g.MemoryBytes != 524288*1024 || g.VCPUs != 1 || g.CPUShares != 512 {
				t.Errorf("definition: driver %s, memory %d, vcpus %d, shares %d", g.Driver, g.MemoryBytes, g.VCPUs, g.CPUShares)
			}
			if g.Rootfs != "/var/lib/lxc/ct1/rootfs" || !reflect.DeepEqual(g.Command, []string{"/bin/sh", "-c", "echo ct1 up; exec sleep 3600"}) {
				t.Errorf("rootfs %q, command %q", g.Rootfs, g.Command)
			}
			if want := []string{"/dev/loop0:rwm", "/dev/net/tun:rwm"}; !reflect.DeepEqual(g.Devices, want) {
				t.Errorf("devices %q, want %q", g.Devices, want)
			}
		},
		knobs: map[string]string{
			"max_memory": kib(524288), "memory": kib(393216), "cpu_shares": "512", "vcpu_period": "200000", "vcpu_quota": "100000",
			"hard_limit": kib(524288), "soft_limit": kib(262144), "swap_hard_limit": kib(786432),
			"blkio_weight": "300", "device_write_bytes_sec": "/dev/vda,5242880", "device_read_iops_sec": "/dev/vda,500",
			"numa_mode": "strict", "numa_nodeset": "0", "devices": "/dev/loop0:rwm,/dev/net/tun:rwm",
		},
		notMap: []string{"devices/filesystem target=/srv", "devices/interface"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join("testdata", "libvirt", c.file)
			doc, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range c.xml {
				if !strings.Contains(string(doc), l) {
					t.Fatalf("%s has no %s: the expected values below are not the file's", file, l)
				}
			}

			// --strict and --dry-run create nothing.
			if r := p.corral("guest", "import", "--from-libvirt-xml", file, "--strict"); r.code == 0 || !strings.Contains(r.stderr, "nothing was created") {
				t.Errorf("--strict: exit %d\n%s", r.code, r.stderr)
			}
			out := p.ok("guest", "import", "--from-libvirt-xml", file, "--dry-run")
			if !strings.Contains(out, "nothing created") || !strings.Contains(out, "knob vcpu_quota") {
				t.Errorf("--dry-run printed:\n%s", out)
			}
			if r := p.corral("guest", "show", c.name); r.code == 0 {
				t.Fatalf("guest %s exists after --strict and --dry-run", c.name)
			}

			r := p.corral("guest", "import", "--from-libvirt-xml", file)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "guest "+c.name+" defined from libvirt domain "+c.name) {
				t.Fatalf("import: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			// One line per element corral does not map, after the heading
			// and the table's header.
			warn := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(warn) != len(c.notMap)+2 || !strings.Contains(warn[0], fmt.Sprintf("%d elements of domain %s are not mapped", len(c.notMap), c.name)) {
				t.Fatalf("warnings:\n%s", r.stderr)
			}
			for i, elem := range c.notMap {
				if !strings.HasPrefix(warn[i+2], elem+"  ") {
					t.Errorf("warning %d is %q, want element %s", i, warn[i+2], elem)
				}
			}

			g := guestJSON(t, p, c.name)
			if g.Status != api.StatusPending || g.Desired != api.DesiredStopped {
				t.Errorf("status %s, desired %s: an import defines, as virsh define", g.Status, g.Desired)
			}
			c.check(t, g)
			for k, want := range c.knobs {
				if got := g.ConfigKnob(k); got != want {
					t.Errorf("knob %s = %q, want %q", k, got, want)
				}
			}

			// The tuning came in the definition's proposal, attributed.
			var tuned int
			for _, line := range eventLines(t, p, "--guest", c.name) {
				var e struct {
					Type   string `json:"type"`
					Reason string `json:"reason"`
				}
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatal(err)
				}
				if e.Type == "guest.tuned" {
					tuned++
					if e.Reason != "at creation" {
						t.Errorf("tuned event %s", line)
					}
				}
			}
			if tuned == 0 {
				t.Error("no guest.tuned events")
			}

			// The same domain again is refused: the guest exists. Under
			// another name it is a second guest.
			if r := p.corral("guest", "import", "--from-libvirt-xml", file); r.code == 0 || !strings.Contains(r.stderr, "exists") {
				t.Errorf("second import: exit %d\n%s", r.code, r.stderr)
			}
			p.ok("guest", "import", "--from-libvirt-xml", file, "--name", c.name+"-2")
			if got := guestJSON(t, p, c.name+"-2").ConfigKnob("hard_limit"); got != c.knobs["hard_limit"] {
				t.Errorf("%s-2 hard_limit %s", c.name, got)
			}
		})
	}
}
