package cluster

import (
	"encoding/json"

	"github.com/corral-dev/corral/events"
)

// Replay rebuilds a past state from a checkpoint and the committed events
// after it, for `state --at`. It applies events as Apply does, with the
// same checks and the same result, but does not keep the scheduler's view
// of each node up to date while it goes: that view is most of what an
// event costs to apply, and nothing reads it before the replay ends. State
// builds it once, at the end.
//
// A Replay is not safe for concurrent use.
type Replay struct{ s *State }

// NewReplay starts a replay from a checkpoint encoded as DecodeState takes
// it, or from the empty state at index 0 when checkpoint is nil.
func NewReplay(checkpoint []byte) (*Replay, error) {
	s := NewState()
	if checkpoint != nil {
		if err := json.Unmarshal(checkpoint, s); err != nil {
			return nil, err
		}
	}
	s.reindexGuests()
	s.sched, s.unavail, s.nodeIDs = nil, nil, nil // see refreshNode
	return &Replay{s: s}, nil
}

// Index is the index of the last event replayed (or of the checkpoint).
func (r *Replay) Index() uint64 { return r.s.Index }

// Apply applies the next committed event, as State.Apply does.
func (r *Replay) Apply(e events.Event) error {
	_, err := r.s.Apply(e)
	return err
}

// State builds the scheduler's views and returns the state replayed so
// far. The Replay must not be used after it.
func (r *Replay) State() *State {
	s := r.s
	r.s = nil
	s.reindexNodes()
	return s
}
