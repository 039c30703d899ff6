package cgroupdriver_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

func TestBlkioDeviceKnobsRoundTrip(t *testing.T) {
	var r cgroupdriver.Resources
	set := map[string]string{
		"blkio_weight":           "500",
		"device_weight":          "/dev/sdb,300,/dev/sda,500",
		"device_read_bytes_sec":  "/dev/sda,1048576",
		"device_write_bytes_sec": "/dev/sda,0,/dev/sdb,4096", // a 0 clears sda
		"device_read_iops_sec":   "",                         // managed, no device
	}
	for k, v := range set {
		if err := r.SetKnob(k, v); err != nil {
			t.Fatalf("SetKnob(%s, %q): %v", k, v, err)
		}
	}
	want := map[string]string{
		"blkio_weight":           "500",
		"device_weight":          "/dev/sda,500,/dev/sdb,300",
		"device_read_bytes_sec":  "/dev/sda,1048576",
		"device_write_bytes_sec": "/dev/sdb,4096",
		"device_read_iops_sec":   "",
	}
	check := func(what string, r cgroupdriver.Resources) {
		t.Helper()
		got := r.Knobs()
		if len(got) != len(want) {
			t.Errorf("%s: Knobs() = %v, want %v", what, got, want)
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s: Knobs()[%s] = %q (present %v), want %q", what, k, g, ok, v)
			}
		}
		if _, ok := got["device_write_iops_sec"]; ok {
			t.Errorf("%s: an untuned list is reported as managed", what)
		}
	}
	check("set", r)

	// The wire keeps a managed empty list apart from an unmanaged one.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back cgroupdriver.Resources
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	check("json "+string(b), back)

	only := r.Only("device_write_bytes_sec")
	if k := only.Knobs(); len(k) != 1 || k["device_write_bytes_sec"] != "/dev/sdb,4096" {
		t.Errorf("Only(device_write_bytes_sec).Knobs() = %v", k)
	}

	for _, c := range []struct{ knob, value string }{
		{"device_weight", "/dev/sda"},
		{"device_weight", "sda,500"},
		{"device_weight", "/dev/sda,five"},
		{"device_weight", "/dev/sda,1,/dev/sda,2"},
		{"device_read_bytes_sec", "/dev/../sda,1"},
	} {
		var r cgroupdriver.Resources
		var fe *cgroupdriver.FieldError
		if err := r.SetKnob(c.knob, c.value); !errors.As(err, &fe) || fe.Field != c.knob {
			t.Errorf("SetKnob(%s, %q) = %v, want a FieldError for %s", c.knob, c.value, err, c.knob)
		}
		if r.BlkioDevices != nil {
			t.Errorf("SetKnob(%s, %q) failed but changed the resources", c.knob, c.value)
		}
	}
}

// blockNode makes a block device node in a temporary directory for a whole
// disk of this host, and returns its path and "major:minor".
func blockNode(t *testing.T) (string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: making a device node needs root")
	}
	ents, _ := os.ReadDir("/sys/dev/block")
	for _, e := range ents {
		if _, err := os.Stat("/sys/dev/block/" + e.Name() + "/partition"); err == nil {
			continue
		}
		a, b, _ := strings.Cut(e.Name(), ":")
		maj, err1 := strconv.ParseUint(a, 10, 32)
		min, err2 := strconv.ParseUint(b, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		p := filepath.Join(t.TempDir(), "disk")
		if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(uint32(maj), uint32(min)))); err != nil {
			t.Skipf("skipping: mknod %s: %v", p, err)
		}
		return p, e.Name()
	}
	t.Skip("skipping: this host has no whole disk in /sys/dev/block")
	return "", ""
}

// TestPlanBlkioDevices plans the per-device knobs on every layout: the
// path becomes the device's numbers, v1 writes the throttle files, v2 one
// io.max key per knob, and a 0 removes.
func TestPlanBlkioDevices(t *testing.T) {
	disk, dev := blockNode(t)
	var r cgroupdriver.Resources
	for k, v := range map[string]string{
		"device_read_bytes_sec":  disk + ",4194304",
		"device_write_bytes_sec": disk + ",0",
		"device_write_iops_sec":  disk + ",200",
		"device_weight":          disk + ",0",
	} {
		if err := r.SetKnob(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range cgrouptest.Layouts() {
		t.Run(l.Name, func(t *testing.T) {
			d, _ := fakeDriver(t, l)
			ws, err := d.Plan(web, r)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			got := map[string]string{}
			for _, w := range ws {
				got[w.Knob] += w.File + "=" + w.Value + ";"
			}
			weight := weightDeviceFileFor(d.Host().BlkioWeightFile)
			want := map[string]string{
				"device_read_bytes_sec":  "blkio.throttle.read_bps_device=" + dev + " 4194304;",
				"device_write_bytes_sec": "blkio.throttle.write_bps_device=" + dev + " 0;",
				"device_write_iops_sec":  "blkio.throttle.write_iops_device=" + dev + " 200;",
				"device_weight":          weight + "=" + dev + " default;",
			}
			if strings.HasPrefix(d.Host().BlkioWeightFile, "io.") {
				want["device_read_bytes_sec"] = "io.max=" + dev + " rbps=4194304;"
				want["device_write_bytes_sec"] = "io.max=" + dev + " wbps=max;"
				want["device_write_iops_sec"] = "io.max=" + dev + " wiops=200;"
			}
			if weight == "blkio.weight_device" {
				want["device_weight"] = weight + "=" + dev + " 0;"
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: planned %q, want %q", k, got[k], v)
				}
			}
			// What the agent reports for the writes: the canonical text.
			applied := cgroupdriver.Applied(r, ws)
			if applied["device_read_bytes_sec"] != disk+",4194304" || applied["device_write_bytes_sec"] != "" {
				t.Errorf("Applied = %v", applied)
			}
		})
	}
}

func weightDeviceFileFor(f string) string {
	switch f {
	case "blkio.weight":
		return "blkio.weight_device"
	case "blkio.bfq.weight":
		return "blkio.bfq.weight_device"
	}
	return f
}

// TestPlanBlkioDeviceRefused: a path that is absent, not a block device or
// a partition is refused naming the knob and the path; a 0 for a device
// that is gone is nothing to do.
func TestPlanBlkioDeviceRefused(t *testing.T) {
	d, _ := fakeDriver(t, cgrouptest.Layouts()[0])
	missing := filepath.Join(t.TempDir(), "no-such-disk")
	notBlock := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notBlock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ knob, path, says string }{
		{"device_read_bytes_sec", missing, "no such device on this node"},
		{"device_weight", notBlock, "not a block device"},
	} {
		var r cgroupdriver.Resources
		if err := r.SetKnob(c.knob, c.path+",500"); err != nil {
			t.Fatal(err)
		}
		r.CPUShares = new(uint64(1)) // also wrong: reported with it
		_, err := d.Plan(web, r)
		var fe *cgroupdriver.FieldError
		if !errors.As(err, &fe) || fe.Field != c.knob || fe.Value != c.path || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Plan with %s %s: %v; want a FieldError for %s naming the path and saying %q", c.knob, c.path, err, c.knob, c.says)
		}
		if !strings.Contains(err.Error(), "cpu_shares") {
			t.Errorf("Plan stopped at the device: %v", err)
		}
		if err := d.Validate(r); err == nil || !strings.Contains(err.Error(), c.path) {
			t.Errorf("Validate: %v, want it to name %s", err, c.path)
		}
	}
	var r cgroupdriver.Resources
	if err := r.SetKnob("device_read_bytes_sec", missing+",0"); err != nil {
		t.Fatal(err)
	}
	ws, err := d.Plan(web, r)
	if err != nil || len(ws) != 0 {
		t.Errorf("clearing a device that is gone: %v, %v; want nothing to do", ws, err)
	}
}

func TestSameDeviceLine(t *testing.T) {
	for _, c := range []struct {
		want, got string
		same      bool
	}{
		{"7:0 4194304", "7:0 4194304", true},
		{"7:0 0", "", true},
		{"7:0 4194304", "", false},
		{"7:0 rbps=4194304", "7:0 rbps=4194304 wbps=max riops=max wiops=max", true},
		{"7:0 rbps=4194304", "7:0 rbps=1048576 wbps=max riops=max wiops=max", false},
		{"7:0 wbps=max", "", true},
		{"7:0 wbps=max", "7:0 rbps=1 wbps=max riops=max wiops=max", true},
		{"7:0 riops=5", "7:0 rbps=1 wbps=max riops=max wiops=max", false},
		{"7:0 default", "", true},
	} {
		if got := cgroupdriver.SameDeviceLine(c.want, c.got); got != c.same {
			t.Errorf("SameDeviceLine(%q, %q) = %v, want %v", c.want, c.got, got, c.same)
		}
	}
}
