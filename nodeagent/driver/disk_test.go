package driver_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// console is a test's end of a guest's serial console socket.
type console struct {
	t    testing.TB
	conn net.Conn
	mu   sync.Mutex
	out  bytes.Buffer
}

func attach(t testing.TB, inst *driver.Instance) *console {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(filepath.Dir(inst.LogPath()), driver.ConsoleFile))
	if err != nil {
		t.Fatalf("attach to the console of %s: %v", inst.Guest(), err)
	}
	con := &console{t: t, conn: c}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			con.mu.Lock()
			con.out.Write(buf[:n])
			con.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	con.ready()
	return con
}

// ready waits until the shell reads what is typed: input sent before it
// runs is lost, so a probe is typed again each second until answered.
func (c *console) ready() {
	c.t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for {
		if _, err := c.conn.Write([]byte("echo READY-$((3*3))\n")); err != nil {
			c.t.Fatal(err)
		}
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			c.mu.Lock()
			ok := strings.Contains(c.out.String(), "READY-9")
			c.mu.Unlock()
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the guest's shell did not answer on its console within %v", bootTimeout)
		}
	}
}

// run types line into the guest's shell followed by an echo of a marker
// the typed text does not contain (the shell computes it), and returns
// what the shell printed up to the marker.
func (c *console) run(line, marker string) string {
	c.t.Helper()
	c.mu.Lock()
	from := c.out.Len()
	c.mu.Unlock()
	if _, err := c.conn.Write([]byte(line + "; echo " + marker + "-$((6*7))\n")); err != nil {
		c.t.Fatal(err)
	}
	var got string
	waitFor(c.t, "the shell to answer "+line, bootTimeout, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		got = c.out.String()[from:]
		return strings.Contains(got, marker+"-42")
	})
	return got[:strings.Index(got, marker+"-42")]
}

func sha(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// baseImage makes a 1 MiB raw image whose first bytes are pattern.
func baseImage(t testing.TB, pattern string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "base.raw")
	b := make([]byte, 1<<20)
	copy(b, pattern)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestQEMUDisks: two VMs on one raw base image both see it as /dev/vda; a
// write by the first lands in its own overlay, so the second never sees
// it and the base is unchanged; the first, started again on the same
// state directory, finds its write.
func TestQEMUDisks(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skipf("skipping: %v (deploy/testassets.sh installs qemu-utils)", err)
	}
	cfg := drivertest.Config(t)
	d := newQEMU(t, cfg)
	const pattern = "CORRAL-BASE-PATTERN"
	base := baseImage(t, pattern)
	sum := sha(t, base)

	sa, sb := vmSpec(t, a, "vm-disk-a"), vmSpec(t, a, "vm-disk-b")
	for _, s := range []*driver.Spec{&sa, &sb} {
		s.Disks = []events.GuestDisk{{Image: base, SizeBytes: 2 << 20}}
	}
	ia, ib := start(t, d, sa), start(t, d, sb)
	for _, inst := range []*driver.Instance{ia, ib} {
		if _, err := os.Stat(driver.OverlayPath(filepath.Dir(inst.LogPath()), 0)); err != nil {
			t.Errorf("%s has no overlay: %v", inst.Guest(), err)
		}
	}
	waitLog(t, ia, "CORRAL-GUEST-SHELL", bootTimeout)
	ca := attach(t, ia)
	readBase := "dd if=/dev/vda bs=19 count=1 2>/dev/null"
	if got := ca.run(readBase, "A0"); !strings.Contains(got, "\n"+pattern) {
		t.Errorf("guest a read %q from /dev/vda, want the base's %q", got, pattern)
	}
	if got := ca.run("cat /sys/block/vda/size", "A1"); !strings.Contains(got, "\n4096") {
		t.Errorf("guest a's /dev/vda has %q sectors, want 4096 (2 MiB: the overlay grew the 1 MiB base)", got)
	}
	ca.run("printf GUEST-A-WAS-HERE | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null", "A2")
	readOwn := "dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | head -c 16"
	if got := ca.run(readOwn, "A3"); !strings.Contains(got, "\nGUEST-A-WAS-HERE") {
		t.Errorf("guest a reads back %q, want its write", got)
	}

	waitLog(t, ib, "CORRAL-GUEST-SHELL", bootTimeout)
	cb := attach(t, ib)
	if got := cb.run(readBase, "B0"); !strings.Contains(got, "\n"+pattern) {
		t.Errorf("guest b read %q from /dev/vda, want the base's %q", got, pattern)
	}
	if got := cb.run(readOwn+" | od -c | head -1", "B1"); strings.Contains(got, "G   U   E   S   T") || !strings.Contains(got, `\0  \0`) {
		t.Errorf("guest b sees %q in sector 1, want the base's zeros, not guest a's write", got)
	}
	if got := sha(t, base); got != sum {
		t.Errorf("the base image changed under two guests")
	}

	// Stopped and started on the same state directory, a keeps its disk.
	if _, err := ia.Stop(testCtx(t), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := ia.Destroy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ia2 := start(t, d, sa)
	waitLog(t, ia2, "CORRAL-GUEST-SHELL", bootTimeout)
	if got := attach(t, ia2).run(readOwn, "C0"); !strings.Contains(got, "\nGUEST-A-WAS-HERE") {
		t.Errorf("guest a started again reads %q, want its earlier write (its overlay is kept)", got)
	}
	if got := sha(t, base); got != sum {
		t.Errorf("the base image changed")
	}
}

// TestQEMUDiskRefused: a disk whose image is missing, not a file, or not
// of the format given is refused before QEMU starts, saying why.
func TestQEMUDiskRefused(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skipf("skipping: %v", err)
	}
	d := newQEMU(t, drivertest.Config(t))
	raw := baseImage(t, "x")
	qcow := filepath.Join(t.TempDir(), "img.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", qcow, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	for name, c := range map[string]struct {
		disk events.GuestDisk
		want string
	}{
		"missing":        {events.GuestDisk{Image: "/nonexistent/base.raw"}, "not readable"},
		"directory":      {events.GuestDisk{Image: t.TempDir()}, "not a regular file"},
		"raw said qcow2": {events.GuestDisk{Image: raw, Format: "qcow2"}, "is raw, not qcow2"},
		"qcow2 said raw": {events.GuestDisk{Image: qcow, Format: "raw"}, "is qcow2, not raw"},
		"shrunk":         {events.GuestDisk{Image: raw, SizeBytes: 512 << 10}, "smaller than the image"},
	} {
		s := vmSpec(t, a, "vm-bad-disk")
		s.Disks = []events.GuestDisk{c.disk}
		inst, err := d.Start(testCtx(t), s)
		if err == nil {
			destroy(t, inst)
		}
		if !errors.Is(err, driver.ErrInvalidSpec) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Start = %v, want ErrInvalidSpec saying %q", name, err, c.want)
		}
		if _, err := os.Stat(driver.OverlayPath(s.StateDir, 0)); err == nil {
			t.Errorf("%s: an overlay was made for a refused disk", name)
		}
	}
}
