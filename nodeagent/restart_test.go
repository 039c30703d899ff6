package nodeagent

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

func policy(mode string, attempts int, delay time.Duration) *events.RestartPolicy {
	return &events.RestartPolicy{Mode: mode, Attempts: attempts, IntervalMs: time.Minute.Milliseconds(),
		DelayMs: delay.Milliseconds(), Backoff: 2}
}

// TestDecideRestart pins the policy decisions: what restarts under which
// mode, how attempts count within the sliding interval, the backoff and
// its cap, and that a guest asked to stop never restarts.
func TestDecideRestart(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)
	want := func(p *events.RestartPolicy, desired string) *DesiredGuest {
		return &DesiredGuest{Name: "g", Desired: desired, Definition: events.GuestDefined{Restart: p}}
	}
	onFailure := policy(events.RestartOnFailure, 3, time.Second)
	always := policy(events.RestartAlways, 2, 20*time.Second)
	oom := &events.GuestExited{Code: -1, Signal: "SIGKILL", OOMKilled: true}
	code3 := &events.GuestExited{Code: 3}
	clean := &events.GuestExited{Code: 0}
	startFailed := &events.GuestExited{Code: -1, Error: `corral: exec "/nope": no such file`}
	killed := &events.GuestExited{Code: -1, Signal: "SIGTERM"}
	ago := func(d ...time.Duration) []time.Time {
		var out []time.Time
		for _, x := range d {
			out = append(out, now.Add(-x))
		}
		return out
	}
	cases := []struct {
		name string
		want *DesiredGuest
		exit *events.GuestExited
		past []time.Time
		out  RestartDecision
	}{
		{"no policy", want(nil, DesiredRunning), code3, nil, RestartDecision{Reason: "exit code 3"}},
		{"asked to stop", want(onFailure, DesiredStopped), code3, nil, RestartDecision{Reason: "exit code 3"}},
		{"stopped by the agent", nil, oom, nil, RestartDecision{Reason: "OOM-killed"}},
		{"on-failure, clean exit", want(onFailure, DesiredRunning), clean, nil, RestartDecision{Reason: "exit code 0"}},
		{"on-failure, OOM", want(onFailure, DesiredRunning), oom, nil,
			RestartDecision{Restart: true, Attempt: 1, Of: 3, Delay: time.Second, Reason: "OOM-killed"}},
		{"on-failure, signal", want(onFailure, DesiredRunning), killed, nil,
			RestartDecision{Restart: true, Attempt: 1, Of: 3, Delay: time.Second, Reason: "killed by SIGTERM"}},
		{"on-failure, failed start, second attempt backs off", want(onFailure, DesiredRunning), startFailed, ago(time.Second),
			RestartDecision{Restart: true, Attempt: 2, Of: 3, Delay: 2 * time.Second, Reason: `start failed: exec "/nope": no such file`}},
		{"attempts outside the interval do not count", want(onFailure, DesiredRunning), code3, ago(2*time.Minute, 90*time.Second, time.Second),
			RestartDecision{Restart: true, Attempt: 2, Of: 3, Delay: 2 * time.Second, Reason: "exit code 3"}},
		{"on-failure, used up", want(onFailure, DesiredRunning), code3, ago(30*time.Second, 20*time.Second, time.Second),
			RestartDecision{Exhausted: true, Attempt: 3, Of: 3, Reason: "exit code 3"}},
		{"always, clean exit", want(always, DesiredRunning), clean, nil,
			RestartDecision{Restart: true, Attempt: 1, Of: 2, Delay: 20 * time.Second, Reason: "exit code 0"}},
		{"always, second attempt backs off", want(always, DesiredRunning), clean, ago(time.Second),
			RestartDecision{Restart: true, Attempt: 2, Of: 2, Delay: 40 * time.Second, Reason: "exit code 0"}},
		{"zero attempts: used up at once", want(policy(events.RestartAlways, 0, 0), DesiredRunning), clean, nil,
			RestartDecision{Exhausted: true, Of: 0, Reason: "exit code 0"}},
	}
	for _, c := range cases {
		if got := DecideRestart(c.want, c.exit, c.past, now); got != c.out {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.out)
		}
	}
	p := policy(events.RestartAlways, 10, 10*time.Second)
	for n, want := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 4: time.Minute, 9: time.Minute} {
		if got := p.DelayFor(n); got != want {
			t.Errorf("DelayFor(%d) = %v, want %v", n, got, want)
		}
	}
}

// TestAgentRestartsOnFailure: a process guest that exits 3 is restarted
// in place within its policy (same generation, the next run each time),
// each restart reported with the exit it follows and started no sooner
// than its backed-off delay; once the attempts are used up the agent
// says so and starts nothing more.
func TestAgentRestartsOnFailure(t *testing.T) {
	h := newHost(t)
	h.start(t)
	t.Cleanup(func() { h.cleanup(t) })
	// A guest that keeps running keeps usage reports, the agent's passes,
	// coming after the others ended.
	h.coord.place(events.GuestDefined{Name: "sentinel", Driver: events.DriverProcess, MemoryBytes: 32 << 20, VCPUs: 1, CPUShares: 1024,
		Command: []string{"sleep", "1000"}})
	gen := h.coord.place(events.GuestDefined{Name: "crash", Driver: events.DriverProcess, MemoryBytes: 32 << 20, VCPUs: 1, CPUShares: 1024,
		Command: []string{"/bin/sh", "-c", "exit 3"}, Restart: policy(events.RestartOnFailure, 2, 100*time.Millisecond)})

	ex := waitReport(t, h.coord, "crash", func(p *events.GuestRestartsExhausted) bool { return true })
	if ex.Generation != gen || ex.Attempts != 2 || ex.Reason != "exit code 3" || ex.Node != testNode {
		t.Errorf("exhausted report %+v, want 2 attempts on generation %d for exit code 3", ex, gen)
	}
	restarts := reportsOf[*events.GuestRestarting](h.coord, "crash")
	if len(restarts) != 2 {
		t.Fatalf("got %d restarts, want 2: %+v", len(restarts), restarts)
	}
	for i, r := range restarts {
		want := events.GuestRestarting{Node: testNode, Generation: gen, Attempt: i + 1, Of: 2, DelayMs: int64(100 << i), Reason: "exit code 3"}
		if *r != want {
			t.Errorf("restart %d: %+v, want %+v", i+1, *r, want)
		}
	}
	starts := reportsOf[*events.GuestStarted](h.coord, "crash")
	exits := reportsOf[*events.GuestExited](h.coord, "crash")
	if len(starts) != 3 || len(exits) != 3 {
		t.Fatalf("got %d starts and %d exits, want 3 runs", len(starts), len(exits))
	}
	for i := range 3 {
		if starts[i].Restart != i || exits[i].Restart != i || starts[i].Generation != gen || exits[i].Code != 3 {
			t.Errorf("run %d: start %+v exit %+v", i, starts[i], exits[i])
		}
	}
	// Each restarted run started after its delay, counted from the report.
	restartAt := reportTimes[*events.GuestRestarting](h.coord, "crash")
	startAt := reportTimes[*events.GuestStarted](h.coord, "crash")
	for i, r := range restarts {
		if waited := startAt[i+1].Sub(restartAt[i]); waited < time.Duration(r.DelayMs)*time.Millisecond {
			t.Errorf("run %d started %v after its restart, before its delay of %dms", i+1, waited, r.DelayMs)
		}
	}
	// Nothing more starts: the agent held to the policy.
	n := h.coord.reportCount()
	usage := len(reportsOf[*events.NodeUsage](h.coord, ""))
	waitFor(t, "a few more passes", 5*time.Second, func() bool { return len(reportsOf[*events.NodeUsage](h.coord, "")) >= usage+3 })
	if got := len(reportsOf[*events.GuestStarted](h.coord, "crash")); got != 3 {
		t.Errorf("after the attempts were used up the guest started again (%d starts, reports %d -> %d)", got, n, h.coord.reportCount())
	}
}

// TestAgentRestartsAlways: --restart always restarts a guest that exited
// 0; a failed start counts as a failure for on-failure; --restart no and
// a stop the log asked for restart nothing.
func TestAgentRestartsAlways(t *testing.T) {
	h := newHost(t)
	h.start(t)
	t.Cleanup(func() { h.cleanup(t) })
	def := func(name string, p *events.RestartPolicy, cmd ...string) events.GuestDefined {
		return events.GuestDefined{Name: name, Driver: events.DriverProcess, MemoryBytes: 32 << 20, VCPUs: 1, CPUShares: 1024, Command: cmd, Restart: p}
	}
	h.coord.place(def("done", policy(events.RestartAlways, 1, 0), "/bin/true"))
	h.coord.place(def("plain", nil, "/bin/sh", "-c", "exit 3"))
	h.coord.place(def("missing", policy(events.RestartOnFailure, 1, 0), "/nonexistent/corral-restart-test"))
	h.coord.place(def("svc", policy(events.RestartAlways, 3, 0), "sleep", "1000"))
	h.coord.place(def("sentinel", nil, "sleep", "1000")) // keeps usage reports coming

	r := waitReport(t, h.coord, "done", func(p *events.GuestRestarting) bool { return true })
	if r.Reason != "exit code 0" {
		t.Errorf("always: restart reason %q, want exit code 0", r.Reason)
	}
	waitReport(t, h.coord, "done", func(p *events.GuestStarted) bool { return p.Restart == 1 })
	waitReport(t, h.coord, "done", func(p *events.GuestRestartsExhausted) bool { return p.Attempts == 1 })

	r = waitReport(t, h.coord, "missing", func(p *events.GuestRestarting) bool { return true })
	if !strings.HasPrefix(r.Reason, "start failed: ") {
		t.Errorf("failed start: restart reason %q, want start failed: ...", r.Reason)
	}
	waitReport(t, h.coord, "missing", func(p *events.GuestRestartsExhausted) bool { return true })

	waitReport(t, h.coord, "svc", func(p *events.GuestStarted) bool { return true })
	h.coord.setDesired("svc", DesiredStopped)
	waitReport(t, h.coord, "svc", func(p *events.GuestExited) bool { return true })
	waitReport(t, h.coord, "plain", func(p *events.GuestExited) bool { return p.Code == 3 })
	// A few passes later, neither was restarted.
	usage := len(reportsOf[*events.NodeUsage](h.coord, ""))
	waitFor(t, "a few more passes", 5*time.Second, func() bool { return len(reportsOf[*events.NodeUsage](h.coord, "")) >= usage+3 })
	for _, name := range []string{"plain", "svc"} {
		if got := reportsOf[*events.GuestRestarting](h.coord, name); len(got) != 0 {
			t.Errorf("%s was restarted: %+v", name, got)
		}
		if got := reportsOf[*events.GuestStarted](h.coord, name); len(got) > 1 {
			t.Errorf("%s started %d times", name, len(got))
		}
	}
}

// TestAgentRestartsOnLimitHits: a guest whose memory limit is hit at
// least --restart-on-limit-hits times in one usage interval (here it
// writes a file through the page cache, over and over, in a 16 MiB
// group: the kernel reclaims and counts failcnt, never OOM-kills) is
// ended by the agent and restarted with that reason.
func TestAgentRestartsOnLimitHits(t *testing.T) {
	h := newHost(t)
	h.start(t)
	t.Cleanup(func() { h.cleanup(t) })
	file := filepath.Join(h.state, "storm.dat")
	p := policy(events.RestartOnFailure, 1, 0)
	p.LimitHits = 5
	h.coord.place(events.GuestDefined{Name: "storm", Driver: events.DriverProcess, MemoryBytes: 16 << 20, VCPUs: 1, CPUShares: 1024,
		Command: []string{"/bin/sh", "-c", "while :; do dd if=/dev/zero of=" + file + " bs=1M count=64 2>/dev/null; done"}, Restart: p})

	r := waitReport(t, h.coord, "storm", func(p *events.GuestRestarting) bool { return true })
	if !strings.HasPrefix(r.Reason, "memory limit hit ") || !strings.HasSuffix(r.Reason, " times in 100ms") {
		t.Errorf("restart reason %q, want memory limit hit N times in 100ms", r.Reason)
	}
	hits := reportsOf[*events.GuestLimitHit](h.coord, "storm")
	if len(hits) == 0 || hits[len(hits)-1].Delta < 5 {
		t.Errorf("limit hits reported before the restart: %+v, want a rise of at least 5", hits)
	}
	waitReport(t, h.coord, "storm", func(p *events.GuestStarted) bool { return p.Restart == 1 })
}
