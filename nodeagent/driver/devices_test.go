package driver_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestProcessDeviceACL: a process guest started with no device settings
// gets the minimal set (it can open /dev/null, not /dev/loop-control); one
// given /dev/loop-control as an extra device opens it; one given a path
// the host lacks does not start, and says why.
func TestProcessDeviceACL(t *testing.T) {
	const dev = "/dev/loop-control"
	if _, err := os.Stat(dev); err != nil {
		t.Skipf("skipping: this host has no %s: %v", dev, err)
	}
	cfg := drivertest.Config(t)
	d := driver.NewProcess(cfg)
	// A subshell opens each file: a failed redirection ends only it.
	script := `for f in ` + dev + ` /dev/null; do if ( : <"$f" ); then echo "$f ok"; else echo "$f denied"; fi; done`
	run := func(extra []cgroupdriver.DeviceRule) string {
		t.Helper()
		s := spec(t, cgroupdriver.KindProcess, "dev")
		s.Command = []string{"sh", "-c", script + " 2>/dev/null"}
		if extra != nil {
			s.Resources.Devices = &cgroupdriver.DeviceACL{Extra: extra}
		}
		inst := start(t, d, s)
		if st := wait(t, inst); st.Code != 0 || st.Err != nil {
			t.Fatalf("status = %+v", st)
		}
		return strings.TrimSpace(readFile(t, inst.LogPath()))
	}
	if got, want := run(nil), dev+" denied\n/dev/null ok"; got != want {
		t.Errorf("default ACL: got %q, want %q", got, want)
	}
	if got, want := run([]cgroupdriver.DeviceRule{{Path: dev, Access: "r"}}), dev+" ok\n/dev/null ok"; got != want {
		t.Errorf("with %s allowed: got %q, want %q", dev, got, want)
	}

	s := spec(t, cgroupdriver.KindProcess, "nodev")
	s.Command = []string{"true"}
	s.Resources.Devices = &cgroupdriver.DeviceACL{Extra: []cgroupdriver.DeviceRule{{Path: "/dev/corral-no-such-device", Access: "rw"}}}
	inst, err := d.Start(testCtx(t), s)
	if err == nil {
		destroy(t, inst)
		t.Fatal("a guest with a missing device started")
	}
	var fe *cgroupdriver.FieldError
	if !errors.As(err, &fe) || fe.Field != "devices" || !strings.Contains(err.Error(), "/dev/corral-no-such-device") {
		t.Errorf("missing device: want a devices FieldError naming it, got %v", err)
	}
	checkGone(t, cfg, s, 0)
}
