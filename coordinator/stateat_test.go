package coordinator

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// TestStateAtMatchesReplayFromStart requires StateAt(N), which starts at
// the newest checkpoint at or below N, to answer what applying every event
// from index 1 up to N gives: the same view, the same pending guests, at
// N on both sides of each checkpoint and in between.
func TestStateAtMatchesReplayFromStart(t *testing.T) {
	h := buildHistoryLog(t, t.TempDir(), 4000, DefaultStoreConfig())
	s := h.server(t)
	_, last := h.store.Bounds()
	want := map[uint64]bool{1: true, last - 1: true, last: true}
	for n := uint64(0); n <= last; n += 97 {
		want[n] = true
	}
	for n := uint64(1); n <= last; n++ {
		if cp, ok, err := h.store.Checkpoint(n); err != nil {
			t.Fatal(err)
		} else if ok && cp.Index == n {
			want[n-1], want[n], want[n+1] = true, true, true
		}
	}
	ref := cluster.NewState()
	checked := 0
	check := func() {
		n := ref.Index
		if !want[n] {
			return
		}
		got, err := s.StateAt(n)
		if err != nil {
			t.Fatalf("state at %d: %v", n, err)
		}
		if a, b := viewJSON(t, got), viewJSON(t, ref); !bytes.Equal(a, b) {
			t.Fatalf("state at %d differs from the replay from index 1:\n%s\nwant\n%s", n, a, b)
		}
		if a, b := pendingNames(got), pendingNames(ref); !slices.Equal(a, b) {
			t.Fatalf("state at %d: pending %v, want %v", n, a, b)
		}
		checked++
	}
	check()
	for after := uint64(0); after < last; {
		recs, err := h.store.Read(after, 512)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			e, err := events.Unmarshal(rec.Data)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ref.Apply(e); err != nil {
				t.Fatalf("event %d: %v", rec.Index, err)
			}
			after = rec.Index
			check()
		}
	}
	if checked < 40 {
		t.Fatalf("checked %d indexes, want at least 40", checked)
	}
}

func viewJSON(t *testing.T, st *cluster.State) []byte {
	t.Helper()
	b, err := json.Marshal(st.View())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pendingNames(st *cluster.State) []string {
	var out []string
	for _, g := range st.Pending() {
		out = append(out, g.Name)
	}
	return out
}
