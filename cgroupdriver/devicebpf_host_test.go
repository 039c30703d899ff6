package cgroupdriver_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// v2Devices returns a cgroup2-only driver on the real host and a process
// guest in it; both are removed when the test ends.
func v2Devices(t *testing.T, id string) (*cgroupdriver.Driver, cgroupdriver.Guest) {
	t.Helper()
	full := cgrouptest.RequireHost(t)
	u, ok := full.Unified()
	if !ok {
		t.Skip("skipping: no cgroup2 mount on this host")
	}
	if _, err := os.Stat(extraDevice); err != nil {
		t.Skipf("skipping: this host has no %s: %v", extraDevice, err)
	}
	d := hostDriverFor(t, cgroupdriver.Report{Mode: cgroupdriver.ModeV2, Hierarchies: []cgroupdriver.Hierarchy{u}})
	return d, create(t, d, id)
}

func devicesKnob(t *testing.T, v string) cgroupdriver.Resources {
	t.Helper()
	var r cgroupdriver.Resources
	if err := r.SetKnob("devices", v); err != nil {
		t.Fatalf("SetKnob(devices, %q): %v", v, err)
	}
	return r
}

// deviceObservation returns the observation of g's BPF device program.
func deviceObservation(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest, r cgroupdriver.Resources) cgroupdriver.Observation {
	t.Helper()
	obs, err := d.Observe(g, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		if o.File == cgroupdriver.DeviceProgramFile {
			return o
		}
	}
	t.Fatalf("no observation of %s among %+v", cgroupdriver.DeviceProgramFile, obs)
	return cgroupdriver.Observation{}
}

// TestHostV2DeviceAccessIsSubset: a rule grants only the access it names.
// A read-only grant lets a read-only open through and refuses a read-write
// one: the kernel asks for read|write in one call, and the program must
// check that the request is a subset of the rule, not that they overlap.
// containerd/cgroups v3.1.3's DeviceFilter checks overlap and lets the
// read-write open through (see the package doc), which is why corral keeps
// its own program.
func TestHostV2DeviceAccessIsSubset(t *testing.T) {
	d, g := v2Devices(t, "v2-dev-subset")
	testDeviceAccessIsSubset(t, d, g)
}

// TestHostDeviceAccessIsSubset: the same on v1's devices files.
func TestHostDeviceAccessIsSubset(t *testing.T) {
	if _, err := os.Stat(extraDevice); err != nil {
		t.Skipf("skipping: this host has no %s: %v", extraDevice, err)
	}
	d, _ := hostDriver(t)
	testDeviceAccessIsSubset(t, d, create(t, d, "dev-subset"))
}

func testDeviceAccessIsSubset(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	openWith := func(mode string) string {
		t.Helper()
		out, err := run(t, d, g, []string{helperEnv + "=" + mode}, self, extraDevice, "/dev/null")
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	r := devicesKnob(t, extraDevice+":r")
	if _, err := d.Apply(g, r); err != nil {
		t.Fatal(err)
	}
	if got, want := openWith("open"), extraDevice+" ok\n/dev/null ok"; got != want {
		t.Errorf("read-only open under a read grant: got %q, want %q", got, want)
	}
	if got, want := openWith("openrw"), extraDevice+" EPERM\n/dev/null ok"; got != want {
		t.Errorf("read-write open under a read grant: got %q, want %q", got, want)
	}
	r = devicesKnob(t, extraDevice+":rw")
	if _, err := d.Apply(g, r); err != nil {
		t.Fatal(err)
	}
	if got, want := openWith("openrw"), extraDevice+" ok\n/dev/null ok"; got != want {
		t.Errorf("read-write open under a read-write grant: got %q, want %q", got, want)
	}
	assertNoDrift(t, d, g, r)
}

// TestHostV2DeviceProgramDetached: a program someone detaches by hand is
// drift (the group then allows every device, which the helper shows), and
// Apply puts it back.
func TestHostV2DeviceProgramDetached(t *testing.T) {
	d, g := v2Devices(t, "v2-dev-detached")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	open := func() string {
		t.Helper()
		out, err := run(t, d, g, []string{helperEnv + "=open"}, self, extraDevice)
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	r := devicesKnob(t, cgroupdriver.NoDevicesText)
	if _, err := d.Apply(g, r); err != nil {
		t.Fatal(err)
	}
	o := deviceObservation(t, d, g, r)
	if o.Drift {
		t.Fatalf("drift right after Apply: %+v", o)
	}
	if got, want := open(), extraDevice+" EPERM"; got != want {
		t.Fatalf("before the detach: got %q, want %q", got, want)
	}

	if n := detachDevicePrograms(t, o.Dir); n != 1 {
		t.Fatalf("detached %d programs from %s, want the 1 Apply attached", n, o.Dir)
	}
	if got, want := open(), extraDevice+" ok"; got != want {
		t.Fatalf("after the detach: got %q, want %q (no program allows all)", got, want)
	}
	if o := deviceObservation(t, d, g, r); !o.Drift || o.Got != "tags=" {
		t.Errorf("a detached program: want drift with Got \"tags=\", got %+v", o)
	}

	if _, err := d.Apply(g, r); err != nil {
		t.Fatal(err)
	}
	if o := deviceObservation(t, d, g, r); o.Drift {
		t.Errorf("drift after the repair: %+v", o)
	}
	if got, want := open(), extraDevice+" EPERM"; got != want {
		t.Errorf("after the repair: got %q, want %q", got, want)
	}
}

// TestHostV2DeviceProgramReplacedAtomically: while the ACL of a running
// guest changes back and forth between two ACLs that both allow /dev/null
// and both refuse extraDevice, a process in the guest opening both in a loop
// never sees /dev/null refused (a moment with no device allowed) nor
// extraDevice allowed (a moment with no program). After every change
// exactly one program is attached.
func TestHostV2DeviceProgramReplacedAtomically(t *testing.T) {
	d, g := v2Devices(t, "v2-dev-atomic")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Neither grants a read of extraDevice (10:237): one grants writing
	// it, the other reading a device number nothing opens.
	acls := []cgroupdriver.Resources{
		devicesKnob(t, "c 10:237 w"),
		devicesKnob(t, "c 10:250 r"),
	}
	if _, err := d.Apply(g, acls[0]); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ready, stop := filepath.Join(dir, "ready"), filepath.Join(dir, "stop")
	cmd, out := start(t, d, g, []string{helperEnv + "=hammer"}, self, ready, stop, extraDevice)
	waitFor(t, "the helper's first round of opens", 10*time.Second, func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	const changes = 200
	for i := range changes {
		r := acls[(i+1)%2]
		if _, err := d.Apply(g, r); err != nil {
			t.Fatal(err)
		}
		if o := deviceObservation(t, d, g, r); o.Drift {
			t.Fatalf("change %d: %+v", i, o)
		}
	}
	if err := os.WriteFile(stop, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var rounds, nullDenied, extraAllowed int
	if _, err := fmt.Sscanf(out.String(), "rounds=%d null-denied=%d extra-allowed=%d", &rounds, &nullDenied, &extraAllowed); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	t.Logf("%d ACL changes while the guest made %d rounds of opens", changes, rounds)
	if nullDenied != 0 || extraAllowed != 0 {
		t.Errorf("during the changes /dev/null was refused %d times and %s allowed %d times in %d rounds; want 0 and 0",
			nullDenied, extraDevice, extraAllowed, rounds)
	}
}

// openDevices opens each path with flags and prints "<path> ok" or
// "<path> <errno name>".
func openDevices(flags int, paths []string) int {
	for _, p := range paths {
		f, err := os.OpenFile(p, flags, 0)
		switch {
		case err == nil:
			f.Close()
			fmt.Println(p, "ok")
		case errors.Is(err, syscall.EPERM):
			fmt.Println(p, "EPERM")
		default:
			fmt.Println(p, err)
		}
	}
	return 0
}

// hammerDevices (args READY STOP DEVICE) opens /dev/null and DEVICE
// read-only in a loop, creates READY after the first round, stops once STOP
// exists and prints how many rounds it made, how often /dev/null was refused
// and how often DEVICE was allowed.
func hammerDevices(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "hammer: want READY STOP DEVICE")
		return 2
	}
	ready, stop, dev := args[0], args[1], args[2]
	var rounds, nullDenied, devAllowed int
	for {
		if f, err := os.Open("/dev/null"); err != nil {
			nullDenied++
		} else {
			f.Close()
		}
		if f, err := os.Open(dev); err == nil {
			devAllowed++
			f.Close()
		}
		rounds++
		if rounds == 1 {
			if err := os.WriteFile(ready, nil, 0o600); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if _, err := os.Stat(stop); err == nil {
			break
		}
	}
	fmt.Printf("rounds=%d null-denied=%d extra-allowed=%d\n", rounds, nullDenied, devAllowed)
	return 0
}

// detachDevicePrograms detaches every BPF device program attached to the
// cgroup2 group dir, as an operator with bpftool would, and says how many.
func detachDevicePrograms(t *testing.T, dir string) int {
	t.Helper()
	bpf := func(cmd int, attr unsafe.Pointer, size uintptr) (uintptr, error) {
		r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
		if errno != 0 {
			return r, errno
		}
		return r, nil
	}
	dirFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirFD)
	var ids [64]uint32
	q := struct {
		TargetFD, AttachType, QueryFlags, AttachFlags uint32
		ProgIDs                                       unsafe.Pointer
		ProgCnt                                       uint32
		_                                             uint32
	}{TargetFD: uint32(dirFD), AttachType: unix.BPF_CGROUP_DEVICE, ProgIDs: unsafe.Pointer(&ids[0]), ProgCnt: uint32(len(ids))}
	if _, err := bpf(unix.BPF_PROG_QUERY, unsafe.Pointer(&q), unsafe.Sizeof(q)); err != nil {
		t.Fatalf("BPF_PROG_QUERY %s: %v", dir, err)
	}
	for _, id := range ids[:q.ProgCnt] {
		get := struct{ ProgID, NextID, OpenFlags uint32 }{ProgID: id}
		fd, err := bpf(unix.BPF_PROG_GET_FD_BY_ID, unsafe.Pointer(&get), unsafe.Sizeof(get))
		if err != nil {
			t.Fatalf("BPF_PROG_GET_FD_BY_ID %d: %v", id, err)
		}
		detach := struct{ TargetFD, AttachBPFFD, AttachType uint32 }{uint32(dirFD), uint32(fd), unix.BPF_CGROUP_DEVICE}
		_, err = bpf(unix.BPF_PROG_DETACH, unsafe.Pointer(&detach), unsafe.Sizeof(detach))
		unix.Close(int(fd))
		if err != nil {
			t.Fatalf("BPF_PROG_DETACH %d from %s: %v", id, dir, err)
		}
	}
	return int(q.ProgCnt)
}
