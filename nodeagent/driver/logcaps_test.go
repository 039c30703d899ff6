package driver_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestLogCapsOneLoop: the drivers of a Set check every guest's log from
// one loop, which runs only while a guest is watched; a check trims each
// log over its cap, and a released guest's log is left alone (the next
// agent adopts it). The checks are run by hand, the loop's own ticker set
// to an hour.
func TestLogCapsOneLoop(t *testing.T) {
	cfg := drivertest.Config(t)
	cfg.LogCheckInterval = time.Hour
	set, err := driver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n, looping, shared := set.CheckLogsNow(); n != 0 || looping || !shared {
		t.Fatalf("before any guest: %d logs watched, loop running %v, shared by every driver %v", n, looping, shared)
	}
	const capBytes = 8 << 10
	var insts []*driver.Instance
	for _, name := range []string{"caps-a", "caps-b"} {
		s := spec(t, cgroupdriver.KindProcess, name)
		s.Command, s.LogMaxBytes = []string{"sleep", "1000"}, capBytes
		inst, err := set.Start(testCtx(t), s)
		if err != nil {
			t.Fatalf("Start %s: %v", s.Guest, err)
		}
		t.Cleanup(func() { destroy(t, inst) })
		insts = append(insts, inst)
	}
	overfill := func(inst *driver.Instance) {
		t.Helper()
		f, err := os.OpenFile(inst.LogPath(), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(strings.Repeat("output line that fills the log\n", 4*capBytes/31)); err != nil {
			t.Fatal(err)
		}
	}
	size := func(inst *driver.Instance) int64 {
		t.Helper()
		fi, err := os.Stat(inst.LogPath())
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	for _, inst := range insts {
		overfill(inst)
	}
	if n, looping, _ := set.CheckLogsNow(); n != 2 || !looping {
		t.Errorf("two guests running: %d logs watched, loop running %v", n, looping)
	}
	for _, inst := range insts {
		if s := size(inst); s > capBytes {
			t.Errorf("%s: log of %d bytes after a check, cap %d", inst.Guest(), s, capBytes)
		}
	}

	insts[0].Release()
	for _, inst := range insts {
		overfill(inst)
	}
	if n, _, _ := set.CheckLogsNow(); n != 1 {
		t.Errorf("after a release: %d logs watched, want 1", n)
	}
	if s := size(insts[0]); s <= capBytes {
		t.Errorf("the released guest's log was trimmed to %d bytes", s)
	}
	if s := size(insts[1]); s > capBytes {
		t.Errorf("the running guest's log is %d bytes after a check, cap %d", s, capBytes)
	}

	destroy(t, insts[1])
	if n, looping, _ := set.CheckLogsNow(); n != 0 || looping {
		t.Errorf("no guest left: %d logs watched, loop running %v", n, looping)
	}
}

// TestLogCapsWakeOnGrowth: the loop checks a log because it grew, not on
// a timer: a guest that writes past its cap is trimmed without a check by
// hand, within about one interval, while the log of a guest that writes
// nothing is never looked at again after the check that added it.
func TestLogCapsWakeOnGrowth(t *testing.T) {
	cfg := drivertest.Config(t)
	cfg.LogCheckInterval = 20 * time.Millisecond
	set, err := driver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const capBytes = 8 << 10
	start := func(name string, command ...string) *driver.Instance {
		t.Helper()
		s := spec(t, cgroupdriver.KindProcess, name)
		s.Command, s.LogMaxBytes = command, capBytes
		inst, err := set.Start(testCtx(t), s)
		if err != nil {
			t.Fatalf("Start %s: %v", s.Guest, err)
		}
		t.Cleanup(func() { destroy(t, inst) })
		return inst
	}
	quiet := start("grow-quiet", "sleep", "1000")
	// Writes four times its cap, says so, then sleeps.
	chatty := start("grow-chatty", "sh", "-c", "for i in $(seq 64); do printf '%0512d\\n' 0; done; echo written; exec sleep 1000")
	if _, watched := set.LogStats(quiet); !watched {
		t.Skip("inotify cannot watch the logs here: they are polled")
	}
	waitFor(t, "the chatty guest's log trimmed under its cap", 10*time.Second, func() bool {
		fi, err := os.Stat(chatty.LogPath())
		return err == nil && fi.Size() <= capBytes && strings.Contains(readFile(t, chatty.LogPath()), "written")
	})
	// Grow it once more, by hand, and wait for that trim too: by then the
	// loop has gone round several times.
	f, err := os.OpenFile(chatty.LogPath(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(strings.Repeat("x", 2*capBytes) + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitFor(t, "the log trimmed again", 10*time.Second, func() bool {
		fi, err := os.Stat(chatty.LogPath())
		return err == nil && fi.Size() <= capBytes
	})
	if n, _ := set.LogStats(quiet); n != 1 {
		t.Errorf("the quiet guest's log was looked at %d times, want 1 (when it was added)", n)
	}
	if n, _ := set.LogStats(chatty); n < 2 {
		t.Errorf("the chatty guest's log was looked at %d times, want at least 2", n)
	}
}
