package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestDevGuestLogs runs process guests under corral dev's node agent on
// this host's real cgroups and reads their output through the API: what a
// guest printed, new lines with --follow (which exits 0 on SIGINT), and a
// clear refusal for a guest that does not exist.
func TestDevGuestLogs(t *testing.T) {
	p, _ := startAgentDev(t, []string{"hello", "ticker"})
	running := func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 }

	p.ok("guest", "create", "hello", "--driver", "process", "--memory", "32MiB", "--", "/bin/sh", "-c", "echo hello-from-guest; sleep 1000")
	waitGuest(t, p, "hello", "ran", running)
	// Running is reported once the process started, maybe before echo ran.
	deadline := time.Now().Add(waitTimeout)
	for out := p.ok("guest", "logs", "hello"); out != "hello-from-guest\n"; out = p.ok("guest", "logs", "hello") {
		if time.Now().After(deadline) {
			t.Fatalf("guest logs hello = %q, want %q", out, "hello-from-guest\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := p.ok("guest", "logs", "hello", "--tail", "6"); out != "guest\n" {
		t.Errorf("guest logs hello --tail 6 = %q, want %q", out, "guest\n")
	}

	p.ok("guest", "create", "ticker", "--driver", "process", "--memory", "32MiB", "--",
		"/bin/sh", "-c", "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.2; done")
	waitGuest(t, p, "ticker", "ran", running)
	testFollowLogs(t, p, "ticker")

	r := p.corral("guest", "logs", "nope")
	if r.code == 0 || !strings.Contains(r.stderr, `corral: not found: guest "nope" does not exist`) {
		t.Errorf("guest logs nope: exit %d, stderr %q; want a non-zero exit saying the guest does not exist", r.code, r.stderr)
	}
}

// testFollowLogs checks that `guest logs NAME --follow` prints lines the
// guest writes after it started, and exits 0 on SIGINT. The guest prints
// line-0, line-1, ... forever.
func testFollowLogs(t *testing.T, p *devProcess, name string) {
	f := startFollower(t, devEnv(t, p.dataDir), "guest", "logs", name, "--follow", "--addr", p.api)
	// The first line the follower prints was in the file when it asked;
	// five lines later the guest wrote it while the follower waited.
	last, want := -1, -1
	for want < 0 || last < want {
		line := f.next()
		n, err := strconv.Atoi(strings.TrimPrefix(line, "line-"))
		if err != nil || (want >= 0 && n != last+1) {
			t.Fatalf("followed line %q after line-%d", line, last)
		}
		if want < 0 {
			want = n + 5
		}
		last = n
	}
	f.interrupt()
}
