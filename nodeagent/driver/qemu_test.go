package driver_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

const bootTimeout = 60 * time.Second // TCG on a loaded 2-core host

func newQEMU(t testing.TB, cfg driver.Config) *driver.QEMU {
	t.Helper()
	q, err := driver.NewQEMU(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// vmSpec is a 128 MiB guest booting the test kernel and initramfs.
func vmSpec(t testing.TB, a drivertest.Assets, prefix string) driver.Spec {
	s := spec(t, cgroupdriver.KindQEMU, prefix)
	s.Kernel, s.Initrd, s.Append = a.Kernel, a.Initramfs, "console=ttyS0 quiet panic=-1"
	s.MemoryBytes = 128 << 20
	return s
}

// TestQEMUGuest boots a VM under TCG: QEMU runs in the guest's groups with
// headroom over the guest's RAM, the serial console reaches the log, QMP
// answers, the balloon can be queried and set, suspend pauses the VM and
// freezes its groups, a graceful stop presses the power button and the
// guest powers off, and destroy leaves nothing behind.
func TestQEMUGuest(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	cfg := drivertest.Config(t)
	d := newQEMU(t, cfg)
	s := vmSpec(t, a, "vm")
	s.Disk = a.Disk
	inst := start(t, d, s)
	ctx := testCtx(t)
	q := inst.QMP()
	checkInGroups(t, inst, inst.PID())
	if got, want := groupFile(t, inst, "memory.limit_in_bytes"), strconv.FormatInt(events.QEMUMemoryLimit(128<<20), 10); got != want {
		t.Errorf("memory limit %s, want %s (RAM plus headroom)", got, want)
	}
	var blocks []struct {
		Inserted struct {
			File string `json:"file"`
		} `json:"inserted"`
	}
	if err := q.Execute(ctx, "query-block", nil, &blocks); err != nil || len(blocks) != 1 || blocks[0].Inserted.File != a.Disk {
		t.Errorf("query-block: %+v, %v; want the disk %s", blocks, err, a.Disk)
	}
	waitLog(t, inst, drivertest.Marker, bootTimeout)

	if got, err := q.Balloon(ctx); err != nil || got != 128<<20 {
		t.Errorf("balloon = %d, %v; want %d", got, err, 128<<20)
	}
	if err := q.SetBalloon(ctx, 96<<20); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the balloon at 96 MiB", bootTimeout, func() bool { // the guest gives the pages back at TCG speed
		got, err := q.Balloon(ctx)
		return err == nil && got == 96<<20
	})

	if err := inst.Suspend(ctx); err != nil {
		t.Fatal(err)
	}
	if got := freezerState(t, inst); got != "FROZEN" {
		t.Errorf("freezer after Suspend: %s", got)
	}
	// QEMU itself is frozen and cannot answer QMP; thawed behind the
	// driver's back, it reports the VM paused by QMP stop.
	if err := cfg.Cgroups.Thaw(ctx, s.Guest); err != nil {
		t.Fatal(err)
	}
	if st, err := q.Status(ctx); err != nil || st != "paused" {
		t.Errorf("status after Suspend and a thaw: %q, %v", st, err)
	}
	if err := inst.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := q.Status(ctx); err != nil || st != "running" {
		t.Errorf("status after Resume: %q, %v", st, err)
	}

	st, err := inst.Stop(ctx, 30*time.Second)
	if err != nil || st.Code != 0 || st.Signal != 0 || st.Detail != "guest-shutdown" {
		t.Errorf("Stop: %v, %v; want a guest shutdown with code 0", st, err)
	}
	waitLog(t, inst, "CORRAL-GUEST-POWERDOWN", time.Second)
	if err := inst.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	checkGone(t, cfg, s, inst.PID())
}

// TestQEMUAdoptAndQuit: a new driver adopts a running VM from its state
// record alone, talks QMP to it, and a stop of a guest that does not act on
// the power button (it has not booted yet) falls back to QMP quit.
func TestQEMUAdoptAndQuit(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	cfg := drivertest.Config(t)
	s := vmSpec(t, a, "vm-adopt")
	first := start(t, newQEMU(t, cfg), s)
	pid := first.PID()
	first.Release()

	ctx := testCtx(t)
	inst, err := newQEMU(t, cfg).Adopt(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, inst) })
	if inst.PID() != pid || !inst.Adopted() {
		t.Errorf("adopted pid %d (adopted=%v), want %d", inst.PID(), inst.Adopted(), pid)
	}
	if st, err := inst.QMP().Status(ctx); err != nil || st != "running" {
		t.Errorf("QMP status of the adopted VM: %q, %v", st, err)
	}
	st, err := inst.Stop(ctx, 10*time.Millisecond)
	if err != nil || st.Detail != "host-qmp-quit" || st.Signal != 0 {
		t.Errorf("Stop: %v, %v; want QEMU to quit on QMP", st, err)
	}
	if err := inst.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	checkGone(t, cfg, s, pid)
}

// TestQEMUBadKernel: a kernel that does not exist is refused before
// anything starts; one QEMU cannot load fails the start with QEMU's own
// words; neither leaves anything behind.
func TestQEMUBadKernel(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	cfg := drivertest.Config(t)
	d := newQEMU(t, cfg)
	ctx := testCtx(t)

	s := vmSpec(t, a, "vm-nokernel")
	s.Kernel = filepath.Join(t.TempDir(), "vmlinuz")
	_, err := d.Start(ctx, s)
	if !errors.Is(err, driver.ErrInvalidSpec) || !strings.Contains(err.Error(), "kernel") {
		t.Errorf("missing kernel: %v", err)
	}
	checkGone(t, cfg, s, 0)

	s = vmSpec(t, a, "vm-badkernel")
	s.Kernel = filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(s.Kernel, []byte("this is not a kernel\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = d.Start(ctx, s)
	if !errors.Is(err, driver.ErrStart) {
		t.Errorf("garbage kernel: %v", err)
	}
	t.Log(err)
	checkGone(t, cfg, s, 0)
}

// TestQEMUArgs pins QEMU's command line.
func TestQEMUArgs(t *testing.T) {
	cfg := driver.DefaultConfig()
	cfg.Cgroups = &cgroupdriver.Driver{}
	cfg.QEMU.Accel = driver.AccelTCG
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("skipping: no qemu-system-x86_64")
	}
	d := newQEMU(t, cfg)
	s := driver.Spec{
		Guest: cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "web-1"}, StateDir: "/run/corral/web-1,x",
		Kernel: "/k/vmlinuz", Initrd: "/k/initrd", Disk: "/img/a,b.qcow2", MemoryBytes: 100<<20 + 1, VCPUs: 2,
	}
	got := strings.Join(d.Args(&s), " ")
	want := "-name guest=web-1 -machine pc -accel tcg -m 101 -smp 2 -nodefaults -no-user-config -display none -no-reboot " +
		"-chardev socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control " +
		"-chardev socket,id=serial0,fd=4,server=on,wait=off,logfile=/run/corral/web-1,,x/guest.log,logappend=on -serial chardev:serial0 " +
		"-device virtio-balloon-pci,id=balloon0 -kernel /k/vmlinuz -append console=ttyS0 panic=-1 -initrd /k/initrd " +
		"-drive file=/img/a,,b.qcow2,if=virtio,format=qcow2"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}
}

// TestProbeKVM: auto uses KVM exactly when the probe proves it works; on a
// host where /dev/kvm exists but guests crawl (nested virtualisation
// without hardware support) that is TCG.
func TestProbeKVM(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("skipping: no qemu-system-x86_64")
	}
	t0 := time.Now()
	perr := driver.ProbeKVM("/dev/kvm", 250*time.Millisecond)
	t.Logf("ProbeKVM: %v after %v", perr, time.Since(t0))
	if perr != nil && !errors.Is(perr, driver.ErrKVMUnusable) {
		t.Errorf("probe error does not wrap ErrKVMUnusable: %v", perr)
	}
	if time.Since(t0) > 2*time.Second {
		t.Errorf("the probe took %v, over its 250ms timeout", time.Since(t0))
	}
	if err := driver.ProbeKVM(filepath.Join(t.TempDir(), "kvm"), time.Second); !errors.Is(err, driver.ErrKVMUnusable) {
		t.Errorf("probe of a missing device: %v", err)
	}
	cfg := driver.DefaultConfig()
	cfg.Cgroups = &cgroupdriver.Driver{}
	d := newQEMU(t, cfg)
	if want := map[bool]driver.Accel{true: driver.AccelKVM, false: driver.AccelTCG}[perr == nil]; d.Accel() != want {
		t.Errorf("auto chose %s (%s), the probe said %v", d.Accel(), d.AccelReason(), perr)
	}
	t.Logf("auto: %s (%s)", d.Accel(), d.AccelReason())
}
