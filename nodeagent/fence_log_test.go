package nodeagent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// syncLog is a log sink the agent's goroutines may share.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const fencerFrozeWarning = "the fencer had frozen the guests"

// TestFenceLiftedQuietlyOnFirstStart: on an agent's first start its fencer
// finds no lease yet and freezes the empty kind directories; lifting that
// is no news and logs no warning. After the agent vanished with a guest
// running, the warning is logged with the number of guests it held.
func TestFenceLiftedQuietlyOnFirstStart(t *testing.T) {
	h := newHost(t)
	cfg := fencerConfig(t, h)
	beats := filepath.Join(t.TempDir(), "beats")

	// What a fencer started before the first lease does: the kind
	// directories, still empty, frozen.
	dirs, err := freezeDirs(h.cg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.Path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := setFreeze(d, true); err != nil {
			t.Fatal(err)
		}
	}

	var first syncLog
	deps := h.deps()
	deps.Logger = slog.New(slog.NewTextHandler(&first, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, kill := runUntilKilled(t, cfg, deps)
	h.coord.place(beater("web", beats))
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	growing(t, beats)
	if strings.Contains(first.String(), fencerFrozeWarning) {
		t.Errorf("a first start warned that the fencer had frozen guests, with none there:\n%s", first.String())
	}
	if !strings.Contains(first.String(), "no guest was in them") {
		t.Errorf("the lifted empty fence is not logged at debug level:\n%s", first.String())
	}

	kill()
	waitFor(t, "web frozen by the fencer", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "FROZEN" })
	var second syncLog
	deps.Logger = slog.New(slog.NewTextHandler(&second, nil))
	_, kill = runUntilKilled(t, cfg, deps)
	defer kill()
	waitFor(t, "web thawed", 10*time.Second, func() bool { return freezerState(t, st.Cgroups) == "THAWED" })
	if out := second.String(); !strings.Contains(out, fencerFrozeWarning) || !strings.Contains(out, "guests=1") {
		t.Errorf("the restarted agent lifted a fence holding web without the warning naming 1 guest:\n%s", out)
	}
}
