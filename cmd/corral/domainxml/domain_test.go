package domainxml

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
)

func mapFile(t *testing.T, name string) *Result {
	t.Helper()
	doc, err := os.ReadFile("../testdata/libvirt/" + name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Map(doc, "")
	if err != nil {
		t.Fatalf("Map(%s): %v", name, err)
	}
	return r
}

// elements lists the Element of every entry.
func elements[T Mapping | Unmapped](items []T) []string {
	var out []string
	for _, it := range items {
		switch v := any(it).(type) {
		case Mapping:
			out = append(out, v.Element)
		case Unmapped:
			out = append(out, v.Element)
		}
	}
	return out
}

// TestMapKVM maps the KVM domain virsh 9.0 dumped on Debian 12 (see
// testdata/libvirt/README) field by field.
func TestMapKVM(t *testing.T) {
	r := mapFile(t, "kvm-web-vm.xml")
	want := api.CreateGuest{
		Name: "web-vm", Driver: "qemu", Memory: "1073741824", VCPUs: 2, CPUShares: 2048, NoStart: true,
		Disks: []string{
			"/var/lib/libvirt/images/web-vm.qcow2,format=qcow2,cache=none",
			"/var/lib/libvirt/images/web-data.img,format=raw,cache=writeback",
		},
		Tuning: map[string]string{
			"memory":      "805306368", // 786432 KiB
			"vcpu_period": "100000", "vcpu_quota": "50000",
			"global_period": "100000", "global_quota": "150000",
			"emulator_period": "100000", "emulator_quota": "20000",
			"vcpupin": "0:0;1:1", "emulatorpin": "0-1",
			"hard_limit": "1610612736", "soft_limit": "1073741824", "swap_hard_limit": "2147483648",
			"blkio_weight": "500", "device_weight": "/dev/vda,300",
			"device_read_bytes_sec": "/dev/vda,10485760", "device_write_iops_sec": "/dev/vda,200",
			"numa_mode": "strict", "numa_nodeset": "0",
		},
	}
	if !reflect.DeepEqual(r.Guest, want) {
		t.Errorf("guest:\n got %+v\nwant %+v", r.Guest, want)
	}
	wantUnmapped := []string{"cpu", "devices/disk target=sda", "devices/hostdev", "devices/interface",
		"devices/graphics", "devices/video", "devices/channel", "devices/rng"}
	if got := elements(r.Unmapped); !reflect.DeepEqual(got, wantUnmapped) {
		t.Errorf("unmapped %q, want %q", got, wantUnmapped)
	}
	if u := r.Unmapped[1]; u.Value != "/var/lib/libvirt/images/debian-12.5.0-amd64-netinst.iso" || !strings.Contains(u.Why, "cdrom") {
		t.Errorf("cdrom: %+v", u)
	}
	if len(r.Mapped) != 23 {
		t.Errorf("%d mapped elements, want 23: %q", len(r.Mapped), elements(r.Mapped))
	}
}

// TestMapLXC maps the LXC domain virsh dumped, field by field.
func TestMapLXC(t *testing.T) {
	r := mapFile(t, "lxc-ct1.xml")
	want := api.CreateGuest{
		Name: "ct1", Driver: "lxc", Memory: "536870912", VCPUs: 1, CPUShares: 512, NoStart: true,
		Rootfs:  "/var/lib/lxc/ct1/rootfs",
		Command: []string{"/bin/sh", "-c", "echo ct1 up; exec sleep 3600"},
		Devices: []string{"/dev/net/tun:rwm", "/dev/loop0:rwm"},
		Tuning: map[string]string{
			"memory":      "402653184",
			"vcpu_period": "200000", "vcpu_quota": "100000",
			"hard_limit": "536870912", "soft_limit": "268435456", "swap_hard_limit": "805306368",
			"blkio_weight": "300", "device_write_bytes_sec": "/dev/vda,5242880", "device_read_iops_sec": "/dev/vda,500",
			"numa_mode": "strict", "numa_nodeset": "0",
		},
	}
	if !reflect.DeepEqual(r.Guest, want) {
		t.Errorf("guest:\n got %+v\nwant %+v", r.Guest, want)
	}
	wantUnmapped := []string{"devices/filesystem target=/srv", "devices/interface"}
	if got := elements(r.Unmapped); !reflect.DeepEqual(got, wantUnmapped) {
		t.Errorf("unmapped %q, want %q", got, wantUnmapped)
	}
}

func TestScale(t *testing.T) {
	for _, c := range []struct {
		v    uint64
		unit string
		want uint64
	}{
		{1, "", 1024}, {1, "KiB", 1024}, {1, "k", 1024}, {1, "KB", 1000}, {3, "b", 3}, {3, "bytes", 3},
		{2, "MiB", 2 << 20}, {2, "M", 2 << 20}, {2, "MB", 2e6}, {1, "GiB", 1 << 30}, {1, "gb", 1e9}, {1, "TiB", 1 << 40},
	} {
		got, err := scale(c.v, c.unit)
		if err != nil || got != c.want {
			t.Errorf("scale(%d, %q) = %d, %v; want %d", c.v, c.unit, got, err, c.want)
		}
	}
	for _, unit := range []string{"X", "KiBB", "kx"} {
		if _, err := scale(1, unit); err == nil {
			t.Errorf("scale(1, %q) took it", unit)
		}
	}
	if _, err := scale(1<<60, "GiB"); err == nil {
		t.Error("an overflowing size was taken")
	}
}

// TestMapCases: what a domain may hold beyond the samples.
func TestMapCases(t *testing.T) {
	const head = `<domain type='kvm'><name>vm</name><memory unit='MiB'>256</memory>`
	const tail = `<os><type>hvm</type><kernel>/k</kernel><initrd>/i</initrd><cmdline>quiet</cmdline></os></domain>`
	r, err := Map([]byte(head+`<vcpu cpuset='1-2'>3</vcpu><cputune><vcpupin vcpu='1' cpuset='0'/><vcpupin vcpu='7' cpuset='0'/>
		<quota>-5</quota><period>10</period></cputune>
		<memtune><hard_limit>9007199254740991</hard_limit><min_guarantee>1024</min_guarantee></memtune>`+tail), "vm2")
	if err != nil {
		t.Fatal(err)
	}
	g := r.Guest
	if g.Name != "vm2" || g.Kernel != "/k" || g.Initrd != "/i" || g.VCPUs != 3 {
		t.Errorf("guest %+v", g)
	}
	// vCPUs without a pin, and the emulator, take <vcpu cpuset>, as in libvirt.
	for k, v := range map[string]string{"vcpupin": "0:1-2;1:0;2:1-2", "emulatorpin": "1-2", "vcpu_quota": "-1", "hard_limit": "unlimited"} {
		if g.Tuning[k] != v {
			t.Errorf("knob %s = %q, want %q", k, g.Tuning[k], v)
		}
	}
	if _, ok := g.Tuning["vcpu_period"]; ok {
		t.Error("a period out of range was mapped")
	}
	want := []string{"cputune/period", "cputune/vcpupin vcpu=7", "memtune/min_guarantee", "os/cmdline"}
	if got := elements(r.Unmapped); !reflect.DeepEqual(got, want) {
		t.Errorf("unmapped %q, want %q", got, want)
	}

	for _, c := range []struct{ doc, says string }{
		{`<domain type='xen'><name>x</name><memory>1024</memory><os><type>hvm</type></os></domain>`, `type "xen"`},
		{`<domain type='kvm'><name>Web_1</name><memory>1024</memory><os><type>hvm</type></os></domain>`, "--name"},
		{`<domain type='lxc'><name>c</name><memory>1024</memory><os><type>hvm</type></os></domain>`, "os type exe"},
		{`<domain type='kvm'><name>v</name><os><type>hvm</type></os></domain>`, "no <memory>"},
		{`not xml`, "virsh dumpxml"},
	} {
		if _, err := Map([]byte(c.doc), ""); !errors.Is(err, ErrDomain) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Map(%.40s): %v, want ErrDomain saying %q", c.doc, err, c.says)
		}
	}
}
