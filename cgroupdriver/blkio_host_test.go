package cgroupdriver_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// loopDevice attaches a sparse file of size bytes in a temporary directory
// to a free loop device, detached when the test ends (pass or fail).
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("skipping block I/O test: losetup is not installed (util-linux)")
	}
	backing := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command(losetup, "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Skipf("skipping block I/O test: losetup --find --show: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("cleanup: losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func devNumber(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return strconv.FormatUint(uint64(unix.Major(st.Rdev)), 10) + ":" + strconv.FormatUint(uint64(unix.Minor(st.Rdev)), 10)
}

// ddRate runs dd in g and returns the bytes per second it moved, as
// measured here from start to exit.
func ddRate(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest, mib int, args ...string) float64 {
	t.Helper()
	begin := time.Now()
	out, err := run(t, d, g, nil, "dd", append(args, "bs=1M", "count="+strconv.Itoa(mib))...)
	elapsed := time.Since(begin)
	if err != nil {
		t.Fatalf("dd %v: %v: %s", args, err, out)
	}
	rate := float64(mib<<20) / elapsed.Seconds()
	t.Logf("dd %s: %d MiB in %v = %.1f MiB/s", strings.Join(args, " "), mib, elapsed.Round(time.Millisecond), rate/(1<<20))
	return rate
}

// TestHostBlkioThrottle throttles a dd against a loop device the test owns
// to 4 MiB/s, writing and reading, and measures it; the files hold the
// limit, a 0 removes it, and an absent device is refused naming its path.
func TestHostBlkioThrottle(t *testing.T) {
	cgrouptest.RequireHost(t)
	if _, err := exec.LookPath("dd"); err != nil {
		t.Skip("skipping block I/O test: dd is not installed")
	}
	loop := loopDevice(t, 64<<20) // before the driver: detached after its groups are gone
	dev := devNumber(t, loop)
	d, _ := hostDriver(t)
	g := create(t, d, "blkio")
	const limit = 4 << 20

	write := []string{"if=/dev/zero", "of=" + loop, "oflag=direct"}
	read := []string{"if=" + loop, "of=/dev/null", "iflag=direct"}
	freeWrite := ddRate(t, d, g, 32, write...)
	freeRead := ddRate(t, d, g, 32, read...)

	var r cgroupdriver.Resources
	for _, k := range []string{"device_write_bytes_sec", "device_read_bytes_sec"} {
		if err := r.SetKnob(k, loop+","+strconv.Itoa(limit)); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := d.Apply(g, r)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	applied := cgroupdriver.Applied(r, ws)
	if applied["device_write_bytes_sec"] != loop+",4194304" || applied["device_read_bytes_sec"] != loop+",4194304" {
		t.Errorf("Applied = %v", applied)
	}
	// The files as the kernel shows them.
	for _, w := range ws {
		got := readHost(t, w.Path())
		want := dev + " 4194304"
		if w.File == "io.max" {
			if !cgroupdriver.SameDeviceLine(w.Value, lineFor(got, dev)) {
				t.Errorf("%s = %q, want it to express %q", w.Path(), got, w.Value)
			}
			continue
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s = %q, want a line %q", w.Path(), got, want)
		}
	}
	obs, err := d.Observe(g, r)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	for _, o := range obs {
		if o.Drift {
			t.Errorf("drift right after Apply: %+v", o)
		}
	}

	for _, c := range []struct {
		what       string
		args       []string
		unthrottle float64
	}{{"write", write, freeWrite}, {"read", read, freeRead}} {
		rate := ddRate(t, d, g, 12, c.args...)
		if rate > 1.5*limit {
			t.Errorf("throttled %s ran at %.1f MiB/s, above 1.5 × the 4 MiB/s limit", c.what, rate/(1<<20))
		}
		if c.unthrottle < 2*limit {
			t.Errorf("unthrottled %s ran at only %.1f MiB/s: the host is too slow to tell a 4 MiB/s limit apart", c.what, c.unthrottle/(1<<20))
		}
		if rate > c.unthrottle/2 {
			t.Errorf("throttled %s (%.1f MiB/s) is not clearly below the unthrottled rate (%.1f MiB/s)", c.what, rate/(1<<20), c.unthrottle/(1<<20))
		}
	}

	// 0 removes the limit: the device's line goes away.
	var clear cgroupdriver.Resources
	if err := clear.SetKnob("device_write_bytes_sec", loop+",0"); err != nil {
		t.Fatal(err)
	}
	ws, err = d.Apply(g, clear)
	if err != nil || len(ws) != 1 {
		t.Fatalf("Apply clear: %v, %v", ws, err)
	}
	if got := lineFor(readHost(t, ws[0].Path()), dev); got != "" && !cgroupdriver.SameDeviceLine(ws[0].Value, got) {
		t.Errorf("after clearing, %s still has %q", ws[0].Path(), got)
	}
	if a := cgroupdriver.Applied(clear, ws); a["device_write_bytes_sec"] != "" {
		t.Errorf("Applied after clearing = %v, want the empty list", a)
	}

	// An absent device is refused before anything is written.
	missing := "/dev/corraltest-no-such-disk"
	var bad cgroupdriver.Resources
	if err := bad.SetKnob("device_read_iops_sec", missing+",100"); err != nil {
		t.Fatal(err)
	}
	ws, err = d.Apply(g, bad)
	var fe *cgroupdriver.FieldError
	if !errors.As(err, &fe) || fe.Field != "device_read_iops_sec" || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Apply with %s: %v, %v; want a FieldError for device_read_iops_sec naming the path", missing, ws, err)
	}
	if len(ws) != 0 {
		t.Errorf("a refused Apply wrote %v", ws)
	}
	t.Logf("refused: %v", err)
}

// lineFor returns the line of a per-device file for dev, or "".
func lineFor(file, dev string) string {
	for _, l := range strings.Split(file, "\n") {
		if strings.HasPrefix(l, dev+" ") {
			return l
		}
	}
	return ""
}

// TestHostBlkioIOPS throttles a dd of 4 KiB direct writes and reads
// against a loop device the test owns to 100 I/O operations per second
// (virsh's device_{write,read}_iops_sec) and measures it.
func TestHostBlkioIOPS(t *testing.T) {
	cgrouptest.RequireHost(t)
	if _, err := exec.LookPath("dd"); err != nil {
		t.Skip("skipping block I/O test: dd is not installed")
	}
	loop := loopDevice(t, 16<<20)
	d, _ := hostDriver(t)
	g := create(t, d, "iops")
	const limit, ops = 100, 300
	iops := func(args ...string) float64 {
		t.Helper()
		begin := time.Now()
		out, err := run(t, d, g, nil, "dd", append(args, "bs=4k", "count="+strconv.Itoa(ops))...)
		elapsed := time.Since(begin)
		if err != nil {
			t.Fatalf("dd %v: %v: %s", args, err, out)
		}
		rate := ops / elapsed.Seconds()
		t.Logf("dd %s bs=4k: %d operations in %v = %.0f IOPS", strings.Join(args, " "), ops, elapsed.Round(time.Millisecond), rate)
		return rate
	}
	write := []string{"if=/dev/zero", "of=" + loop, "oflag=direct"}
	read := []string{"if=" + loop, "of=/dev/null", "iflag=direct"}
	free := []float64{iops(write...), iops(read...)}

	var r cgroupdriver.Resources
	for _, k := range []string{"device_write_iops_sec", "device_read_iops_sec"} {
		if err := r.SetKnob(k, loop+","+strconv.Itoa(limit)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Apply(g, r); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for i, args := range [][]string{write, read} {
		// The throttle lets a first burst through (a slice's worth), so
		// 300 operations at 100/s take at least about two seconds.
		rate := iops(args...)
		if rate > 1.5*limit || rate < 0.5*limit {
			t.Errorf("%s ran at %.0f IOPS, want about the limit of %d (0.5-1.5×)", args[1], rate, limit)
		}
		if free[i] < 3*limit {
			t.Errorf("unthrottled, %s ran at only %.0f IOPS: the host is too slow to tell a %d IOPS limit apart", args[1], free[i], limit)
		}
	}
}
