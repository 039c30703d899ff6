package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/events"
)

const waitTimeout = 30 * time.Second

// eventLines returns every event the server streams, as the raw ndjson
// lines `corral events -o json` prints, checking each one.
func eventLines(t *testing.T, p *devProcess, args ...string) []string {
	t.Helper()
	out := p.ok(append([]string{"events", "-o", "json"}, args...)...)
	var lines []string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		checkEventLine(t, line)
		lines = append(lines, line)
	}
	return lines
}

// checkEventLine fails unless line is one JSON object with index, type,
// time and actor that decodes as an event.
func checkEventLine(t *testing.T, line string) events.Event {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("event line %q is not one JSON object: %v", line, err)
	}
	for _, k := range []string{"index", "type", "time", "actor"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("event line %q has no %q", line, k)
		}
	}
	e, err := events.Unmarshal([]byte(line))
	if err != nil {
		t.Fatalf("event line %q does not decode: %v", line, err)
	}
	return e
}

func lastIndex(t *testing.T, p *devProcess) uint64 {
	t.Helper()
	lines := eventLines(t, p)
	if len(lines) == 0 {
		t.Fatal("no events at all")
	}
	return checkEventLine(t, lines[len(lines)-1]).Index
}

func guestJSON(t *testing.T, p *devProcess, name string) *api.Guest {
	t.Helper()
	var g api.Guest
	if err := json.Unmarshal([]byte(p.ok("guest", "show", name, "-o", "json")), &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

func TestDevEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	t.Parallel()
	dataDir := t.TempDir()
	p := startDev(t, dataDir)

	coordinator.WaitFor(t, waitTimeout, "the local node to register", func() bool {
		return strings.Contains(p.ok("node", "list"), "test-node")
	})

	out := p.ok("guest", "create", "web", "--driver", "process", "--memory", "64MiB", "--label", "app=web", "--", "/bin/sleep", "1000")
	if !strings.HasPrefix(out, "guest web created") {
		t.Fatalf("create printed %q", out)
	}
	coordinator.WaitFor(t, waitTimeout, "web to be placed on test-node", func() bool {
		g := guestJSON(t, p, "web")
		return g.Status == api.StatusPlaced && g.Node == "test-node"
	})

	t.Run("bad input appends nothing", func(t *testing.T) {
		before := len(eventLines(t, p))
		create := func(name string, flags ...string) []string {
			args := []string{"guest", "create", name, "--driver", "process", "--memory", "64MiB"}
			return append(append(args, flags...), "--", "/bin/true")
		}
		cases := []struct {
			args []string
			want string
		}{
			{create(".."), `guest name ".." is invalid`},
			{create("a/b"), `guest name "a/b" is invalid`},
			{create(strings.Repeat("a", 64)), "64 characters"},
			{create("a\x01b"), "guest name"},
			{create("x", "--driver", "xen"), `driver "xen" is invalid`},
			{create("x", "--memory", "0"), `memory "0" is invalid`},
			{create("x", "--cpu-shares", "1"), `cpu_shares "1" is invalid`},
			{create("web"), `guest "web" is already defined`},
			{[]string{"guest", "destroy", "nope"}, `guest "nope" does not exist`},
			{[]string{"guest", "stop", "../etc"}, `guest name "../etc" is invalid`},
			{[]string{"schedinfo", "web", "--set", "cpu_shares=1"}, `cpu_shares "1" is invalid`},
			{[]string{"schedinfo", "nope", "--set", "cpu_shares=100"}, `guest "nope" does not exist`},
			{[]string{"memtune", "web", "--hard-limit", "0"}, `hard-limit "0" is invalid`},
		}
		for _, c := range cases {
			r := p.corral(c.args...)
			if r.code != 1 || !strings.HasPrefix(r.stderr, "corral: ") || !strings.Contains(r.stderr, c.want) {
				t.Errorf("corral %q: exit %d, stderr %q; want exit 1 and %q", c.args, r.code, r.stderr, c.want)
			}
		}
		if after := len(eventLines(t, p)); after != before {
			t.Errorf("bad input appended %d events", after-before)
		}
	})

	t.Run("list and show", func(t *testing.T) {
		out := p.ok("guest", "list")
		if !strings.HasPrefix(out, "NAME ") || !containsRow(out, "web", "process", "running", "placed", "test-node", "64MiB", "1", "1024") {
			t.Errorf("guest list:\n%s", out)
		}
		var gs []*api.Guest
		if err := json.Unmarshal([]byte(p.ok("guest", "list", "-o", "json")), &gs); err != nil || len(gs) != 1 || gs[0].Name != "web" {
			t.Errorf("guest list -o json: %v %+v", err, gs)
		}
		out = p.ok("guest", "show", "web")
		for _, want := range []string{"Desired:", "running", "Status:", "placed", "Node:", "test-node", "Generation:", "Memory:", "64MiB",
			"/bin/sleep 1000", "app=web", "cpu_shares", "1024", "hard_limit", "unlimited", "Last exit:", "none"} {
			if !strings.Contains(out, want) {
				t.Errorf("guest show lacks %q:\n%s", want, out)
			}
		}
	})

	beforeTune := lastIndex(t, p)
	t.Run("schedinfo and history", func(t *testing.T) {
		want := "Scheduler      : posix\ncpu_shares     : 500\nvcpu_period    : 100000\nvcpu_quota     : -1\n"
		if out := p.ok("schedinfo", "web", "--set", "cpu_shares=500"); out != want {
			t.Errorf("schedinfo --set printed\n%s\nwant\n%s", out, want)
		}
		if out := p.ok("schedinfo", "web"); out != want {
			t.Errorf("schedinfo printed\n%s\nwant\n%s", out, want)
		}
		wantMem := "hard_limit     : 1048576\nsoft_limit     : 524288\nswap_hard_limit: unlimited\n"
		if out := p.ok("memtune", "web", "--hard-limit", "1048576", "--soft-limit", "512MiB"); out != wantMem {
			t.Errorf("memtune printed\n%s\nwant\n%s", out, wantMem)
		}
		wantMem = "hard_limit     : unlimited\nsoft_limit     : 262144\nswap_hard_limit: unlimited\n"
		if out := p.ok("memtune", "web", "--hard-limit", "-1", "--soft-limit", "256MiB", "--config"); out != wantMem {
			t.Errorf("memtune back to unlimited printed\n%s\nwant\n%s", out, wantMem)
		}
		out := p.ok("guest", "history", "web")
		if !strings.HasPrefix(out, "INDEX ") || !strings.Contains(out, "cpu_shares 1024 → 500") ||
			!strings.Contains(out, "hard_limit 64MiB → 1GiB") || !strings.Contains(out, "guest.defined") {
			t.Errorf("guest history:\n%s", out)
		}
		// Events name the token that made the change, never a label the
		// client chose.
		if actor := tokenActor(t, p); !containsRow(out, "guest.tuned", actor, "cpu_shares", "1024", "→", "500") {
			t.Errorf("history has no tuning row attributed to %s:\n%s", actor, out)
		}
		if !strings.Contains(out, "hard_limit 1GiB → unlimited (config only)") {
			t.Errorf("history lacks the config-only change back to unlimited:\n%s", out)
		}
		// web is placed on a node with no agent, so it never runs: --live
		// is refused, as virsh refuses it for a domain that is not running.
		if r := p.corral("memtune", "web", "--soft-limit", "128MiB", "--live"); r.code != 1 || !strings.Contains(r.stderr, "is not running") {
			t.Errorf("memtune --live on a guest not running: exit %d, stderr %q", r.code, r.stderr)
		}
		tuned := eventLines(t, p, "--type", "guest.tuned", "--guest", "web")
		if len(tuned) != 5 {
			t.Errorf("events --type guest.tuned --guest web gave %d lines, want 5", len(tuned))
		}
	})

	t.Run("views agree", func(t *testing.T) {
		if out := p.ok("guest", "list", "--stale"); !containsRow(out, "web", "process") {
			t.Errorf("guest list --stale:\n%s", out)
		}
		// The tuned value shows wherever cpu_shares shows.
		if g := guestJSON(t, p, "web"); g.CPUShares != 500 || g.Knob("cpu_shares") != "500" {
			t.Errorf("guest show -o json: cpu_shares %d, knob %s; want 500", g.CPUShares, g.Knob("cpu_shares"))
		}
		var gs []*api.Guest
		if err := json.Unmarshal([]byte(p.ok("guest", "list", "-o", "json")), &gs); err != nil || len(gs) == 0 || gs[0].CPUShares != 500 {
			t.Errorf("guest list -o json: %v %+v", err, gs)
		}
		// state and node list give the same allocation, in JSON and in tables.
		var st api.State
		if err := json.Unmarshal([]byte(p.ok("state", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		var nodes []api.NodeView
		if err := json.Unmarshal([]byte(p.ok("node", "list", "-o", "json")), &nodes); err != nil {
			t.Fatal(err)
		}
		if len(nodes) != 1 || len(st.Nodes) != 1 || nodes[0].AllocatedMemoryBytes != 64<<20 || nodes[0].AllocatedVCPUs != 1 ||
			st.Nodes[0].AllocatedMemoryBytes != nodes[0].AllocatedMemoryBytes || st.Nodes[0].AllocatedVCPUs != nodes[0].AllocatedVCPUs ||
			st.Nodes[0].Guests != nodes[0].Guests {
			t.Errorf("state nodes %+v, node list %+v", st.Nodes, nodes)
		}
		row := func(out string) string {
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "test-node ") {
					return strings.Join(strings.Fields(l), " ")
				}
			}
			return ""
		}
		if a, b := row(p.ok("node", "list")), row(p.ok("state")); a == "" || a != b || !strings.Contains(a, "64MiB/") || !strings.Contains(a, ", 1/") {
			t.Errorf("node list row %q, state row %q", a, b)
		}
	})

	t.Run("events json", func(t *testing.T) {
		lines := eventLines(t, p)
		for i, line := range lines {
			if e := checkEventLine(t, line); e.Index != uint64(i+1) {
				t.Errorf("line %d has index %d: indexes are not dense", i+1, e.Index)
			}
		}
		table := p.ok("events", "--since", strconv.FormatUint(beforeTune, 10))
		if !strings.HasPrefix(table, "INDEX ") || !strings.Contains(table, "cpu_shares 1024 → 500") || strings.Contains(table, "guest.defined") {
			t.Errorf("events --since %d:\n%s", beforeTune, table)
		}
	})

	t.Run("state at", func(t *testing.T) {
		p.ok("guest", "create", "later", "--driver", "process", "--memory", "32MiB", "--no-start", "--command", "/bin/sh -c 'exit 0'")
		var then, now api.State
		at := strconv.FormatUint(beforeTune, 10)
		if err := json.Unmarshal([]byte(p.ok("state", "--at", at, "-o", "json")), &then); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(p.ok("state", "-o", "json")), &now); err != nil {
			t.Fatal(err)
		}
		guest := func(st api.State, name string) *api.Guest {
			for _, g := range st.Guests {
				if g.Name == name {
					return g
				}
			}
			return nil
		}
		if web := guest(then, "web"); then.Index != beforeTune || web == nil || web.Knob("cpu_shares") != "1024" || web.CPUShares != 1024 || guest(then, "later") != nil {
			t.Errorf("state --at %s: %+v", at, then)
		}
		if web := guest(now, "web"); web == nil || web.Knob("cpu_shares") != "500" || web.CPUShares != 500 || guest(now, "later") == nil {
			t.Errorf("state now: %+v", now)
		}
		if got := guest(now, "later").Command; !reflect.DeepEqual(got, []string{"/bin/sh", "-c", "exit 0"}) {
			t.Errorf("--command split into %q", got)
		}
		out := p.ok("state", "--at", at)
		if !strings.HasPrefix(out, "State at index "+at) || !containsRow(out, "web", "process", "running", "placed", "test-node", "64MiB", "1", "1024") ||
			strings.Contains(out, "later") || !containsRow(out, "test-node", "up") {
			t.Errorf("state --at %s:\n%s", at, out)
		}
	})

	t.Run("lifecycle", func(t *testing.T) {
		p.ok("guest", "stop", "web")
		if g := guestJSON(t, p, "web"); g.Desired != api.DesiredStopped {
			t.Errorf("after stop desired is %q", g.Desired)
		}
		p.ok("guest", "start", "web")
		p.ok("guest", "destroy", "later")
		if r := p.corral("guest", "show", "later"); r.code != 1 || !strings.Contains(r.stderr, `guest "later" does not exist`) {
			t.Errorf("show after destroy: %+v", r)
		}
		if out := p.ok("guest", "history", "later"); !strings.Contains(out, "guest.undefined") {
			t.Errorf("history after destroy:\n%s", out)
		}
	})

	t.Run("cluster members", func(t *testing.T) {
		out := p.ok("cluster", "members")
		if !strings.HasPrefix(out, "ID ") || !containsRow(out, "s1", "voter", "yes") {
			t.Errorf("cluster members:\n%s", out)
		}
		host := strings.TrimPrefix(p.api, "https://")
		if !strings.Contains(out, host) {
			t.Errorf("cluster members does not show the HTTP address %s:\n%s", host, out)
		}
	})

	t.Run("events follow", func(t *testing.T) {
		testFollow(t, p)
	})

	// Everything acknowledged so far must survive kill -9.
	acked := eventLines(t, p)
	guestsBefore := p.ok("guest", "list", "-o", "json")
	p.kill9()

	p = startDev(t, dataDir)
	after := eventLines(t, p)
	if len(after) < len(acked) {
		t.Fatalf("after kill -9: %d events, had %d", len(after), len(acked))
	}
	for i := range acked {
		if after[i] != acked[i] {
			t.Errorf("after kill -9 event %d is\n%s\nwas\n%s", i+1, after[i], acked[i])
		}
	}
	if got := p.ok("guest", "list", "-o", "json"); got != guestsBefore {
		t.Errorf("after kill -9 guests are\n%s\nwere\n%s", got, guestsBefore)
	}
	if out := p.ok("guest", "history", "web"); !strings.Contains(out, "cpu_shares 1024 → 500") {
		t.Errorf("after kill -9 history:\n%s", out)
	}
	// Still writable after the restart.
	p.ok("schedinfo", "web", "--set", "cpu_shares=600")

	if err := p.stop(syscall.SIGTERM, waitTimeout); err != nil {
		t.Errorf("corral dev after SIGTERM: %v, want exit 0", err)
	}
}

// testFollow checks that `events --follow -o json` prints new events as
// they commit and exits 0 on SIGINT.
func testFollow(t *testing.T, p *devProcess) {
	since := lastIndex(t, p)
	f := startFollower(t, devEnv(t, p.dataDir), "events", "--follow", "-o", "json", "--since", strconv.FormatUint(since, 10), "--addr", p.api)
	p.ok("schedinfo", "web", "--set", "vcpu_quota=50000")
	line := f.next()
	e := checkEventLine(t, line)
	tuned, isTuned := e.Payload.(*events.GuestTuned)
	if e.Index != since+1 || !isTuned || tuned.Knob != "vcpu_quota" || tuned.Old != "-1" || tuned.New != "50000" {
		t.Errorf("followed event %s", line)
	}
	f.interrupt()
}

// follower is a corral command that keeps printing lines (events or logs
// with --follow), run as a real process.
type follower struct {
	t      *testing.T
	what   string
	cmd    *exec.Cmd
	lines  chan string
	done   chan struct{}
	err    error // the result of Wait; read after done
	stderr strings.Builder
}

// startFollower runs corral with args, and env added to the environment,
// and delivers its stdout lines.
func startFollower(t *testing.T, env []string, args ...string) *follower {
	t.Helper()
	f := &follower{t: t, what: "corral " + strings.Join(args, " "), cmd: exec.Command(corralBin, args...),
		lines: make(chan string), done: make(chan struct{})}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	f.cmd.Stdout, f.cmd.Stderr, f.cmd.Env = w, &f.stderr, append(childEnv(), env...)
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() {
		f.err = f.cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() {
		f.cmd.Process.Kill()
		<-f.done
	})
	go func() {
		defer close(f.lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
	}()
	return f
}

// next returns the next line, failing the test when the command ends or
// prints nothing in time.
func (f *follower) next() string {
	f.t.Helper()
	select {
	case line, ok := <-f.lines:
		if !ok {
			<-f.done
			f.t.Fatalf("%s ended early: %v: %s", f.what, f.err, f.stderr.String())
		}
		return line
	case <-time.After(waitTimeout):
		f.t.Fatalf("%s printed nothing in %v", f.what, waitTimeout)
	}
	return ""
}

// interrupt sends SIGINT and requires a clean exit.
func (f *follower) interrupt() {
	f.t.Helper()
	f.cmd.Process.Signal(os.Interrupt)
	select {
	case <-f.done:
		if f.err != nil {
			f.t.Errorf("%s after SIGINT: %v (stderr %q), want exit 0", f.what, f.err, f.stderr.String())
		}
	case <-time.After(waitTimeout):
		f.t.Fatalf("%s did not exit on SIGINT", f.what)
	}
	for range f.lines {
	}
}

// containsRow reports whether some line of a table holds cells in order.
func containsRow(table string, cells ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		i := 0
		for _, x := range f {
			if i < len(cells) && x == cells[i] {
				i++
			}
		}
		if i == len(cells) {
			return true
		}
	}
	return false
}

// tokenActor is how events record the token p's CLI sends:
// token:NAME/ACCESSOR-PREFIX.
func tokenActor(t *testing.T, p *devProcess) string {
	t.Helper()
	var tok api.ACLToken
	if err := json.Unmarshal([]byte(p.ok("acl", "token", "self", "-o", "json")), &tok); err != nil || len(tok.Accessor) < 8 {
		t.Fatalf("acl token self: %+v, %v", tok, err)
	}
	return "token:" + tok.Name + "/" + tok.Accessor[:8]
}

// TestDevTuningFailed drives memtune against corral dev's agent on this
// host's real cgroups: limits at odds (memory+swap below memory, memory
// lifted above memory+swap) are refused before any event; a value the
// kernel still refuses (a memory limit below what the guest holds: EBUSY)
// becomes guest.tuning_failed, which memtune reports as an error and
// guest show and history print; lifting both limits works on the host.
func TestDevTuningFailed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, cg := startAgentDev(t, []string{"hold"})
	p.ok("guest", "create", "hold", "--driver", "process", "--memory", "64MiB", "--",
		"/bin/sh", "-c", `x=$(head -c 24000000 /dev/zero | tr '\0' a); sleep 1000`)
	waitGuest(t, p, "hold", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	g := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "hold"}
	coordinator.WaitFor(t, waitTimeout, "the guest to hold its memory", func() bool {
		st, err := cg.Stats(g)
		return err == nil && st.Memory.Usage > 20<<20
	})
	dirs, err := cg.Paths(g)
	if err != nil {
		t.Fatal(err)
	}

	before := lastIndex(t, p)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--swap-hard-limit", "32MiB"}, "must be at least hard_limit (64MiB); give --swap-hard-limit of 64MiB or more"},
		{[]string{"--hard-limit", "1G", "--swap-hard-limit", "512MiB"}, "swap_hard_limit (512MiB) counts memory plus swap"},
	} {
		r := p.corral(append([]string{"memtune", "hold"}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("memtune %q: exit %d, stderr %q; want exit 1 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if after := lastIndex(t, p); after != before {
		t.Errorf("refused memtune appended %d events", after-before)
	}

	r := p.corral("memtune", "hold", "--hard-limit", "4MiB")
	if r.code != 1 || !strings.Contains(r.stderr, "node test-node refused hard_limit 4MiB") || !strings.Contains(r.stderr, "device or resource busy") {
		t.Errorf("memtune below usage: exit %d, stderr %q; want the host's refusal", r.code, r.stderr)
	}
	gv := waitGuest(t, p, "hold", "recorded the failure", func(g *api.GuestView) bool { return g.TuningFailed["hard_limit"] != nil })
	if f := gv.TuningFailed["hard_limit"]; f.Value != strconv.Itoa(4<<20) || f.Node != "test-node" || f.Generation != gv.Generation {
		t.Errorf("tuning failure = %+v", f)
	}
	if out := p.ok("guest", "show", "hold"); !strings.Contains(out, "Tuning failed:") || !containsRow(out, "hard_limit", "4MiB", "busy") {
		t.Errorf("guest show lacks the failure:\n%s", out)
	}
	if out := p.ok("guest", "history", "hold"); !containsRow(out, "guest.tuning_failed", "hard_limit", "4MiB", "refused", "test-node") {
		t.Errorf("history lacks the failure:\n%s", out)
	}
	if v := groupFile(t, dirs, "memory.limit_in_bytes"); v != strconv.Itoa(64<<20) {
		t.Errorf("memory.limit_in_bytes after the refusal = %s, want the old %d", v, 64<<20)
	}
	if n := len(eventLines(t, p, "--type", "guest.tuning_failed")); n != 1 {
		t.Errorf("%d guest.tuning_failed events, want 1", n)
	}

	// Values the host takes clear the failure; lifting both limits works.
	p.ok("memtune", "hold", "--hard-limit", "64MiB", "--swap-hard-limit", "128MiB")
	gv = waitGuest(t, p, "hold", "applied 128MiB swap", func(g *api.GuestView) bool {
		return g.Applied["swap_hard_limit"] == strconv.Itoa(128<<20) && g.Applied["hard_limit"] == strconv.Itoa(64<<20)
	})
	if gv.TuningFailed != nil {
		t.Errorf("failure kept after the knob was applied: %+v", gv.TuningFailed)
	}
	if v := groupFile(t, dirs, "memory.memsw.limit_in_bytes"); v != strconv.Itoa(128<<20) {
		t.Errorf("memory.memsw.limit_in_bytes = %s, want %d", v, 128<<20)
	}
	want := "hard_limit     : unlimited\nsoft_limit     : unlimited\nswap_hard_limit: unlimited\n"
	if out := p.ok("memtune", "hold", "--hard-limit", "unlimited", "--swap-hard-limit", "unlimited"); out != want {
		t.Errorf("memtune unlimited printed\n%s\nwant\n%s", out, want)
	}
	for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
		if v, _ := strconv.ParseInt(groupFile(t, dirs, f), 10, 64); v < 1<<62 {
			t.Errorf("%s = %d, want unlimited", f, v)
		}
	}
	if n := len(eventLines(t, p, "--type", "guest.tuning_failed")); n != 1 {
		t.Errorf("%d guest.tuning_failed events at the end, want 1", n)
	}
}

// TestDevTuningScopes checks virsh's --live, --config and --current on a
// process guest's real cpu group: a --live value lasts until the guest
// stops, a --config value waits for the next start, and a guest that is
// not running refuses --live.
func TestDevTuningScopes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, cg := startAgentDev(t, []string{"scoped"})
	p.ok("guest", "create", "scoped", "--driver", "process", "--memory", "32MiB", "--", "/bin/sleep", "1000")
	first := waitGuest(t, p, "scoped", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "scoped"})
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, dirs, "cpu.shares", "1024")
	shares := func(out string) string {
		for _, line := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu_shares" {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("no cpu_shares in\n%s", out)
		return ""
	}
	restart := func(pid int) *api.GuestView {
		t.Helper()
		p.ok("guest", "stop", "scoped")
		waitGuest(t, p, "scoped", "stopped", func(g *api.GuestView) bool { return g.Status == api.StatusExited })
		p.ok("guest", "start", "scoped")
		return waitGuest(t, p, "scoped", "ran again", func(g *api.GuestView) bool {
			return g.Status == api.StatusRunning && g.PID > 0 && g.PID != pid
		})
	}

	// --live: the running guest's file changes, the definition does not.
	if got := shares(p.ok("schedinfo", "scoped", "--set", "cpu_shares=500", "--live")); got != "500" {
		t.Errorf("schedinfo --live printed cpu_shares %s, want 500", got)
	}
	waitFile(t, dirs, "cpu.shares", "500")
	if got := shares(p.ok("schedinfo", "scoped", "--config")); got != "1024" {
		t.Errorf("schedinfo --config printed cpu_shares %s, want the persistent 1024", got)
	}
	if g := guestJSON(t, p, "scoped"); g.LiveTuning["cpu_shares"] != "500" || g.Tuning["cpu_shares"] != "" {
		t.Errorf("after --live: tuning %v live_tuning %v; want cpu_shares only live", g.Tuning, g.LiveTuning)
	}
	if out := p.ok("guest", "show", "scoped"); !containsRow(out, "cpu_shares", "500", "/", "500", "(live", "only;", "next", "start:", "1024)") {
		t.Errorf("guest show does not say the live value is live only:\n%s", out)
	}
	second := restart(first.PID)
	waitFile(t, dirs, "cpu.shares", "1024")

	// --config: the running guest keeps its value; the next start uses it.
	if got := shares(p.ok("schedinfo", "scoped", "--set", "cpu_shares=700", "--config")); got != "700" {
		t.Errorf("schedinfo --config printed cpu_shares %s, want 700", got)
	}
	// A later live change the agent applies proves it has seen the
	// --config one: updates reach it in order.
	p.ok("schedinfo", "scoped", "--set", "vcpu_quota=50000", "--live")
	waitFile(t, dirs, "cpu.cfs_quota_us", "50000")
	if v := groupFile(t, dirs, "cpu.shares"); v != "1024" {
		t.Errorf("cpu.shares = %s after --config 700, want the running 1024", v)
	}
	if got := shares(p.ok("schedinfo", "scoped")); got != "1024" {
		t.Errorf("schedinfo printed cpu_shares %s for the running guest, want 1024", got)
	}

	// A guest that is not running refuses --live and changes nothing.
	p.ok("guest", "stop", "scoped")
	waitGuest(t, p, "scoped", "stopped", func(g *api.GuestView) bool { return g.Status == api.StatusExited })
	before := lastIndex(t, p)
	if r := p.corral("schedinfo", "scoped", "--set", "cpu_shares=300", "--live"); r.code != 1 || !strings.Contains(r.stderr, `guest "scoped" is not running`) {
		t.Errorf("--live on a stopped guest: exit %d, stderr %q; want exit 1 and is not running", r.code, r.stderr)
	}
	if r := p.corral("schedinfo", "scoped", "--set", "cpu_shares=300", "--live", "--current"); r.code == 0 || !strings.Contains(r.stderr, "--current") {
		t.Errorf("--live with --current: exit %d, stderr %q; want a usage error", r.code, r.stderr)
	}
	if after := lastIndex(t, p); after != before {
		t.Errorf("refused --live appended %d events", after-before)
	}
	p.ok("guest", "start", "scoped")
	waitGuest(t, p, "scoped", "ran a third time", func(g *api.GuestView) bool {
		return g.Status == api.StatusRunning && g.PID > 0 && g.PID != second.PID
	})
	waitFile(t, dirs, "cpu.shares", "700")
	waitFile(t, dirs, "cpu.cfs_quota_us", "-1")

	out := p.ok("guest", "history", "scoped")
	if !containsRow(out, "guest.tuned", "cpu_shares", "1024", "→", "500", "(live", "only)") ||
		!containsRow(out, "guest.tuned", "cpu_shares", "1024", "→", "700", "(config", "only)") {
		t.Errorf("history lacks the scopes:\n%s", out)
	}
}

// TestDevSetmem drives setmem against corral dev's agent on this host's
// real cgroups: a process guest has no balloon, so its target becomes the
// memory cgroup's soft limit, the agent reports guest.balloon and guest
// show prints it; a target above the guest's memory or below the smallest
// balloon is refused before any event.
func TestDevSetmem(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p, cg := startAgentDev(t, []string{"sm", "hog"}, "--usage-interval", "300ms", "--balloon-timeout", "1s")
	p.ok("guest", "create", "sm", "--driver", "process", "--memory", "64MiB", "--", "/bin/sleep", "1000")
	waitGuest(t, p, "sm", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "sm"})
	if err != nil {
		t.Fatal(err)
	}
	if out := p.ok("guest", "show", "sm"); strings.Contains(out, "Balloon:") {
		t.Errorf("guest show prints a balloon before any setmem:\n%s", out)
	}

	r := p.corral("setmem", "sm", "32MiB")
	if r.code != 0 {
		t.Fatalf("setmem sm 32MiB: exit %d, stderr %q", r.code, r.stderr)
	}
	if !containsRow(r.stdout, "memory", "32MiB") || !containsRow(r.stdout, "compliant", "true") {
		t.Errorf("setmem printed\n%s\nwant memory 32MiB and the agent's compliant report", r.stdout)
	}
	if v := groupFile(t, dirs, "memory.soft_limit_in_bytes"); v != strconv.Itoa(32<<20) {
		t.Errorf("memory.soft_limit_in_bytes = %s, want %d", v, 32<<20)
	}
	if v := groupFile(t, dirs, "memory.limit_in_bytes"); v != strconv.Itoa(64<<20) {
		t.Errorf("memory.limit_in_bytes = %s, want the guest's memory %d untouched", v, 64<<20)
	}
	var balloons []string
	coordinator.WaitFor(t, waitTimeout, "a guest.balloon event", func() bool {
		balloons = eventLines(t, p, "--guest", "sm", "--type", "guest.balloon")
		return len(balloons) > 0
	})
	gv := guestView(t, p, "sm")
	b, ok := checkEventLine(t, balloons[0]).Payload.(*events.GuestBalloon)
	if !ok || b.Node != "test-node" || b.Target != 32<<20 || b.Generation != gv.Generation || !b.Compliant || b.Usage <= 0 || b.Actual != b.Usage {
		t.Errorf("balloon event = %s", balloons[0])
	}
	out := p.ok("guest", "show", "sm")
	if !containsRow(out, "Balloon:", "target", "32MiB") ||
		!containsRow(out, "actual", formatBytes(b.Actual), "(generation", strconv.FormatUint(b.Generation, 10), "on", "test-node)") ||
		!containsRow(out, "usage", formatBytes(b.Usage)) || !containsRow(out, "compliant", "true") {
		t.Errorf("guest show lacks the balloon:\n%s", out)
	}
	if strings.Contains(out, "noncompliant") {
		t.Errorf("guest show says a compliant guest is noncompliant:\n%s", out)
	}

	// The agent's usage reports go on; the guest's own events must not.
	guestEvents := func() int { return len(eventLines(t, p, "--guest", "sm")) }
	before := guestEvents()
	for _, c := range []struct{ size, want string }{
		{"1GiB", "at most the guest's maximum memory, 64MiB"},
		{"8MiB", "a balloon target of at least 16MiB"},
	} {
		r := p.corral("setmem", "sm", c.size)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("setmem sm %s: exit %d, stderr %q; want exit 1 and %q", c.size, r.code, r.stderr, c.want)
		}
	}
	if after := guestEvents(); after != before {
		t.Errorf("refused setmem appended %d events", after-before)
	}
	if v := groupFile(t, dirs, "memory.soft_limit_in_bytes"); v != strconv.Itoa(32<<20) {
		t.Errorf("memory.soft_limit_in_bytes = %s after the refusals, want the old %d", v, 32<<20)
	}

	// A guest that holds more than its target, with nothing pressing the
	// host, stays above it: noncompliant once the balloon timeout passed.
	p.ok("guest", "create", "hog", "--driver", "process", "--memory", "64MiB", "--",
		"/bin/sh", "-c", `x=$(head -c 24000000 /dev/zero | tr '\0' a); sleep 1000`)
	waitGuest(t, p, "hog", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	hog := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "hog"}
	// The string is 24,000,000 bytes, 22.9 MiB: the shell holds a little
	// more, but 24 MiB was a coin toss on what else it keeps.
	coordinator.WaitFor(t, waitTimeout, "the guest to hold its memory", func() bool {
		st, err := cg.Stats(hog)
		return err == nil && st.Memory.Usage > 22<<20
	})
	if r := p.corral("setmem", "hog", "16MiB"); r.code != 0 || !containsRow(r.stdout, "compliant", "false") {
		t.Errorf("setmem hog 16MiB: exit %d, stdout\n%s\nstderr %q; want exit 0 and compliant false", r.code, r.stdout, r.stderr)
	}
	gv = waitGuest(t, p, "hog", "reported noncompliant", func(g *api.GuestView) bool { return g.BalloonNoncompliant != nil })
	if n := gv.BalloonNoncompliant; n.Target != 16<<20 || n.Actual <= 20<<20 || n.WaitedMs < 1000 || n.Node != "test-node" || n.Generation != gv.Generation {
		t.Errorf("noncompliance = %+v", n)
	}
	if n := len(eventLines(t, p, "--guest", "hog", "--type", "guest.balloon_noncompliant")); n != 1 {
		t.Errorf("%d guest.balloon_noncompliant events, want 1", n)
	}
	if out := p.ok("guest", "show", "hog"); !containsRow(out, "Balloon:", "target", "16MiB") || !containsRow(out, "compliant", "false") ||
		!containsRow(out, "noncompliant", "held", "above", "the", "target", "16MiB,", "for") {
		t.Errorf("guest show lacks the noncompliance:\n%s", out)
	}
}

// TestDevDevicetune runs a process guest that opens /dev/loop-control, a
// device this host has and the default set leaves out, in a loop: the
// device cgroup denies it until devicetune --allow, and --deny takes it
// back, each a guest.tuned event of the devices knob attributed to the
// CLI's token.
func TestDevDevicetune(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	const dev = "/dev/loop-control"
	if fi, err := os.Stat(dev); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Skipf("this host has no %s to allow (%v)", dev, err)
	}
	p, _ := startAgentDev(t, []string{"dt"})
	p.ok("guest", "create", "dt", "--driver", "process", "--memory", "32MiB", "--", "/bin/sh", "-c",
		`while :; do if true <`+dev+` 2>/dev/null; then echo OPEN; else echo DENIED; fi; sleep 0.1; done`)
	waitGuest(t, p, "dt", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	// waitLast waits until the guest's latest complete log line is want:
	// the loop prints a line every 0.1 s, so that is what it sees now.
	waitLast := func(want string) {
		t.Helper()
		var last string
		deadline := time.Now().Add(waitTimeout)
		for {
			lines := strings.Split(strings.TrimSuffix(p.ok("guest", "logs", "dt"), "\n"), "\n")
			if last = lines[len(lines)-1]; last == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the guest's last log line is %q, want %q", last, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitLast("DENIED")
	if out := p.ok("guest", "logs", "dt"); strings.Contains(out, "OPEN") {
		t.Errorf("the guest opened %s before it was allowed:\n%s", dev, out)
	}

	out := p.ok("devicetune", "dt", "--allow", dev+":r")
	if !containsRow(out, "devices", dev+":r") {
		t.Errorf("devicetune --allow printed\n%s", out)
	}
	waitLast("OPEN")
	out = p.ok("devicetune", "dt", "--deny", dev)
	if !containsRow(out, "devices", "none") {
		t.Errorf("devicetune --deny printed\n%s", out)
	}
	waitLast("DENIED")

	actor := tokenActor(t, p)
	var tuned []*events.GuestTuned
	for _, line := range eventLines(t, p, "--guest", "dt", "--type", "guest.tuned") {
		e := checkEventLine(t, line)
		if e.Actor != actor {
			t.Errorf("guest.tuned by %q, want %q: %s", e.Actor, actor, line)
		}
		if g, ok := e.Payload.(*events.GuestTuned); ok {
			tuned = append(tuned, g)
		}
	}
	if len(tuned) != 2 {
		t.Fatalf("%d guest.tuned events, want 2 (allow, deny)", len(tuned))
	}
	for i, want := range [][2]string{{"none", dev + ":r"}, {dev + ":r", "none"}} {
		if g := tuned[i]; g.Knob != "devices" || g.Old != want[0] || g.New != want[1] || !g.Live || !g.Persistent {
			t.Errorf("guest.tuned %d = %+v, want devices %s → %s, live and persistent", i, g, want[0], want[1])
		}
	}
	hist := p.ok("guest", "history", "dt")
	if !containsRow(hist, "guest.tuned", actor, "devices", "none", "→", dev+":r") ||
		!containsRow(hist, "guest.tuned", actor, "devices", dev+":r", "→", "none") {
		t.Errorf("history lacks the devices changes by %s:\n%s", actor, hist)
	}
}
