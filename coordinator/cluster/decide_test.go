package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestDecideGolden runs the scripts in testdata/decide/*.txt, one scenario
// per file, in the manner of etcd-io/raft's datadriven files. A script is a
// list of directives; each, except a setup event, is followed by "----" and
// its output up to the next blank line. -update rewrites the outputs in
// place; review them with git diff.
//
//	# a comment
//	{"type":"node.registered",...}      setup: an event applied to the state (index left out)
//	command TYPE [secret=S] [node=N] [actor=A] JSON
//	                                    Decide of the command, as TYPE's JSON; secret and
//	                                    node fill the fields the JSON does not carry
//	apply                               commit the last command's events, one by one
//	state                               the nodes and guests, one line each
//
// Commands run at decideNow as decideActor unless actor= says otherwise.
func TestDecideGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/decide/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata/decide")
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			runDecideScript(t, path)
		})
	}
}

var decideNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const decideActor = "alice"

func runDecideScript(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	st := NewState()
	var (
		out     bytes.Buffer
		last    []events.Event // the last command's events, for apply
		decided bool
	)
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		text := strings.TrimSpace(line)
		pos := fmt.Sprintf("%s:%d", path, i+1)
		switch {
		case text == "" || strings.HasPrefix(text, "#"):
			out.WriteString(line + "\n")
			continue
		case strings.HasPrefix(text, "{"):
			e, err := events.Unmarshal([]byte(text))
			if err != nil {
				t.Fatalf("%s: setup event: %v", pos, err)
			}
			if _, err := st.Apply(e); err != nil {
				t.Fatalf("%s: setup event refused: %v", pos, err)
			}
			out.WriteString(line + "\n")
			continue
		}
		var got []string
		switch verb, rest, _ := strings.Cut(text, " "); verb {
		case "command":
			cmd, actor := parseDecideCommand(t, pos, rest)
			got, last = decideLines(t, pos, st, cmd, actor)
			decided = true
		case "apply":
			if !decided {
				t.Fatalf("%s: apply before any command", pos)
			}
			got = applyLines(t, pos, st, last)
			last, decided = nil, false
		case "state":
			got = stateLines(st)
		default:
			t.Fatalf("%s: unknown directive %q (use command, apply or state)", pos, verb)
		}
		// The expected output: "----", then lines up to a blank line.
		var want []string
		j := i + 1
		if j < len(lines) && lines[j] == "----" {
			for j++; j < len(lines) && lines[j] != ""; j++ {
				want = append(want, lines[j])
			}
		} else {
			j = i + 1
			want = nil
			if !*update {
				t.Errorf("%s: %s has no ---- and expected output (run with -update)", pos, text)
			}
		}
		if !*update && !slices.Equal(got, want) {
			t.Errorf("%s: %s\nwant:\n%s\ngot:\n%s", pos, text, strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
		out.WriteString(line + "\n----\n")
		for _, g := range got {
			out.WriteString(g + "\n")
		}
		if j < len(lines) && lines[j] != "" {
			out.WriteString("\n") // an output ends at a blank line
		}
		i = j - 1
	}
	if *update && !bytes.Equal(out.Bytes(), data) {
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// parseDecideCommand parses "TYPE [key=value ...] JSON".
func parseDecideCommand(t *testing.T, pos, s string) (Command, string) {
	t.Helper()
	name, rest, _ := strings.Cut(s, " ")
	brace := strings.Index(rest, "{")
	if brace < 0 {
		t.Fatalf("%s: command %s has no JSON", pos, name)
	}
	opts := map[string]string{}
	for _, kv := range strings.Fields(rest[:brace]) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("%s: %q is not key=value", pos, kv)
		}
		opts[k] = v
	}
	var cmd Command
	switch name {
	case "CreateGuest":
		cmd = new(CreateGuest)
	case "GuestAction":
		cmd = new(GuestAction)
	case "TuneGuest":
		cmd = new(TuneGuest)
	case "RegisterNode":
		cmd = new(RegisterNode)
	case "SetNodeStatus":
		cmd = new(SetNodeStatus)
	case "SetEligibility":
		cmd = new(SetEligibility)
	case "SetSchedulerConfig":
		cmd = new(SetSchedulerConfig)
	case "AgentReport":
		cmd = new(AgentReport)
	case "PlaceGuests":
		cmd = new(PlaceGuests)
	case "RegisterServer":
		cmd = new(RegisterServer)
	default:
		t.Fatalf("%s: unknown command type %q", pos, name)
	}
	if err := events.DecodeStrict([]byte(rest[brace:]), cmd); err != nil {
		t.Fatalf("%s: %s JSON: %v", pos, name, err)
	}
	actor := decideActor
	for k, v := range opts {
		switch c := cmd.(type) {
		case *RegisterNode:
			if k == "secret" {
				c.Secret = v
				continue
			}
		case *AgentReport:
			switch k {
			case "secret":
				c.Secret = v
				continue
			case "node":
				c.Node = v
				continue
			}
		}
		if k == "actor" {
			actor = v
			continue
		}
		t.Fatalf("%s: %s takes no %s=", pos, name, k)
	}
	return cmd, actor
}

// decideLines runs Decide and describes what it returned. Decide must not
// change the state and must return the same for the same input.
func decideLines(t *testing.T, pos string, st *State, cmd Command, actor string) ([]string, []events.Event) {
	t.Helper()
	before := st.Clone()
	evs, err := cmd.Decide(st, decideNow, actor)
	if !reflect.DeepEqual(before, st) {
		t.Errorf("%s: Decide changed the state", pos)
	}
	again, err2 := cmd.Decide(st, decideNow, actor)
	if !reflect.DeepEqual(evs, again) || fmt.Sprint(err) != fmt.Sprint(err2) {
		t.Errorf("%s: Decide is not deterministic", pos)
	}
	if err != nil {
		if len(evs) != 0 {
			t.Errorf("%s: Decide returned events with its error", pos)
		}
		return []string{"error " + api.ErrorOf(err).Code + ": " + err.Error()}, nil
	}
	if len(evs) == 0 {
		return []string{"no events"}, nil
	}
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, eventLine(t, pos, e))
	}
	return out, evs
}

func eventLine(t *testing.T, pos string, e events.Event) string {
	t.Helper()
	if e.Payload == nil || e.Payload.EventType() != e.Type {
		t.Fatalf("%s: event %s carries payload %T", pos, e.Type, e.Payload)
	}
	p, err := json.Marshal(e.Payload)
	if err != nil {
		t.Fatalf("%s: %v", pos, err)
	}
	f := []string{e.Type.String()}
	if e.Guest != "" {
		f = append(f, "guest="+e.Guest)
	}
	if e.Node != "" {
		f = append(f, "node="+e.Node)
	}
	f = append(f, "actor="+e.Actor)
	if e.Reason != "" {
		f = append(f, "reason="+strconv.Quote(e.Reason))
	}
	// Only what differs from a fresh proposal at decideNow is shown.
	if !e.Time.Equal(decideNow) || e.Time.Location() != time.UTC {
		f = append(f, "time="+e.Time.String())
	}
	if e.Version != events.SchemaVersion {
		f = append(f, "v="+strconv.Itoa(e.Version))
	}
	if e.Index != 0 {
		f = append(f, "index="+strconv.FormatUint(e.Index, 10))
	}
	return strings.Join(append(f, string(p)), " ")
}

// applyLines commits evs one by one, through the encoding the log uses,
// and says what the state machine made of each.
func applyLines(t *testing.T, pos string, st *State, evs []events.Event) []string {
	t.Helper()
	if len(evs) == 0 {
		return []string{"nothing to apply"}
	}
	var out []string
	for _, e := range evs {
		b, err := events.Marshal(e)
		if err != nil {
			t.Fatalf("%s: %s: %v", pos, e.Type, err)
		}
		d, err := events.Unmarshal(b)
		if err != nil {
			t.Fatalf("%s: %s: %v", pos, e.Type, err)
		}
		before := st.Clone()
		c, err := st.Apply(d)
		if err != nil {
			if !reflect.DeepEqual(before, st) {
				t.Errorf("%s: a refused %s changed the state", pos, e.Type)
			}
			out = append(out, fmt.Sprintf("refused %s: %s: %v", e.Type, api.ErrorOf(err).Code, err))
			continue
		}
		out = append(out, fmt.Sprintf("index %d %s", c.Index, c.Type))
	}
	return out
}

// stateLines describes the nodes and guests, one line each, sorted.
func stateLines(st *State) []string {
	out := []string{fmt.Sprintf("index %d", st.Index)}
	for _, id := range slices.Sorted(maps.Keys(st.Nodes)) {
		n := st.Nodes[id]
		mem, cpus := st.Allocated(id)
		l := fmt.Sprintf("node %s status=%s eligibility=%s allocated=%d/%d", id, n.Status, n.Eligibility, mem, cpus)
		if n.SecretHash != "" {
			l += " secret=" + n.SecretHash[:8]
		}
		if on := st.GuestsOn(id); len(on) > 0 {
			l += " guests=" + strings.Join(on, ",")
		}
		out = append(out, l)
	}
	for _, name := range slices.Sorted(maps.Keys(st.Guests)) {
		g := st.Guests[name]
		l := fmt.Sprintf("guest %s status=%s desired=%s", name, g.Status, g.Desired)
		if g.Node != "" {
			l += fmt.Sprintf(" node=%s gen=%d", g.Node, g.Generation)
		}
		if g.CPUs != "" {
			l += " cpus=" + g.CPUs
		}
		if g.Paused {
			l += " paused"
		}
		if g.PID != 0 {
			l += " pid=" + strconv.Itoa(g.PID)
		}
		for _, k := range slices.Sorted(maps.Keys(g.Tuning)) {
			l += " " + k + "=" + g.Tuning[k]
		}
		out = append(out, l)
	}
	if st.Scheduler != (events.SchedulerConfig{}) {
		out = append(out, fmt.Sprintf("scheduler %s cpu_overcommit=%g memory_overcommit=%g",
			st.Scheduler.Algorithm, st.Scheduler.CPUOvercommit, st.Scheduler.MemoryOvercommit))
	}
	return out
}
