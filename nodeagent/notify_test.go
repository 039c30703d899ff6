package nodeagent

import (
	"testing"

	"github.com/corral-dev/corral/events"
)

// TestNotify: duplicates and late events are dropped; a gap, an event for
// this node or for a guest it holds asks for a pass; other nodes' events
// only advance the index.
func TestNotify(t *testing.T) {
	a := &Agent{cfg: Config{NodeID: "n1"}, wake: make(chan struct{}, 1), names: map[string]bool{"web": true}}
	a.lastIndex.Store(10)
	woke := func() bool {
		select {
		case <-a.wake:
			return true
		default:
			return false
		}
	}
	for _, tc := range []struct {
		name string
		e    events.Event
		wake bool
		last uint64
	}{
		{"another node's guest", events.Event{Index: 11, Guest: "db", Node: "n2"}, false, 11},
		{"duplicate of this node's event", events.Event{Index: 11, Node: "n1"}, false, 11},
		{"late", events.Event{Index: 5, Node: "n1"}, false, 11},
		{"this node", events.Event{Index: 12, Node: "n1"}, true, 12},
		{"a guest the agent holds", events.Event{Index: 13, Guest: "web"}, true, 13},
		{"gap", events.Event{Index: 20, Guest: "db", Node: "n2"}, true, 20},
	} {
		a.notify(tc.e)
		if got := woke(); got != tc.wake {
			t.Errorf("%s: woke %v, want %v", tc.name, got, tc.wake)
		}
		if got := a.lastIndex.Load(); got != tc.last {
			t.Errorf("%s: last index %d, want %d", tc.name, got, tc.last)
		}
	}
}
