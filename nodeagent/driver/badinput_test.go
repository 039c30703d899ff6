package driver_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestBadInput: each bad definition fails Start with a clear error of the
// right class, and leaves no process, group or record behind.
func TestBadInput(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	cfg := drivertest.Config(t)
	set, err := driver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := set.Versions()
	if v["process"] == "" || v["lxc"] == "" || !strings.HasSuffix(v["qemu"], " tcg") {
		t.Errorf("Versions() = %v", v)
	}
	t.Logf("drivers: %v", v)
	if _, err := set.For("xen"); !errors.Is(err, driver.ErrUnknownDriver) {
		t.Errorf("For(xen): %v", err)
	}
	s := spec(t, "xen", "unknown")
	if _, err := set.Start(testCtx(t), s); !errors.Is(err, driver.ErrUnknownDriver) {
		t.Errorf("Start of a xen guest: %v", err)
	}
	for _, tc := range []struct {
		name  string
		kind  cgroupdriver.Kind
		edit  func(*driver.Spec)
		class error
		says  string
	}{
		{"no command", cgroupdriver.KindProcess, func(s *driver.Spec) {}, driver.ErrInvalidSpec, "needs a command"},
		{"missing command", cgroupdriver.KindProcess, func(s *driver.Spec) { s.Command = []string{"corral-no-such-command"} }, driver.ErrInvalidSpec, "executable file not found"},
		{"missing path", cgroupdriver.KindProcess, func(s *driver.Spec) { s.Command = []string{"/no/such/file"} }, driver.ErrInvalidSpec, "no such file"},
		{"rootfs missing", cgroupdriver.KindLXC, func(s *driver.Spec) { s.Rootfs = "/no/such/rootfs" }, driver.ErrInvalidSpec, "rootfs /no/such/rootfs"},
		{"no rootfs", cgroupdriver.KindLXC, func(s *driver.Spec) {}, driver.ErrInvalidSpec, "needs a root file system"},
		{"command missing in the container", cgroupdriver.KindLXC, func(s *driver.Spec) { s.Rootfs, s.Command = rootfs, []string{"no-such-init"} }, driver.ErrInvalidSpec, `command "no-such-init": no executable`},
		{"command path missing in the container", cgroupdriver.KindLXC, func(s *driver.Spec) { s.Rootfs, s.Command = rootfs, []string{"/sbin/no-such-init"} }, driver.ErrInvalidSpec, "no such file"},
		{"bad cpu shares", cgroupdriver.KindProcess, func(s *driver.Spec) { s.Command, s.Resources.CPUShares = []string{"true"}, new(uint64(1)) }, driver.ErrInvalidSpec, "cpu_shares"},
		{"relative state dir", cgroupdriver.KindProcess, func(s *driver.Spec) { s.Command, s.StateDir = []string{"true"}, "state" }, driver.ErrInvalidSpec, "absolute"},
		{"bad guest id", cgroupdriver.KindProcess, func(s *driver.Spec) { s.Command, s.Guest.ID = []string{"true"}, "../x" }, driver.ErrInvalidSpec, "invalid guest id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, tc.kind, "bad")
			tc.edit(&s)
			inst, err := set.Start(testCtx(t), s)
			if err == nil {
				destroy(t, inst)
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q, want %v saying %q", err, tc.class, tc.says)
			}
			t.Log(err)
			if filepath.IsAbs(s.StateDir) && s.Guest.Validate() == nil {
				checkGone(t, cfg, s, 0)
			}
		})
	}
}

// TestSpecFor maps a guest definition from the log to a Spec.
func TestSpecFor(t *testing.T) {
	def := &events.GuestDefined{Name: "web", Driver: events.DriverQEMU, MemoryBytes: 256 << 20, VCPUs: 2, CPUShares: 512,
		Rootfs: "/img/web.qcow2", Kernel: "/k", Initrd: "/i", Command: []string{"x"}}
	s := driver.SpecFor("web", def, "/var/lib/corral/guests/web")
	if s.Guest != (cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "web"}) || s.Disk != "/img/web.qcow2" || s.Rootfs != "" ||
		s.Kernel != "/k" || s.Initrd != "/i" || s.MemoryBytes != 256<<20 || s.VCPUs != 2 || *s.Resources.CPUShares != 512 || s.Hostname != "web" {
		t.Errorf("SpecFor(qemu) = %+v", s)
	}
	def.Driver = events.DriverLXC
	if s := driver.SpecFor("web", def, "/s"); s.Rootfs != "/img/web.qcow2" || s.Disk != "" || s.Guest.Kind != cgroupdriver.KindLXC {
		t.Errorf("SpecFor(lxc) = %+v", s)
	}
	if got := events.QEMUMemoryLimit(128 << 20); got != 384<<20 {
		t.Errorf("events.QEMUMemoryLimit(128 MiB) = %d", got)
	}
	if got := events.QEMUMemoryLimit(4 << 30); got != 5<<30 {
		t.Errorf("events.QEMUMemoryLimit(4 GiB) = %d", got)
	}
}
