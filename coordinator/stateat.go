package coordinator

import (
	"context"
	"fmt"
	"strconv"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// StateAt rebuilds the cluster's state as it was right after event index n,
// from the newest checkpoint at or below n plus the events after it.
//
// Decoding the events is about half of the work, and independent of the
// rest, so a goroutine of its own decodes them while this one decodes the
// checkpoint and then applies what it is given.
func (s *Server) StateAt(n uint64) (*cluster.State, error) {
	first, last := s.store.Bounds()
	if n > last && n <= s.AppliedIndex() {
		// Committed, and still on its way to the store.
		if err := s.waitStored(context.Background()); err != nil {
			return nil, err
		}
		first, last = s.store.Bounds()
	}
	if n > last {
		return nil, badRequest("at", strconv.FormatUint(n, 10), fmt.Sprintf("the last committed event is %d", last))
	}
	cp, ok, err := s.store.Checkpoint(n)
	if err != nil {
		return nil, err
	}
	if !ok {
		cp = Record{} // the empty state at index 0
	}
	if cp.Index+1 < first {
		return nil, &api.GoneError{Asked: n, First: first - 1}
	}
	batches := make(chan decodedBatch, 1)
	stop := make(chan struct{})
	defer close(stop)
	go s.decodeEvents(cp.Index, n, batches, stop)
	r, err := cluster.NewReplay(cp.Data)
	if err != nil {
		return nil, fmt.Errorf("corral: decode checkpoint %d: %w", cp.Index, err)
	}
	if r.Index() != cp.Index {
		return nil, fmt.Errorf("corral: checkpoint %d holds the state at %d", cp.Index, r.Index())
	}
	for b := range batches {
		for _, e := range b.events {
			if err := r.Apply(e); err != nil {
				return nil, fmt.Errorf("corral: replay event %d: %w", e.Index, err)
			}
		}
		if b.err != nil {
			return nil, b.err
		}
	}
	return r.State(), nil
}

// decodedBatch is some of the events StateAt replays, in order, and the
// error that ended them, if one did.
type decodedBatch struct {
	events []events.Event
	err    error
}

// stateAtBatch is how many events a decodedBatch holds at most: small
// enough that applying starts soon, large enough that the store's read
// transactions cost little.
const stateAtBatch = 256

// decodeEvents reads the events after index after up to n from the store,
// decodes them and sends them to out in batches, and closes out after the
// last one or after a batch that carries an error. It returns early once
// stop is closed.
func (s *Server) decodeEvents(after, n uint64, out chan<- decodedBatch, stop <-chan struct{}) {
	defer close(out)
	for after < n {
		var b decodedBatch
		recs, err := s.store.Read(after, int(min(n-after, stateAtBatch)))
		if err == nil && len(recs) == 0 {
			err = fmt.Errorf("corral: event store ends at %d before %d", after, n)
		}
		for _, rec := range recs {
			// The store holds committed events, which the leader
			// validated: the lenient decoder, as the state machine uses.
			e, derr := events.Decode(rec.Data)
			if derr != nil {
				err = fmt.Errorf("corral: decode event %d: %w", rec.Index, derr)
				break
			}
			b.events = append(b.events, e)
			after = rec.Index
		}
		b.err = err
		select {
		case out <- b:
		case <-stop:
			return
		}
		if err != nil {
			return
		}
	}
}
