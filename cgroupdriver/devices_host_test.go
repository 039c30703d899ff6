package cgroupdriver_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// extraDevice is a host device outside the minimal set that a read-only
// open does nothing to.
const extraDevice = "/dev/loop-control"

// TestHostExtraDevices: a process guest with the minimal ACL cannot open a
// device outside it but can open /dev/null; the "devices" knob, by path
// (resolved here) or by number, lets it open the device; a path the host
// lacks is refused before anything is written.
func TestHostExtraDevices(t *testing.T) {
	d, _ := hostDriver(t)
	testExtraDevices(t, d, create(t, d, "extra-dev"))
}

func TestHostV2ExtraDevices(t *testing.T) {
	full := cgrouptest.RequireHost(t)
	u, ok := full.Unified()
	if !ok {
		t.Skip("skipping: no cgroup2 mount on this host")
	}
	d := hostDriverFor(t, cgroupdriver.Report{Mode: cgroupdriver.ModeV2, Hierarchies: []cgroupdriver.Hierarchy{u}})
	testExtraDevices(t, d, create(t, d, "v2-extra-dev"))
}

func testExtraDevices(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest) {
	if _, err := os.Stat(extraDevice); err != nil {
		t.Skipf("skipping: this host has no %s: %v", extraDevice, err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	open := func() string {
		t.Helper()
		out, err := run(t, d, g, []string{helperEnv + "=open"}, self, extraDevice, "/dev/null")
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	knob := func(v string) cgroupdriver.Resources {
		t.Helper()
		var r cgroupdriver.Resources
		if err := r.SetKnob("devices", v); err != nil {
			t.Fatalf("SetKnob(devices, %q): %v", v, err)
		}
		return r
	}
	apply := func(r cgroupdriver.Resources) {
		t.Helper()
		ws, err := d.Apply(g, r)
		if err != nil {
			t.Fatal(err)
		}
		want := r.Knobs()["devices"]
		if got := cgroupdriver.Applied(r, ws)["devices"]; got != want {
			t.Errorf("Applied devices = %q, want %q", got, want)
		}
		assertNoDrift(t, d, g, r)
	}
	denied := extraDevice + " EPERM\n/dev/null ok"
	allowed := extraDevice + " ok\n/dev/null ok"

	apply(knob(cgroupdriver.NoDevicesText))
	if got := open(); got != denied {
		t.Errorf("minimal set: got %q, want %q", got, denied)
	}
	apply(knob(extraDevice + ":r"))
	if got := open(); got != allowed {
		t.Errorf("allowed by path: got %q, want %q", got, allowed)
	}
	// Write access only: a read-only open is still refused.
	apply(knob(extraDevice + ":w"))
	if got := open(); got != denied {
		t.Errorf("allowed for writing only: got %q, want %q", got, denied)
	}
	var st cgroupdriver.DeviceRule
	if st, err = cgroupdriver.ResolveDeviceRule(cgroupdriver.DeviceRule{Path: extraDevice, Access: "r"}); err != nil {
		t.Fatal(err)
	}
	apply(knob(st.String()))
	if got := open(); got != allowed {
		t.Errorf("allowed by number (%s): got %q, want %q", st, got, allowed)
	}

	// A path this host does not have fails the whole ACL, and the one in
	// force stays.
	_, err = d.Apply(g, knob("/dev/corral-no-such-device:rw,"+extraDevice+":r"))
	var fe *cgroupdriver.FieldError
	if !errors.As(err, &fe) || fe.Field != "devices" || !strings.Contains(fe.Reason, "no such device node") {
		t.Fatalf("missing device: want a devices FieldError saying so, got %v", err)
	}
	if got := open(); got != allowed {
		t.Errorf("after a refused ACL: got %q, want the earlier ACL's %q", got, allowed)
	}
	// A path that is not a device node is refused too.
	if _, err := d.Apply(g, knob("/dev/shm:r")); !errors.As(err, &fe) || !strings.Contains(fe.Reason, "not a character or block device") {
		t.Errorf("directory as a device: want a FieldError, got %v", err)
	}
}
