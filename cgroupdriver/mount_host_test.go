package cgroupdriver_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// TestMountNetClsHost mounts the host's unmounted net_cls hierarchy at a
// directory the test makes and unmounts it, and the driver's detection
// then finds net_cls there.
func TestMountNetClsHost(t *testing.T) {
	cgrouptest.RequireHost(t)
	if !cgrouptest.PrivateMounts(t) {
		return
	}
	if rep, err := cgroupdriver.DetectHost(); err == nil {
		if h, ok := rep.Controller("net_cls"); ok {
			t.Skipf("skipping: net_cls is mounted already, at %s", h.MountPoint)
		}
	}
	dir := filepath.Join(t.TempDir(), "net_cls")
	opts, err := cgroupdriver.MountNetCls(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if opts == "" {
		t.Skip("skipping: the kernel has no net_cls, or another test mounted it meanwhile")
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	t.Logf("mounted cgroup -o %s at %s", opts, dir)
	rep, err := cgroupdriver.DetectHost()
	if err != nil {
		t.Fatal(err)
	}
	h, ok := rep.Controller("net_cls")
	if !ok || h.MountPoint != dir {
		t.Errorf("after mounting, detection finds net_cls at %+v (found %v), want %s", h, ok, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "net_cls.classid")); err != nil {
		t.Errorf("the mount has no net_cls.classid: %v", err)
	}
	// Mounted, nothing more is needed.
	second := filepath.Join(t.TempDir(), "again")
	again, err := cgroupdriver.MountNetCls(second, true)
	if again != "" {
		_ = unix.Unmount(second, 0)
	}
	if err != nil || again != "" {
		t.Errorf("mounting again: %q, %v; want nothing mounted", again, err)
	}
}
