package cluster

import (
	"bufio"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-dev/corral/events"
)

// TestReplayMatchesApply replays each testdata/fsm scenario from a
// checkpoint taken after every accepted event and requires the result,
// derived indexes and scheduler views included, to be the state that
// decoding the same checkpoint and applying the same events with Apply
// gives (what `state --at` did before Replay), and every refused event to
// be refused by both.
func TestReplayMatchesApply(t *testing.T) {
	eachFSMScenario(t, func(t *testing.T, in string) {
		evs := scenarioEvents(t, in)
		live := NewState()
		checkpoints := [][]byte{nil}
		from := []int{0} // the event after each checkpoint
		for i, e := range evs {
			if _, err := live.Apply(e); err != nil {
				continue
			}
			b, err := json.Marshal(live)
			if err != nil {
				t.Fatal(err)
			}
			checkpoints = append(checkpoints, b)
			from = append(from, i+1)
		}
		for k, cp := range checkpoints {
			want := NewState()
			if cp != nil {
				var err error
				if want, err = DecodeState(cp); err != nil {
					t.Fatal(err)
				}
			}
			r, err := NewReplay(cp)
			if err != nil {
				t.Fatal(err)
			}
			if r.Index() != want.Index {
				t.Fatalf("checkpoint %d: replay starts at %d, want %d", k, r.Index(), want.Index)
			}
			for i, e := range evs[from[k]:] {
				_, werr := want.Apply(e)
				if gerr := r.Apply(e); (gerr == nil) != (werr == nil) {
					t.Fatalf("checkpoint %d, event %d (%s): replay says %v, Apply %v", k, from[k]+i+1, e.Type, gerr, werr)
				}
			}
			if got := r.State(); !reflect.DeepEqual(got, want) {
				t.Errorf("checkpoint %d: the replayed state differs from the applied one:\n%#v\nwant\n%#v", k, got, want)
			}
		}
	})
}

func scenarioEvents(t *testing.T, path string) []events.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []events.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		e, err := events.Unmarshal([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, e)
	}
	return out
}
