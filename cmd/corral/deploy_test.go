package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The systemd units in deploy/ and what each must say.
var units = []struct {
	file, command, config string // the unit, its corral command, the example it installs
	must                  []string
}{
	{"corral-server.service", "server", "corral-server.conf", []string{
		"Restart=always", "Wants=network-online.target", "After=network-online.target", "StateDirectory=corral/server"}},
	{"corral-agent.service", "agent", "corral-agent.conf", []string{
		"Delegate=yes", "KillMode=process", "Restart=always", "Wants=network-online.target", "After=network-online.target", "StateDirectory=corral/agent"}},
}

// unitExec reads a unit's ExecStart= line as arguments.
func unitExec(t *testing.T, text string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindAllStringSubmatch(text, -1)
	if len(m) != 1 {
		t.Fatalf("want one ExecStart= line, found %d", len(m))
	}
	return strings.Fields(m[0][1])
}

// TestUnitFilesVerify runs systemd-analyze verify on deploy's units, with
// ExecStart pointing at the binary under test (verify wants it to exist),
// and checks what the agent's unit must keep: its cgroups delegated, its
// guests alive over a restart.
func TestUnitFilesVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd; deploy/testassets.sh does)")
	}
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("../../deploy", u.file))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		lines := strings.Split(text, "\n")
		for _, want := range u.must {
			found := false
			for _, l := range lines {
				found = found || strings.TrimSpace(l) == want
			}
			if !found {
				t.Errorf("%s lacks %s", u.file, want)
			}
		}
		args := unitExec(t, text)
		if len(args) != 4 || args[0] != "/usr/local/bin/corral" || args[1] != u.command || args[2] != "--config" {
			t.Fatalf("%s: ExecStart=%s, want /usr/local/bin/corral %s --config FILE", u.file, strings.Join(args, " "), u.command)
		}
		p := filepath.Join(dir, u.file)
		if err := os.WriteFile(p, []byte(strings.Replace(text, "ExecStart=/usr/local/bin/corral ", "ExecStart="+corralBin+" ", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, paths...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err = cmd.Run(); err != nil || out.Len() > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out.String())
	}
}

// TestUnitConfigIsTheExample runs each unit's ExecStart arguments through
// the command's flag parser with the example file in place of the
// installed one.
func TestUnitConfigIsTheExample(t *testing.T) {
	a := &app{stdout: io.Discard, stderr: io.Discard}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("../../deploy", u.file))
		if err != nil {
			t.Fatal(err)
		}
		args := unitExec(t, string(b))
		if want := "/etc/corral/" + strings.TrimPrefix(u.config, "corral-"); args[3] != want {
			t.Errorf("%s reads %s, want %s (deploy/%s installed)", u.file, args[3], want, u.config)
		}
		cmd := daemonCommands(a)["../../deploy/"+u.config]
		if err := loadInto(t, cmd, "--config", "../../deploy/"+u.config); err != nil {
			t.Fatalf("%s with %s: %v", u.file, u.config, err)
		}
		if err := cmd.ValidateRequiredFlags(); err != nil {
			t.Errorf("%s with %s: %v", u.file, u.config, err)
		}
		// The state directory systemd makes is the one the file names.
		key := map[string]string{"server": "data-dir", "agent": "state-dir"}[u.command]
		dirOf := map[string]string{"server": "/var/lib/corral/server", "agent": "/var/lib/corral/agent"}[u.command]
		if got := cmd.Flags().Lookup(key).Value.String(); got != dirOf {
			t.Errorf("%s: %s = %s, but %s makes %s", u.config, key, got, u.file, dirOf)
		}
	}
}

// TestCgconfigSample checks deploy/cgconfig.conf's structure, as
// cgconfigparser reads it: balanced blocks, statements ending in ;, and a
// section in the corral-host group for every controller it mounts.
func TestCgconfigSample(t *testing.T) {
	b, err := os.ReadFile("../../deploy/cgconfig.conf")
	if err != nil {
		t.Fatal(err)
	}
	var stack []string
	mounted := map[string]bool{}
	inGroup := map[string]bool{}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasSuffix(line, "{"):
			name := strings.TrimSpace(strings.TrimSuffix(line, "{"))
			if len(stack) == 1 && stack[0] == "group corral-host" {
				inGroup[name] = true
			}
			stack = append(stack, name)
		case line == "}":
			if len(stack) == 0 {
				t.Fatalf("cgconfig.conf:%d: } closes nothing", n+1)
			}
			stack = stack[:len(stack)-1]
		case strings.HasSuffix(line, ";") && strings.Contains(line, "="):
			k, _, _ := strings.Cut(line, "=")
			if len(stack) == 1 && stack[0] == "mount" {
				mounted[strings.TrimSpace(k)] = true
			}
		default:
			t.Errorf("cgconfig.conf:%d: %q is neither a block nor a key = value; statement", n+1, line)
		}
	}
	if len(stack) != 0 {
		t.Fatalf("cgconfig.conf: blocks %q are not closed", stack)
	}
	for _, c := range []string{"cpu", "cpuacct", "memory", "devices", "blkio", "cpuset", "freezer", "net_cls", "net_prio", "pids"} {
		if !mounted[c] {
			t.Errorf("cgconfig.conf mounts no %s hierarchy, which the agent uses", c)
		}
		if !inGroup[c] {
			t.Errorf("cgconfig.conf's corral-host group has no %s section: the agent's partition must exist in every hierarchy", c)
		}
	}
}
