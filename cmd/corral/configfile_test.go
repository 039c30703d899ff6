package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// daemonCommands are the commands that take --config, with their example
// files in deploy/.
func daemonCommands(a *app) map[string]*cobra.Command {
	return map[string]*cobra.Command{
		"../../deploy/corral-server.conf": a.serverCommand(),
		"../../deploy/corral-agent.conf":  a.agentCommand(),
	}
}

// loadInto parses args (with --config) into cmd's flags and runs the
// step that reads the file, as cobra does before the command runs.
func loadInto(t *testing.T, cmd *cobra.Command, args ...string) error {
	t.Helper()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	return cmd.PreRunE(cmd, nil)
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "test.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var commentedKey = regexp.MustCompile(`^#\s*([a-z0-9][a-z0-9-]*)\s*=`)

// TestConfigExamplesMapToFlags reads deploy's example files through the
// real flag parser: every key is a flag and sets it, the file satisfies
// the command's required and exclusive flags, and every flag is in the
// file, set or commented out at a value the flag takes.
func TestConfigExamplesMapToFlags(t *testing.T) {
	a := &app{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	for path, cmd := range daemonCommands(a) {
		if err := loadInto(t, cmd, "--config", path); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := cmd.ValidateRequiredFlags(); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		if err := cmd.ValidateFlagGroups(); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := parseConfig(path, strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		documented := map[string]bool{}
		for _, l := range lines {
			documented[l.key] = true
			f := cmd.Flags().Lookup(l.key)
			if !f.Changed {
				t.Errorf("%s:%d: %s did not set its flag", path, l.n, l.key)
			}
			if !isListFlag(f) && f.Value.Type() != "duration" && f.Value.String() != l.value {
				t.Errorf("%s:%d: flag --%s is %q after reading %q", path, l.n, l.key, f.Value.String(), l.value)
			}
		}
		var uncommented []string
		for line := range strings.Lines(string(b)) {
			if m := commentedKey.FindStringSubmatch(line); m != nil {
				documented[m[1]] = true
				uncommented = append(uncommented, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#")))
			}
		}
		for _, k := range configKeys(cmd.Flags()) {
			if !documented[k] {
				t.Errorf("%s does not document --%s: add a line %q, commented out at its default if it needs none", path, k, k+" = "+cmd.Flags().Lookup(k).DefValue)
			}
		}
		// The commented-out lines must work when uncommented.
		fresh := daemonCommands(a)[path]
		if err := loadInto(t, fresh, "--config", writeConfig(t, strings.Join(uncommented, "\n"))); err != nil {
			t.Errorf("%s: its commented-out lines do not parse once uncommented: %v", path, err)
		}
	}
}

// TestConfigExampleValues checks the values of deploy/corral-agent.conf
// land where the flags put them, repeated keys included.
func TestConfigExampleValues(t *testing.T) {
	a := &app{stdout: io.Discard, stderr: io.Discard}
	cmd := a.agentCommand()
	if err := loadInto(t, cmd, "--config", "../../deploy/corral-agent.conf"); err != nil {
		t.Fatal(err)
	}
	labels, _ := cmd.Flags().GetStringArray("label")
	if !slices.Equal(labels, []string{"rack=a", "disk=ssd"}) {
		t.Errorf("labels %q, want rack=a and disk=ssd from two lines", labels)
	}
	if v, _ := cmd.Flags().GetInt("reserve-cpus"); v != 1 {
		t.Errorf("reserve-cpus %d, want 1", v)
	}
	if v, _ := cmd.Flags().GetString("net-cls-mount"); v != defaultNetClsMount {
		t.Errorf("net-cls-mount %q: a key commented out must leave the default %q", v, defaultNetClsMount)
	}
}

// TestConfigCommandLineWins: a flag on the command line beats the file's
// key, and so does a flag that rules the key out.
func TestConfigCommandLineWins(t *testing.T) {
	a := &app{stdout: io.Discard, stderr: io.Discard}
	conf := writeConfig(t, `id = s9
data-dir = /tmp/from-file
join = 10.0.0.1:4646
http-addr = "10.0.0.9:4646"
nats-routes = nats-route://a:6222
nats-routes = nats-route://b:6222
`)
	cmd := a.serverCommand()
	if err := loadInto(t, cmd, "--config", conf, "--id", "s1", "--bootstrap"); err != nil {
		t.Fatal(err)
	}
	fs := cmd.Flags()
	for name, want := range map[string]string{
		"id":          "s1",                                        // the command line's
		"data-dir":    "/tmp/from-file",                            // the file's
		"http-addr":   "10.0.0.9:4646",                             // quoted
		"join":        "[]",                                        // ruled out by --bootstrap
		"nats-routes": "[nats-route://a:6222,nats-route://b:6222]", // a list key repeated
		"bootstrap":   "true",
	} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
	if err := cmd.ValidateFlagGroups(); err != nil {
		t.Errorf("--bootstrap on the command line and join in the file: %v", err)
	}

	agent := a.agentCommand()
	if err := loadInto(t, agent, "--config", writeConfig(t, "node-id = n1\nlabel = rack=a\nlabel = disk=ssd\n"), "--label", "zone=b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := agent.Flags().GetStringArray("label"); !slices.Equal(got, []string{"zone=b"}) {
		t.Errorf("labels %q: --label on the command line must replace the file's", got)
	}
}

// TestConfigCommandLineExcludesFileKey pins the name of cobra's annotation
// that excludedBy reads.
func TestConfigCommandLineExcludesFileKey(t *testing.T) {
	cmd := (&app{}).serverCommand()
	if got := cmd.Flags().Lookup("join").Annotations[cobraMutuallyExclusive]; len(got) == 0 {
		t.Fatalf("--join carries no %s annotation: cobra renamed it; update cobraMutuallyExclusive", cobraMutuallyExclusive)
	}
}

// TestConfigRefusals: unknown keys, repeats, malformed lines and bad
// values are refused with the file's name and line; an unknown key sets
// nothing.
func TestConfigRefusals(t *testing.T) {
	cases := []struct {
		text string
		want []string
	}{
		{"id = s1\n\n# a comment\nbind = 0.0.0.0\n", []string{"test.conf:4: unknown key \"bind\"", "the keys are the flags' names: bootstrap, checkpoint-every, data-dir,"}},
		{"config = other.conf\n", []string{"test.conf:1: unknown key \"config\""}},
		{"id = s1\nid = s2\n", []string{"test.conf:2: id was already given on line 1; give it once"}},
		{"id s1\n", []string{"test.conf:1: \"id s1\" is not key = value"}},
		{"--id = s1\n", []string{"test.conf:1: \"--id = s1\" is not key = value"}},
		{"id = \"s1\n", []string{"test.conf:1: value \"s1 of id is not a closed double-quoted string"}},
		{"nats-port = four\nretain-age = 3 days\n", []string{"test.conf:1: nats-port = four: invalid argument", "test.conf:2: retain-age = 3 days:"}},
	}
	for _, c := range cases {
		cmd := (&app{}).serverCommand()
		err := loadInto(t, cmd, "--config", writeConfig(t, c.text))
		if err == nil {
			t.Errorf("%q: accepted", c.text)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", c.text, err, w)
			}
		}
		if strings.Contains(c.text, "bind") && cmd.Flags().Lookup("id").Changed {
			t.Errorf("%q: the file with an unknown key still set --id", c.text)
		}
	}
}

// TestConfigThroughTheBinary runs corral server --config as a user does:
// the file satisfies the required flags, and its mistakes are one line
// without the usage text.
func TestConfigThroughTheBinary(t *testing.T) {
	data := filepath.Join(t.TempDir(), "s1")
	conf := writeConfig(t, "id = s1\nbootstrap = true\ndata-dir = "+data+"\n")
	_, stderr, code := runInProcess(t, "server", "--config", conf)
	if code != 1 || !strings.Contains(stderr, "a server needs TLS") {
		t.Errorf("server --config with id and data-dir but no TLS: exit %d, stderr %q; want the TLS error, past the required flags", code, stderr)
	}
	for _, c := range []struct{ args []string }{
		{[]string{"server", "--config", writeConfig(t, "id = s1\ndata-dir = /x\nport = 1\n")}},
		{[]string{"agent", "--config", filepath.Join(t.TempDir(), "missing.conf")}},
	} {
		_, stderr, code := runInProcess(t, c.args...)
		if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "corral: ") || strings.Contains(stderr, "Usage:") {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 and one corral: line", c.args, code, stderr)
		}
	}
}
