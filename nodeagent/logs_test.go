package nodeagent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
)

func TestReadLogFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), driver.LogFile)
	if c := readLogFile(path, LogRead{}); c.Err != nil || len(c.Data) != 0 || c.Next != 0 || c.Size != 0 || c.Truncated {
		t.Fatalf("a log not written yet reads %+v", c)
	}
	if err := os.WriteFile(path, []byte("hello\nworld\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		r         LogRead
		data      string
		next      int64
		truncated bool
	}{
		{"whole", LogRead{}, "hello\nworld\n", 12, false},
		{"from an offset", LogRead{Offset: 6}, "world\n", 12, false},
		{"at the end", LogRead{Offset: 12}, "", 12, false},
		{"bounded", LogRead{Offset: 1, Max: 4}, "ello", 5, false},
		{"tail", LogRead{Offset: 3, Tail: 3}, "ld\n", 12, false},
		{"tail past the head", LogRead{Tail: 100}, "hello\nworld\n", 12, false},
		{"offset past the end: the head was cut", LogRead{Offset: 50}, "hello\nworld\n", 12, true},
	} {
		c := readLogFile(path, tc.r)
		if c.Err != nil || string(c.Data) != tc.data || c.Next != tc.next || c.Size != 12 || c.Truncated != tc.truncated {
			t.Errorf("%s: %+v read %q next %d size %d truncated %v err %v", tc.name, tc.r, c.Data, c.Next, c.Size, c.Truncated, c.Err)
		}
	}
	if c := readLogFile(path, LogRead{Offset: -1}); !errors.Is(c.Err, events.ErrInvalid) {
		t.Errorf("a negative offset: %v", c.Err)
	}
	big := strings.Repeat("x", maxLogRead+10)
	if err := os.WriteFile(path, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := readLogFile(path, LogRead{Max: 1 << 30}); len(c.Data) != maxLogRead || c.Next != maxLogRead {
		t.Errorf("a huge max read %d bytes, want the cap %d", len(c.Data), maxLogRead)
	}
}

func TestReadLogRefusesOtherNames(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{NodeID: "n1", StateDir: dir}, names: map[string]bool{"web": true}}
	if err := os.MkdirAll(a.guestDir("web"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.guestDir("web"), driver.LogFile), []byte("out\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := a.readLog(LogRead{Guest: "web"}); c.Err != nil || string(c.Data) != "out\n" {
		t.Fatalf("read of a held guest: %q %v", c.Data, c.Err)
	}
	if c := a.readLog(LogRead{Guest: "db"}); !errors.Is(c.Err, ErrNotHeld) {
		t.Errorf("read of a guest not held: %v", c.Err)
	}
	for _, name := range []string{"", "..", "../web", "web/../../x", "/etc/passwd"} {
		if c := a.readLog(LogRead{Guest: name}); !errors.Is(c.Err, events.ErrInvalid) {
			t.Errorf("read of guest %q: %v, want invalid", name, c.Err)
		}
	}
}
