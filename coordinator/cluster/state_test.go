package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-dev/corral/events"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestFSMGolden replays each testdata/fsm/*.events file (one event per line,
// indexes left out) through State.Apply and compares, with the .golden file
// beside it, what each event did and the final state.
func TestFSMGolden(t *testing.T) {
	eachFSMScenario(t, func(t *testing.T, in string) {
		got := replayScenario(t, in)
		golden := strings.TrimSuffix(in, ".events") + ".golden"
		if *update {
			if err := os.WriteFile(golden, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test ./coordinator/cluster -run TestFSMGolden -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s:\n%s", in, golden, got)
		}
	})
}

func replayScenario(t *testing.T, path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st := NewState()
	var out bytes.Buffer
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		e, err := events.Unmarshal([]byte(text))
		if err != nil {
			t.Fatalf("%s:%d: %v", path, line, err)
		}
		before := st.Clone()
		committed, err := st.Apply(e)
		if err != nil {
			fmt.Fprintf(&out, "line %d %s: refused: %v\n", line, e.Type, err)
			if !reflect.DeepEqual(before, st) {
				t.Errorf("%s:%d: a refused event changed the state", path, line)
			}
			continue
		}
		fmt.Fprintf(&out, "line %d %s: index %d\n", line, e.Type, committed.Index)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	out.WriteString("\nstate:\n")
	out.Write(b)
	out.WriteByte('\n')
	return out.Bytes()
}

// TestReplayDeterministic applies the same events to two states, one
// cloned midway, and requires identical results.
func TestReplayDeterministic(t *testing.T) {
	files, _ := filepath.Glob("testdata/fsm/*.events")
	for _, in := range files {
		a := replayScenario(t, in)
		b := replayScenario(t, in)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two replays differ", in)
		}
	}
}

// eachFSMScenario runs run on every testdata/fsm/*.events file, as a
// subtest named after it.
func eachFSMScenario(t *testing.T, run func(t *testing.T, in string)) {
	t.Helper()
	files, _ := filepath.Glob("testdata/fsm/*.events")
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata/fsm")
	}
	for _, in := range files {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".events"), func(t *testing.T) { run(t, in) })
	}
}
