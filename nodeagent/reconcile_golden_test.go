package nodeagent

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

var update = flag.Bool("update", false, "rewrite the expected actions of nodeagent/testdata/reconcile/*.txt")

// TestReconcileGolden runs every scenario in testdata/reconcile/. A
// scenario is the input to Reconcile, a line "----", and the actions it
// returns, one Action.String() per line; `go test ./nodeagent -run
// TestReconcileGolden -update` rewrites the actions, to be reviewed as a
// diff. Besides comparing text, every scenario checks that Reconcile is
// pure: the same input gives the same actions and is left as it was.
//
// Input lines ('#' starts a comment; "-" as a name stands for none):
//
//	index N
//	desired NAME gen=N status=S [desired=running|stopped] [driver=D] [paused] [KNOB=VALUE]...
//	observed NAME phase=running|ended|stray [gen=N] [kind=K] [frozen] [start-reported] [exit-reported=INDEX] [dir] [KNOB=VALUE]...
//
// A desired guest's knobs are its Resources (cgroupdriver.Resources.SetKnob
// names: cpu_shares, cpuset_cpus, hard_limit, …); an observed guest's are
// what the agent applied. desired defaults to running and driver to
// process; an observed guest's kind defaults to process except for a stray.
func TestReconcileGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/reconcile/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in testdata/reconcile: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, found := strings.Cut(string(raw), "----\n")
			if !found {
				t.Fatalf("%s has no line ---- between the input and the actions", file)
			}
			d, obs := parseReconcile(t, input)
			got := renderActions(Reconcile(d, obs))

			d2, obs2 := parseReconcile(t, input)
			if again := renderActions(Reconcile(d2, obs2)); again != got {
				t.Errorf("a second call gave other actions:\n%s", again)
			}
			if !reflect.DeepEqual(d, d2) || !reflect.DeepEqual(obs, obs2) {
				t.Errorf("Reconcile modified its input")
			}

			if *update {
				if err := os.WriteFile(file, []byte(input+"----\n"+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("%s: actions differ (run `go test ./nodeagent -run TestReconcileGolden -update` and review the diff)\n--- want\n%s--- got\n%s", file, want, got)
			}
		})
	}
}

func renderActions(acts []Action) string {
	var b strings.Builder
	for _, a := range acts {
		b.WriteString(a.String() + "\n")
	}
	return b.String()
}

// parseReconcile reads a scenario's input; see TestReconcileGolden.
func parseReconcile(t *testing.T, input string) (Desired, []Observed) {
	t.Helper()
	var d Desired
	var obs []Observed
	for i, line := range strings.Split(input, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("line %d %q: %s", i+1, line, fmt.Sprintf(format, args...))
		}
		num := func(v string) uint64 {
			t.Helper()
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				fail("%q is not a whole number", v)
			}
			return n
		}
		if fields[0] == "index" {
			if len(fields) != 2 {
				fail("index takes one number")
			}
			d.Index = num(fields[1])
			continue
		}
		if len(fields) < 2 || strings.Contains(fields[1], "=") {
			fail("%s needs a name first", fields[0])
		}
		name := fields[1]
		if name == "-" {
			name = ""
		}
		switch fields[0] {
		case "desired":
			g := DesiredGuest{Name: name, Desired: DesiredRunning, Definition: events.GuestDefined{Name: name, Driver: events.DriverProcess}}
			for _, f := range fields[2:] {
				k, v, _ := strings.Cut(f, "=")
				switch k {
				case "gen":
					g.Generation = num(v)
				case "status":
					g.Status = v
				case "desired":
					g.Desired = v
				case "driver":
					g.Definition.Driver = v
				case "paused":
					g.Paused = true
				default:
					if err := g.Resources.SetKnob(k, v); err != nil {
						fail("%v", err)
					}
				}
			}
			if g.Generation == 0 || g.Status == "" {
				fail("a desired guest needs gen= and status=")
			}
			d.Guests = append(d.Guests, g)
		case "observed":
			o := Observed{Name: name}
			kind := ""
			for _, f := range fields[2:] {
				k, v, _ := strings.Cut(f, "=")
				switch k {
				case "phase":
					switch v {
					case "running":
						o.Phase = PhaseRunning
					case "ended":
						o.Phase = PhaseEnded
					case "stray":
						o.Phase = PhaseStray
					default:
						fail("phase %q: want running, ended or stray", v)
					}
				case "gen":
					o.Generation = num(v)
				case "kind":
					kind = v
				case "frozen":
					o.Frozen = true
				case "start-reported":
					o.StartReported = true
				case "exit-reported":
					o.ExitReported, o.ExitIndex = true, num(v)
				case "dir":
					o.Dir = true
				default:
					var r cgroupdriver.Resources
					if err := r.SetKnob(k, v); err != nil {
						fail("%v", err)
					}
					if o.Applied == nil {
						o.Applied = map[string]string{}
					}
					o.Applied[k] = r.Knobs()[k] // canonical, as the agent records it
				}
			}
			switch {
			case o.Phase == 0:
				fail("an observed guest needs phase=")
			case kind == "" && o.Phase != PhaseStray:
				kind = string(cgroupdriver.KindProcess)
			}
			o.Kind = cgroupdriver.Kind(kind)
			obs = append(obs, o)
		default:
			fail("unknown line: want index, desired or observed")
		}
	}
	return d, obs
}
