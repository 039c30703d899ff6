package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// standIn starts a process that stands in for the agent in its own group:
// the test binary itself must not land in the test's partition.
func standIn(t *testing.T) int {
	t.Helper()
	p := exec.Command("sleep", "1000")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Process.Kill()
		_ = p.Wait()
	})
	return p.Process.Pid
}

// TestAgentEnforcesReserve: an agent with a reserve and GroupPID set moves
// that process into <partition>/corral/agent in every hierarchy before it
// registers, caps the corral root at the host's memory minus the reserve
// and at its CPUs minus the reserve, and still starts guests in their own
// groups below it, whose limits stay theirs.
func TestAgentEnforcesReserve(t *testing.T) {
	h := newHost(t)
	cfg := h.config()
	cfg.GroupPID = standIn(t)
	cfg.ReserveMemoryBytes, cfg.ReserveCPUs = 1<<30, 1
	if runtime.NumCPU() < 2 {
		cfg.ReserveCPUs = 0
	}
	h.startWith(t, cfg)
	if reg := h.coord.registered[0]; reg.ReserveMemoryBytes != 1<<30 || reg.ReserveCPUs != cfg.ReserveCPUs {
		t.Errorf("registered reserve %d CPUs, %d bytes; want %d, %d", reg.ReserveCPUs, reg.ReserveMemoryBytes, cfg.ReserveCPUs, 1<<30)
	}
	dirs := h.cg.AgentDirs()
	checkInGroups(t, dirs, cfg.GroupPID)

	mem, err := memTotal("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	wantMem := strconv.FormatInt((mem-1<<30)/page*page, 10)
	roots := make([]string, len(dirs))
	for i, d := range dirs {
		roots[i] = filepath.Dir(d)
	}
	if got := rootFile(roots, "memory.limit_in_bytes", "memory.max"); got != wantMem {
		t.Errorf("the corral root's memory limit = %q, want host memory %d minus 1GiB = %s", got, mem, wantMem)
	}
	if cfg.ReserveCPUs > 0 {
		want := strconv.Itoa((runtime.NumCPU() - 1) * 100000)
		if got := rootFile(roots, "cpu.cfs_quota_us", ""); got != "" && got != want {
			t.Errorf("cpu.cfs_quota_us of the corral root = %s, want %s", got, want)
		}
		if got := rootFile(roots, "cpu.max", ""); got != "" && got != want+" 100000" {
			t.Errorf("cpu.max of the corral root = %s, want %s 100000", got, want)
		}
	}

	h.coord.place(sleeper("web"))
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	checkInGroups(t, st.Cgroups, st.PID)
	for _, d := range st.Cgroups {
		if !under(d, roots) {
			t.Errorf("guest group %s is not below a corral root of %v", d, roots)
		}
	}
	if got := groupFile(t, st.Cgroups, "memory.limit_in_bytes"); got != strconv.Itoa(64<<20) {
		t.Errorf("the guest's memory limit = %s, want its own 64MiB", got)
	}
	h.cleanup(t)
}

// TestAgentReserveFailure: a reserve the host cannot enforce stops the
// agent with the reason; without a reserve, failing to move only warns and
// the agent goes on where it was started. A reserve the host's capacity
// cannot hold is refused by New.
func TestAgentReserveFailure(t *testing.T) {
	h := newHost(t)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	cfg := h.config()
	cfg.GroupPID, cfg.ReserveMemoryBytes = gone.Process.Pid, 1<<30
	a, err := New(cfg, h.deps())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run enforced a reserve for a process that does not exist")
		}
		t.Log(err)
	case <-time.After(15 * time.Second):
		a.Close()
		t.Fatal("Run went on without its reserve")
	}
	if len(h.coord.registered) != 0 {
		t.Errorf("the node registered without its reserve enforced")
	}

	cfg.ReserveMemoryBytes = 0
	var logs syncBuffer
	deps := h.deps()
	deps.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	a, err = New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	t.Cleanup(func() {
		a.Close()
		<-done
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("without a reserve, Run ended: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("agent not ready after 15s")
	}
	if n := strings.Count(logs.String(), "moving it into its own group failed"); n != 1 {
		t.Errorf("warned %d times that the move failed, want once:\n%s", n, logs.String())
	}

	cfg.CPUs, cfg.MemoryBytes, cfg.ReserveCPUs = 2, 1<<30, 2
	if _, err := New(cfg, h.deps()); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New with every CPU reserved: %v, want ErrInvalidConfig", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rootFile reads the first of v1 and v2 found in the corral roots, "" when
// neither is.
func rootFile(roots []string, v1, v2 string) string {
	for _, name := range []string{v1, v2} {
		if name == "" {
			continue
		}
		for _, r := range roots {
			if b, err := os.ReadFile(filepath.Join(r, name)); err == nil {
				return string(trimNL(b))
			}
		}
	}
	return ""
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

func under(dir string, roots []string) bool {
	for _, r := range roots {
		if rel, err := filepath.Rel(r, dir); err == nil && rel != "." && !filepath.IsAbs(rel) && rel[0] != '.' {
			return true
		}
	}
	return false
}
