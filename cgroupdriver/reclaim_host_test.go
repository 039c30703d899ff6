package cgroupdriver_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
)

// holdMemory is the "hold" helper: "cache PATH MiB" writes MiB to PATH
// and syncs it, so the group holds that much clean page cache; "anon MiB"
// allocates and touches MiB of anonymous memory. Either prints "ready"
// and then sleeps until killed.
func holdMemory(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "hold cache PATH MiB | hold anon MiB")
		return 2
	}
	var held []byte
	switch args[0] {
	case "cache":
		mib, _ := strconv.Atoi(args[2])
		f, err := os.Create(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		for range mib {
			if _, err := f.Write(chunk); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if err := f.Sync(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		f.Close()
	case "anon":
		mib, _ := strconv.Atoi(args[1])
		held = make([]byte, mib<<20)
		for i := 0; i < len(held); i += 4096 {
			held[i] = 1
		}
	}
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour)
		held[0]++ // keep it alive
	}
}

// TestHostReclaim is the balloon's stick on the real host (cgroup v1 here):
// a group holding 96 MiB of clean page cache is pressed to 24 MiB and its
// usage falls below that, while its hard limit and OOM killer are put back
// afterwards; a group holding anonymous memory on a host without swap
// cannot be pressed, and the kernel says so (EBUSY) instead of OOM-killing
// the process, which keeps running with the limit it had.
func TestHostReclaim(t *testing.T) {
	d, _ := hostDriver(t)
	dir := func(g cgroupdriver.Guest) string {
		paths, err := d.Paths(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if _, err := os.Stat(p + "/memory.usage_in_bytes"); err == nil {
				return p
			}
			if _, err := os.Stat(p + "/memory.current"); err == nil {
				return p
			}
		}
		t.Skip("skipping: the host has no memory controller")
		return ""
	}
	usage := func(g cgroupdriver.Guest) uint64 {
		st, err := d.Stats(g)
		if err != nil {
			t.Fatal(err)
		}
		return st.Memory.Usage
	}
	// hold runs the helper in g until the test ends; exited receives its
	// end.
	hold := func(g cgroupdriver.Guest, args ...string) (exited chan error) {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), helperEnv+"=hold")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(cmd, g); err != nil {
			t.Fatal(err)
		}
		exited = make(chan error, 1)
		ready := make(chan bool, 1)
		go func() {
			b := make([]byte, 64)
			n, _ := io.ReadAtLeast(out, b, len("ready"))
			ready <- strings.HasPrefix(string(b[:n]), "ready")
			io.Copy(io.Discard, out)
			exited <- cmd.Wait()
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		select {
		case ok := <-ready:
			if !ok {
				t.Fatal("the helper did not hold its memory")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("timed out waiting for the helper to hold its memory")
		}
		return exited
	}
	const hard = 256 << 20
	limit := func(g cgroupdriver.Guest) {
		if _, err := d.Apply(g, cgroupdriver.Resources{MemoryHardLimit: new(int64(hard))}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("page cache", func(t *testing.T) {
		g := create(t, d, fmt.Sprintf("reclaim-cache-%d", os.Getpid()))
		limit(g)
		hold(g, "cache", filepath.Join(t.TempDir(), "cache"), "96")
		before := usage(g)
		if before < 80<<20 {
			t.Fatalf("the group holds %d bytes after writing 96 MiB; the page cache is not charged to it", before)
		}
		const size = 24 << 20
		r, err := d.Reclaim(g, size)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("reclaim to 24 MiB: usage %s -> %s (%s freed), err %v", mib(r.Before), mib(r.After), mib(r.Freed()), r.Err)
		if r.Err != nil || r.After > size || r.Freed() < 56<<20 {
			t.Errorf("reclaim of clean page cache: %+v, want usage at most 24 MiB", r)
		}
		if got := readHost(t, dir(g)+"/memory.limit_in_bytes"); got != strconv.Itoa(hard) {
			t.Errorf("hard limit after the press %s, want %d back", got, hard)
		}
		if got := readHost(t, dir(g)+"/memory.oom_control"); !strings.Contains(got, "oom_kill_disable 0") {
			t.Errorf("OOM killer not put back: %q", got)
		}
	})

	t.Run("anonymous without swap", func(t *testing.T) {
		if swap := readHost(t, "/proc/swaps"); strings.Count(swap, "\n") > 0 {
			t.Skip("skipping: the host has swap, so anonymous memory can be reclaimed")
		}
		g := create(t, d, fmt.Sprintf("reclaim-anon-%d", os.Getpid()))
		limit(g)
		exited := hold(g, "anon", "64")
		r, err := d.Reclaim(g, 16<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("reclaim of 64 MiB anonymous to 16 MiB: usage %s -> %s, err %v", mib(r.Before), mib(r.After), r.Err)
		if !errors.Is(r.Err, cgroupdriver.ErrReclaimShort) || !strings.Contains(r.Err.Error(), "busy") {
			t.Errorf("Reclaimed.Err = %v, want ErrReclaimShort with the kernel's EBUSY", r.Err)
		}
		if r.After < 60<<20 {
			t.Errorf("usage fell to %d: anonymous memory without swap cannot be reclaimed", r.After)
		}
		if st, err := d.Stats(g); err != nil || st.Memory.Events.OOMKill != 0 || st.Pids.Current == 0 {
			t.Errorf("after the press: stats %+v, %v; the helper must still run, never OOM-killed", st, err)
		}
		select {
		case err := <-exited:
			exited <- err
			t.Errorf("the helper ended during the press: %v", err)
		default:
		}
		if got := readHost(t, dir(g)+"/memory.limit_in_bytes"); got != strconv.Itoa(hard) {
			t.Errorf("hard limit after the refused press %s, want %d back", got, hard)
		}
	})
}

func mib(n uint64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }
