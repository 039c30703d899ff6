package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// runInProcess runs the command tree in this process with no server.
func runInProcess(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	env := map[string]string{"CORRAL_ADDR": "http://127.0.0.1:1"}
	code = run(args, &out, &errb, func(k string) string { return env[k] })
	return out.String(), errb.String(), code
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args  []string
		want  string
		usage bool
	}{
		{[]string{"bogus"}, `unknown command "bogus" for "corral"`, true},
		{[]string{"guest", "bogus"}, `unknown command "bogus" for "corral guest"`, true},
		{[]string{"guest", "create"}, "give exactly one guest NAME", true},
		{[]string{"guest", "create", "a", "b"}, "give exactly one guest NAME", true},
		{[]string{"guest", "create", "web", "--memory", "64MiB", "--", "/bin/true"}, `required flag(s) "driver" not set`, true},
		{[]string{"guest", "create", "web", "--driver", "process", "--memory", "64MiB", "--vcpus", "x"}, `invalid argument "x" for "--vcpus"`, true},
		{[]string{"guest", "create", "web", "--driver", "process", "--memory", "64MiB", "--command", "a", "--", "b"}, "either with --command or after --", true},
		{[]string{"guest", "create", "web", "--driver", "process", "--memory", "64MiB", "--label", "nokey", "--", "b"}, `label "nokey" is not key=value`, true},
		{[]string{"guest", "show"}, "give exactly one guest NAME", true},
		{[]string{"guest", "list", "-o", "yaml"}, `output format "yaml" is not known`, true},
		{[]string{"schedinfo", "web", "--set", "cpu_shares"}, "is not KNOB=VALUE", true},
		{[]string{"server", "--data-dir", "/tmp/x"}, `required flag(s) "id" not set`, true},
		{[]string{"server", "--id", "s1", "--data-dir", "/tmp/x", "--bootstrap", "--join", "a:1"}, "bootstrap", true},
		{[]string{"server", "--id", "s1", "--data-dir", "/tmp/x", "--nats-url", "nats://x:4222", "--nats-port", "5"}, "nats-url", true},
		{[]string{"dev", "--log-level", "loud"}, `log level "loud" is not known`, true},
		// Caught locally, before any request: no usage text.
		{[]string{"guest", "create", "..", "--driver", "process", "--memory", "64MiB", "--", "/bin/true"}, `guest name ".." is invalid`, false},
		{[]string{"guest", "create", "web", "--driver", "process", "--memory", "64MiB"}, `command "" is invalid`, false},
		{[]string{"guest", "create", "web", "--driver", "lxc", "--memory", "64MiB"}, `rootfs "" is invalid`, false},
		{[]string{"guest", "create", "web", "--driver", "process", "--memory", "1.5G", "--", "x"}, `memory "1.5G" is invalid`, false},
		{[]string{"guest", "create", "web", "--driver", "process", "--memory", "64M", "--vcpus", "0", "--", "x"}, `vcpus "0" is invalid`, false},
		{[]string{"guest", "create", "web", "--driver", "process", "--memory", "64M", "--command", "sh -c 'x"}, "unterminated single quote", false},
		{[]string{"guest", "import"}, `required flag(s) "from-libvirt-xml" not set`, true},
		{[]string{"guest", "import", "--from-libvirt-xml", "/nonexistent/d.xml"}, "--from-libvirt-xml: open /nonexistent/d.xml", false},
		{[]string{"guest", "import", "--from-libvirt-xml", "testdata/libvirt/kvm-web-vm.xml", "--name", "Web_1"}, "give the guest a name corral takes with --name", false},
		{[]string{"guest", "destroy", "a/b"}, `guest name "a/b" is invalid`, false},
		{[]string{"guest", "history", "A"}, `guest name "A" is invalid`, false},
		{[]string{"schedinfo", "web", "--set", "hard_limit=1G"}, "use corral memtune --hard-limit", false},
		{[]string{"schedinfo", "web", "--set", "cpu_sharez=1"}, `knob "cpu_sharez" is invalid`, false},
		{[]string{"memtune", "web", "--hard-limit", "lots"}, `hard-limit "lots" is invalid`, false},
		{[]string{"events", "--type", "guest.exploded"}, "unknown event type", false},
		{[]string{"events", "--guest", "a.b"}, `guest "a.b" is invalid`, false},
		{[]string{"dev", "--node-id", "Bad_ID"}, `node id "Bad_ID" is invalid`, false},
		{[]string{"server", "--id", "s1", "--data-dir", t.TempDir(), "--http-addr", "nonsense"}, `http address "nonsense" is not host:port`, false},
	}
	for _, c := range cases {
		stdout, stderr, code := runInProcess(t, c.args...)
		if code != 1 {
			t.Errorf("%q: exit %d, want 1 (stderr %q)", c.args, code, stderr)
			continue
		}
		first, _, _ := strings.Cut(stderr, "\n")
		if !strings.HasPrefix(first, "corral: ") || strings.HasPrefix(first, "corral: corral:") || !strings.Contains(first, c.want) {
			t.Errorf("%q: stderr starts %q, want corral: ...%s", c.args, first, c.want)
		}
		if got := strings.Contains(stderr, "Usage:"); got != c.usage {
			t.Errorf("%q: usage printed %v, want %v:\n%s", c.args, got, c.usage, stderr)
		}
		if stdout != "" {
			t.Errorf("%q: printed %q to stdout", c.args, stdout)
		}
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{}, {"--help"}, {"guest"}, {"guest", "create", "--help"}, {"help", "events"}} {
		stdout, stderr, code := runInProcess(t, args...)
		if code != 0 || !strings.Contains(stdout, "Usage:") || stderr != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}

func TestSplitCommand(t *testing.T) {
	good := map[string][]string{
		"/bin/sleep 1000":                {"/bin/sleep", "1000"},
		"  a   b\tc  ":                   {"a", "b", "c"},
		`sh -c 'echo hi; sleep 5'`:       {"sh", "-c", "echo hi; sleep 5"},
		`echo "a \"b\" \\ $x"`:           {"echo", `a "b" \ $x`},
		`echo "a\nb"`:                    {"echo", `a\nb`},
		`a\ b c`:                         {"a b", "c"},
		`x''y ""`:                        {"xy", ""},
		`'it'\''s'`:                      {"it's"},
		"":                               nil,
		`printf '%s\n' "$HOME" ~ '*' \*`: {"printf", `%s\n`, "$HOME", "~", "*", "*"},
	}
	for in, want := range good {
		got, err := splitCommand(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("splitCommand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`'open`, `"open`, `"a\"`, `trailing\`} {
		if got, err := splitCommand(in); err == nil {
			t.Errorf("splitCommand(%q) = %q, want an error", in, got)
		}
	}
}

func TestJoinCommandRoundTrip(t *testing.T) {
	for _, argv := range [][]string{
		{"/bin/sleep", "1000"},
		{"sh", "-c", "echo 'hi there'; exit 3"},
		{"a b", "", `"q"`, `back\slash`, "$HOME", "tab\there"},
	} {
		line := joinCommand(argv)
		got, err := splitCommand(line)
		if err != nil || !reflect.DeepEqual(got, argv) {
			t.Errorf("joinCommand(%q) = %q, which splits to %q, %v", argv, line, got, err)
		}
	}
}

func FuzzSplitCommand(f *testing.F) {
	f.Add(`sh -c 'echo hi; sleep 5'`)
	f.Add(`echo "a \"b\"" c\ d`)
	f.Fuzz(func(t *testing.T, s string) {
		argv, err := splitCommand(s)
		if err != nil {
			return
		}
		again, err := splitCommand(joinCommand(argv))
		if err != nil || len(again) != len(argv) {
			t.Fatalf("%q: argv %q rejoined splits to %q, %v", s, argv, again, err)
		}
		for i := range argv {
			if again[i] != argv[i] {
				t.Fatalf("%q: argv %q rejoined splits to %q", s, argv, again)
			}
		}
	})
}

func TestParseKiB(t *testing.T) {
	good := map[string]string{
		"1048576": "1073741824", "-1": events.Unlimited, "unlimited": events.Unlimited,
		"512MiB": "536870912", "1G": "1073741824", " 4 ": "4096",
	}
	for in, want := range good {
		got, err := parseKiB("hard-limit", in)
		if err != nil || got != want {
			t.Errorf("parseKiB(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-2", "", "x", "1.5G", "99999999999999999999"} {
		if got, err := parseKiB("hard-limit", in); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("parseKiB(%q) = %q, %v; want an invalid-value error", in, got, err)
		}
	}
	if got := kibOrUnlimited("1073741824"); got != 1048576 {
		t.Errorf("kibOrUnlimited = %d", got)
	}
	if got := kibOrUnlimited(events.Unlimited); got != -1 {
		t.Errorf("kibOrUnlimited(unlimited) = %d", got)
	}
}

func TestPrintParamsMatchesVirsh(t *testing.T) {
	var b bytes.Buffer
	printParams(&b, [][2]string{{"Scheduler", "posix"}, {"cpu_shares", "1024"}, {"swap_hard_limit", "unlimited"}})
	want := "Scheduler      : posix\ncpu_shares     : 1024\nswap_hard_limit: unlimited\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestNodeIDFromHostname(t *testing.T) {
	cases := map[string]string{
		"web01":                        "web01",
		"My_Host.Example.COM":          "my-host-example-com",
		"--x":                          "x",
		"":                             "local",
		"___":                          "local",
		"héllo":                        "h-llo",
		strings.Repeat("a", 70):        strings.Repeat("a", 63),
		strings.Repeat("a", 62) + ".b": strings.Repeat("a", 62),
	}
	for in, want := range cases {
		got := nodeIDFromHostname(in)
		if got != want {
			t.Errorf("nodeIDFromHostname(%q) = %q, want %q", in, got, want)
		}
		if err := events.ValidateID("node id", got); err != nil {
			t.Errorf("nodeIDFromHostname(%q) = %q is not a valid ID: %v", in, got, err)
		}
	}
}

func TestParseMemTotal(t *testing.T) {
	got, err := parseMemTotal([]byte("MemFree:  100 kB\nMemTotal:       16318468 kB\n"))
	if err != nil || got != 16318468<<10 {
		t.Errorf("got %d, %v", got, err)
	}
	for _, in := range []string{"", "MemTotal: x kB\n", "MemTotal: 5 MB\n"} {
		if _, err := parseMemTotal([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	if _, err := hostMemory(); err != nil {
		t.Errorf("this host: %v", err)
	}
}

func TestDefaultDevDataDir(t *testing.T) {
	env := map[string]string{"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}
	get := func(k string) string { return env[k] }
	if d, _ := defaultDevDataDir(get); d != "/xdg/corral/dev" {
		t.Errorf("with XDG_DATA_HOME: %s", d)
	}
	delete(env, "XDG_DATA_HOME")
	if d, _ := defaultDevDataDir(get); d != "/home/u/.local/share/corral/dev" {
		t.Errorf("without XDG_DATA_HOME: %s", d)
	}
}

func TestFormatBytes(t *testing.T) {
	cases := map[int64]string{0: "0B", 1000: "1000B", 1024: "1KiB", 64 << 20: "64MiB", 16318468 << 10: "15.6GiB", 3 << 40: "3TiB", 1536 << 20: "1.5GiB"}
	for in, want := range cases {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestEventDetails(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tuned := func(knob, old, new string, live, persistent bool) events.Event {
		return events.New(at, "cli:root", &events.GuestTuned{Knob: knob, Old: old, New: new, Live: live, Persistent: persistent})
	}
	cases := []struct {
		e    events.Event
		want string
	}{
		{tuned("cpu_shares", "1024", "500", true, true), "cpu_shares 1024 → 500"},
		{tuned("hard_limit", "unlimited", "1073741824", true, false), "hard_limit unlimited → 1GiB (live only)"},
		{tuned("vcpu_quota", "-1", "50000", false, true), "vcpu_quota -1 → 50000 (config only)"},
		{tuned("numa_nodeset", "", "0", true, true), "numa_nodeset unset → 0"},
		{events.New(at, "node:n1", &events.GuestTuningApplied{Node: "n1", Generation: 4, Knob: "vcpupin", Value: "0:1;1:0-1"}), "vcpupin 0:1;1:0-1 applied on n1 (generation 4)"},
		{events.New(at, "node:n1", &events.GuestTuningApplied{Node: "n1", Generation: 4, Knob: "hard_limit", Value: "67108864"}), "hard_limit 64MiB applied on n1 (generation 4)"},
		{events.New(at, "a", &events.GuestExited{Node: "n1", Generation: 5, Code: 137, Signal: "killed", OOMKilled: true}),
			"node=n1 generation=5 killed by signal killed, OOM-killed"},
		{events.New(at, "a", &events.GuestExited{Node: "n1", Generation: 5, Error: "no such file"}), "node=n1 generation=5 failed: no such file"},
		{events.New(at, "a", &events.GuestDefined{Name: "w", Driver: "process", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Command: []string{"sh", "-c", "a b"}}),
			`driver=process memory=64MiB vcpus=1 cpu_shares=1024 command="sh -c 'a b'"`},
		{events.New(at, "a", &events.GuestTuningApplied{Node: "n1", Generation: 6, Knob: "hard_limit", Value: "104857600"}), "hard_limit 100MiB applied on n1 (generation 6)"},
		{events.New(at, "a", &events.GuestDrift{Node: "n1", Knob: "cpu_shares", Expected: "500", Found: "1024", Corrected: true}), "cpu_shares was 1024 on n1, want 500: put back"},
		{events.New(at, "a", &events.NodeUsage{IntervalMs: 10000, Guests: []events.GuestUsage{{MemoryBytes: 1 << 20}, {MemoryBytes: 3 << 20}}}), "guests=2 memory=4MiB interval=10s"},
		{events.New(at, "a", &events.NodeEligibility{Eligibility: events.Draining, MaxParallel: 2}), "draining max_parallel=2"},
		{events.New(at, "a", &events.GuestLimitHit{Node: "n1", Generation: 3, LimitHits: 9, Delta: 4}), "node=n1 generation=3 limit_hits=9 (+4)"},
		{events.New(at, "a", &events.SchedulerConfig{Algorithm: "spread", CPUOvercommit: 4, MemoryOvercommit: 1}), "algorithm=spread cpu_overcommit=4 memory_overcommit=1"},
		{events.New(at, "a", &events.GuestRestarting{Node: "n1", Generation: 5, Attempt: 2, Of: 3, DelayMs: 2000, Reason: "OOM-killed"}),
			"node=n1 generation=5: restart 2 of 3 in 2s after OOM-killed"},
		{events.New(at, "a", &events.GuestRestartsExhausted{Node: "n1", Generation: 5, Attempts: 3, IntervalMs: 300000, Reason: "exit code 3"}),
			"node=n1 generation=5: 3 restarts in 5m0s used up, the last run ended: exit code 3"},
		{events.New(at, "a", &events.GuestStarted{Node: "n1", Generation: 5, PID: 9, Restart: 2}), "node=n1 generation=5 pid=9 restart=2"},
	}
	for _, c := range cases {
		if got := eventDetails(c.e); got != c.want {
			t.Errorf("%s: %q, want %q", c.e.Type, got, c.want)
		}
	}
	placed := events.New(at, "scheduler:s1", &events.GuestPlaced{Node: "n1"})
	placed.Index = 7
	if got := eventDetails(placed); got != "node=n1 generation=7" {
		t.Errorf("placed: %q", got)
	}
	e := events.New(at, "a", &events.GuestStopRequested{})
	e.Reason = "maintenance"
	if got := eventDetails(e); got != `reason="maintenance"` {
		t.Errorf("reason: %q", got)
	}
}

// TestEventsStartAtRetainedWithoutSince checks that `corral events` with no
// --since starts at the oldest retained event, while an explicit --since
// that retention passed is an error naming the first retained index. The
// server is a stand-in for the 410 path, which a real server reaches only
// after its retention tick.
func TestEventsStartAtRetainedWithoutSince(t *testing.T) {
	first := events.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "cli:root", &events.GuestStopRequested{})
	first.Index, first.Guest = 5, "web"
	line, err := events.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	p := newTestPKI(t)
	env := envFunc(p.clientEnv())
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/events" {
			http.NotFound(w, r)
			return
		}
		if since := r.URL.Query().Get("since"); since != "4" {
			w.WriteHeader(http.StatusGone)
			fmt.Fprintf(w, `{"error":{"code":"gone","message":"events before index 5 are no longer retained (asked for %s); resume from 5","first_index":5}}`, since)
			return
		}
		w.Write(append(line, '\n'))
	}))
	srv.TLS = p.serverTLS("s1")
	srv.StartTLS()
	defer srv.Close()

	var out, errb bytes.Buffer
	if code := run([]string{"events", "-o", "json", "--addr", srv.URL}, &out, &errb, env); code != 0 {
		t.Fatalf("events without --since: exit %d: %s", code, errb.String())
	}
	if out.String() != string(line)+"\n" {
		t.Errorf("events without --since printed %q, want %q", out.String(), line)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"events", "--since", "1", "--addr", srv.URL}, &out, &errb, env); code != 1 ||
		!strings.HasPrefix(errb.String(), "corral: events before index 5 are no longer retained") {
		t.Errorf("events --since 1: exit %d, stderr %q", code, errb.String())
	}
}

func TestUnreachableServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	var out, errb bytes.Buffer
	code := run([]string{"guest", "list", "--addr", addr}, &out, &errb, envFunc(newTestPKI(t).clientEnv()))
	want := "corral: cannot reach https://" + addr + ": "
	if code != 1 || !strings.HasPrefix(errb.String(), want) || !strings.Contains(errb.String(), "is corral dev or corral server running") {
		t.Errorf("exit %d, stderr %q; want exit 1 and %q…", code, errb.String(), want)
	}
	if d := time.Since(start); d > readRetry+5*time.Second {
		t.Errorf("a read gave up after %v, want about %v", d, readRetry)
	}
	// Without a CA nothing is sent, least of all a token.
	errb.Reset()
	code = run([]string{"guest", "list", "--addr", addr}, &out, &errb, envFunc([]string{"CORRAL_TOKEN=crl_secret", "HOME=" + t.TempDir()}))
	if code != 1 || !strings.Contains(errb.String(), "no cluster CA") {
		t.Errorf("without a CA: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	code = run([]string{"guest", "list", "--addr", "http://" + addr}, &out, &errb, envFunc(newTestPKI(t).clientEnv()))
	if code != 1 || !strings.Contains(errb.String(), "plain HTTP") {
		t.Errorf("http:// address: exit %d, stderr %q", code, errb.String())
	}
}

// TestTLSCommandErrors: corral tls refuses what it cannot do with a
// message saying what to do, and never replaces a file without --force.
func TestTLSCommandErrors(t *testing.T) {
	empty, dir := t.TempDir(), t.TempDir()
	if _, _, code := runInProcess(t, "tls", "ca", "create", "--dir", dir); code != 0 {
		t.Fatal("tls ca create failed")
	}
	if _, _, code := runInProcess(t, "tls", "cert", "create", "--client", "alice", "--dir", dir); code != 0 {
		t.Fatal("tls cert create --client alice failed")
	}
	kept := map[string][]byte{}
	for _, f := range []string{"ca.pem", "ca-key.pem", "client-alice.pem", "client-alice-key.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		kept[f] = b
	}
	cases := []struct {
		args  []string
		want  string
		usage bool
	}{
		{[]string{"tls", "cert", "create", "--dir", dir}, "give exactly one of --server ID, --node ID or --client NAME", true},
		{[]string{"tls", "cert", "create", "--server", "s1", "--node", "n1", "--dir", dir}, "give exactly one of --server ID, --node ID or --client NAME", true},
		{[]string{"tls", "cert", "create", "--node", "n1", "--additional-dnsname", "n1.example", "--dir", dir}, "for --server certificates only", true},
		{[]string{"tls", "cert", "create", "--server", "s1", "--additional-ipaddress", "ten", "--dir", dir}, `--additional-ipaddress "ten" is not an IP address`, true},
		{[]string{"tls", "cert", "create", "--server", "s1", "--dir", empty}, "make the CA first with corral tls ca create --dir " + empty, false},
		{[]string{"tls", "cert", "create", "--server", "S_1", "--dir", dir}, `server name "S_1" is not valid`, false},
		{[]string{"tls", "cert", "create", "--node", "../n1", "--dir", dir}, `"../n1" is not valid`, false},
		{[]string{"tls", "cert", "create", "--client", "alice", "--dir", dir}, filepath.Join(dir, "client-alice.pem") + " exists: remove it or give --force to replace it", false},
		{[]string{"tls", "ca", "create", "--dir", dir}, filepath.Join(dir, "ca.pem") + " exists: remove it or give --force to replace it", false},
		{[]string{"tls", "ca", "create", "extra", "--dir", dir}, `unknown command "extra"`, true},
	}
	for _, c := range cases {
		stdout, stderr, code := runInProcess(t, c.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 1 || !strings.HasPrefix(first, "corral: ") || !strings.Contains(first, c.want) {
			t.Errorf("%q: exit %d, stderr starts %q; want exit 1 and corral: ...%s", c.args, code, first, c.want)
		}
		if got := strings.Contains(stderr, "Usage:"); got != c.usage {
			t.Errorf("%q: usage printed %v, want %v:\n%s", c.args, got, c.usage, stderr)
		}
		if stdout != "" {
			t.Errorf("%q: printed %q to stdout", c.args, stdout)
		}
	}
	for f, b := range kept {
		if now, err := os.ReadFile(filepath.Join(dir, f)); err != nil || !bytes.Equal(now, b) {
			t.Errorf("%s was changed by a refused command (%v)", f, err)
		}
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("a refused tls cert create wrote %d files into %s", len(ents), empty)
	}
	// --force replaces, and says so.
	if stdout, stderr, code := runInProcess(t, "tls", "cert", "create", "--client", "alice", "--dir", dir, "--force"); code != 0 || !strings.Contains(stdout, "wrote "+filepath.Join(dir, "client-alice.pem")) {
		t.Errorf("tls cert create --force: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "client-alice.pem")); bytes.Equal(now, kept["client-alice.pem"]) {
		t.Error("tls cert create --force left the old certificate")
	}
}

// TestServerNeedsTLS: corral server without its certificates, or with
// someone else's, refuses to start, says how to make the right ones and
// creates nothing.
func TestServerNeedsTLS(t *testing.T) {
	certs := newTestPKI(t)
	client := certs.files(pki.Identity{Role: pki.RoleClient, Name: "operator"})
	other := certs.serverArgs("s2")
	mine := certs.serverArgs("s1")
	cases := []struct {
		flags []string
		want  string
	}{
		{nil, "a server needs TLS: give --tls-ca, --tls-cert and --tls-key (make them with corral tls ca create and corral tls cert create --server ID)"},
		{[]string{"--tls-ca", client.CA}, "give --tls-cert and --tls-key"},
		{[]string{"--tls-ca", client.CA, "--tls-cert", client.Cert, "--tls-key", client.Key}, "names client:operator, but this server is server:s1: use the certificate made with corral tls cert create --server s1"},
		{other, "names server:s2, but this server is server:s1"},
		{[]string{mine[0], mine[1], mine[2], mine[3], mine[4], filepath.Join(t.TempDir(), "nope-key.pem")}, "nope-key.pem"},
	}
	for _, c := range cases {
		data := filepath.Join(t.TempDir(), "s1")
		args := append([]string{"server", "--id", "s1", "--bootstrap", "--data-dir", data}, c.flags...)
		stdout, stderr, code := runInProcess(t, args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 1 || !strings.HasPrefix(first, "corral: ") || !strings.Contains(first, c.want) || strings.Contains(stderr, "Usage:") {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 and corral: ...%s", c.flags, code, stderr, c.want)
		}
		if stdout != "" {
			t.Errorf("%q: printed %q to stdout", c.flags, stdout)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%q: the refused server made its data directory (%v)", c.flags, err)
		}
	}
}

// TestNoServerFailsAtOnce: when every --addr refuses the connection (no
// server listens there), a read and a write fail at once with what to do,
// rather than after the retry time meant for leader elections.
func TestNoServerFailsAtOnce(t *testing.T) {
	p := newTestPKI(t)
	p.token = "unused"
	env := envFunc(append(p.clientEnv(), "CORRAL_ADDR=https://127.0.0.1:1,https://127.0.0.1:2"))
	for _, args := range [][]string{{"guest", "list"}, {"guest", "create", "x", "--driver", "process", "--memory", "16MiB", "--", "/bin/true"}} {
		var out, errb bytes.Buffer
		began := time.Now()
		code := run(args, &out, &errb, env)
		took := time.Since(began)
		if code != 1 || !strings.Contains(errb.String(), "connection refused") || !strings.Contains(errb.String(), "--addr") {
			t.Errorf("%q with no server: exit %d, stderr %q; want exit 1 naming the refusal and --addr", args, code, errb.String())
		}
		if took > time.Second {
			t.Errorf("%q with no server took %v; want a failure at once", args, took)
		}
	}
}

// TestAgentMetricsBearer: with --metrics-token-file the agent's metrics
// answer only a scraper sending that bearer token.
func TestAgentMetricsBearer(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := requireBearer(file, http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("a 5-character token: %v, want it refused", err)
	}
	secret := strings.Repeat("s3cr3t", 4)
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("metrics")) })
	h, err := requireBearer(file, ok)
	if err != nil {
		t.Fatal(err)
	}
	for auth, want := range map[string]int{"": 401, "Bearer wrong": 401, "Bearer " + secret: 200, secret: 401} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Authorization %q: %d, want %d", auth, rec.Code, want)
		}
	}
}
