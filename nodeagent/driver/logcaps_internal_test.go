package driver

import (
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLogCapsPolledUntilWatched: a log that does not exist when it is
// added cannot be watched; it is polled every interval, and capped once it
// appears, and watched from then on; a queue overflow checks every log.
func TestLogCapsPolledUntilWatched(t *testing.T) {
	const capBytes = 4 << 10
	c := newLogCaps(10 * time.Millisecond)
	inst := func(path string) *Instance {
		return &Instance{log: slog.New(slog.DiscardHandler), rec: record{LogPath: path, LogMaxBytes: capBytes}}
	}
	dir := t.TempDir()
	late := inst(filepath.Join(dir, "late.log"))
	c.add(late)
	t.Cleanup(func() { c.remove(late) })
	state := func(i *Instance) (stats int, watched bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.logs[i].stats, c.logs[i].wd >= 0
	}
	if _, watched := state(late); watched {
		t.Fatal("a missing log is watched")
	}
	if err := os.WriteFile(late.rec.LogPath, []byte(strings.Repeat("x", 3*capBytes)), 0o640); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; <-time.After(2 * time.Millisecond) { // poll interval
		fi, err := os.Stat(late.rec.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		_, watched := state(late)
		if watched && fi.Size() <= capBytes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: the late log is %d bytes (cap %d), watched %v", fi.Size(), capBytes, watched)
		}
	}
	if c.in == nil {
		t.Skip("no inotify here: every log is polled")
	}
	// An overflow (wd -1, IN_Q_OVERFLOW) marks nothing but asks for all.
	ev := make([]byte, unix.SizeofInotifyEvent)
	binary.NativeEndian.PutUint32(ev[0:], 0xffffffff)
	binary.NativeEndian.PutUint32(ev[4:], unix.IN_Q_OVERFLOW)
	if !c.grown(ev) {
		t.Error("an overflow event does not ask to check every log")
	}
}
