package coordinator

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/events"
)

// proposal is the body of one raft log entry: the events one command
// produced. Sequential proposals stop at the first event the state refuses
// (a guest's start request is worthless if its definition failed);
// independent ones apply each event on its own (a batch of placements).
type proposal struct {
	RequestID   string            `json:"req,omitempty"`
	Independent bool              `json:"ind,omitempty"`
	Events      []json.RawMessage `json:"events"`
}

func encodeProposal(reqID string, independent bool, evs []events.Event) ([]byte, error) {
	p := proposal{RequestID: reqID, Independent: independent, Events: make([]json.RawMessage, len(evs))}
	for i, e := range evs {
		b, err := events.Marshal(e)
		if err != nil {
			return nil, err
		}
		p.Events[i] = b
	}
	return json.Marshal(p)
}

// fsm adapts State to raft. Its Apply wraps the pure State.Apply with the
// effects that follow a commit: the event store and the request table.
// raft calls ApplyBatch, Snapshot and Restore from its FSM goroutine; the
// API reads the state under mu from any goroutine.
type fsm struct {
	mu    sync.RWMutex
	state *State

	store           *Store
	checkpointEvery uint64
	lastCheckpoint  uint64
	log             *slog.Logger
}

var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM(store *Store, every uint64, log *slog.Logger) *fsm {
	return &fsm{state: NewState(), store: store, checkpointEvery: every, log: log}
}

// read runs f with the state locked for reading. f must not keep s.
func (f *fsm) read(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies a batch of committed entries and stores their events in
// one event-store transaction. Decoding and encoding happen outside the
// state lock, so readers and the leader's command validation wait only for
// the state changes themselves. A reader may see the state up to one batch
// ahead of the store; Server.WaitIndex waits for the store.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	props := make([]decodedProposal, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			props[i] = decodeProposal(l.Data)
		}
	}
	var committed []events.Event
	var cps []Record
	f.mu.Lock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		o, evs := f.applyProposal(props[i])
		out[i] = o
		committed = append(committed, evs...)
		// Checkpoint per entry, not per batch, so that checkpoints stay
		// about checkpointEvery apart however raft batches.
		if idx := f.state.Index; idx/f.checkpointEvery > f.lastCheckpoint/f.checkpointEvery {
			b, err := json.Marshal(f.state)
			if err != nil {
				panic(fmt.Sprintf("corral: encode checkpoint: %v", err))
			}
			cps = append(cps, Record{Index: idx, Data: b})
			f.lastCheckpoint = idx
		}
	}
	f.mu.Unlock()
	recs := make([]Record, len(committed))
	for i, e := range committed {
		b, err := events.Marshal(e)
		if err != nil { // cannot happen: it decoded a moment ago
			panic(fmt.Sprintf("corral: encode committed event %d: %v", e.Index, err))
		}
		recs[i] = Record{Index: e.Index, Data: b}
	}
	if err := f.store.Append(recs, cps); err != nil {
		// The raft log still holds these events; a restart replays them.
		f.log.Error("event store append failed", "err", err)
	}
	return out
}

type decodedProposal struct {
	reqID       string
	independent bool
	events      []events.Event
	errs        []error // per event: why it did not decode
	err         error   // the proposal itself did not decode
}

func decodeProposal(data []byte) decodedProposal {
	var p proposal
	if err := json.Unmarshal(data, &p); err != nil {
		return decodedProposal{err: fmt.Errorf("%w: proposal: %v", events.ErrMalformed, err)}
	}
	d := decodedProposal{reqID: p.RequestID, independent: p.Independent,
		events: make([]events.Event, len(p.Events)), errs: make([]error, len(p.Events))}
	for i, raw := range p.Events {
		d.events[i], d.errs[i] = events.Unmarshal(raw)
	}
	return d
}

func (f *fsm) applyProposal(p decodedProposal) (*Outcome, []events.Event) {
	if p.err != nil {
		return &Outcome{Err: toAPIError(p.err)}, nil
	}
	if o, ok := f.state.Requests[p.reqID]; ok && p.reqID != "" {
		return o, nil
	}
	o := &Outcome{}
	var committed []events.Event
	for i, e := range p.events {
		err := p.errs[i]
		if err == nil {
			e, err = f.state.Apply(e)
		}
		if err != nil {
			if o.Err == nil {
				o.Err = toAPIError(err)
			}
			if p.independent {
				continue
			}
			break
		}
		o.Indexes = append(o.Indexes, e.Index)
		committed = append(committed, e)
	}
	f.state.Record(p.reqID, o)
	return o, committed
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	// The store must hold everything the snapshot covers before raft may
	// compact the log entries it was built from.
	if err := f.store.Sync(); err != nil {
		return nil, err
	}
	f.mu.RLock()
	s := f.state.Clone()
	f.mu.RUnlock()
	return &fsmSnapshot{state: s}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	s := NewState()
	if err := json.Unmarshal(data, s); err != nil {
		return fmt.Errorf("corral: decode snapshot: %w", err)
	}
	s.reindex()
	if _, last := f.store.Bounds(); last < s.Index {
		if err := f.store.Reset(s.Index, data); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.state = s
	f.lastCheckpoint = s.Index
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct{ state *State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.state); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
