package coordinator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// A proposal is the body of one raft log entry: the events one command
// produced. Sequential proposals stop at the first event the state refuses
// (a guest's start request is worthless if its definition failed);
// independent ones apply each event on its own (a batch of placements).
//
// A create that the leader placed at once carries its placement last,
// marked optional: if it no longer fits when it commits, the guest stays
// pending for the scheduler and the create still succeeds.
//
// Encoding (version 1): a version byte, a flags byte (bit 0: independent,
// bit 1: the last event is optional),
// the request ID and then each event's JSON encoding, every string and
// event preceded by its length as a uvarint. The framing is binary so the
// events' JSON is neither re-escaped nor scanned twice.
const proposalV1 = 1

func encodeProposal(reqID string, independent, optionalLast bool, evs []events.Event) ([]byte, error) {
	buf := make([]byte, 0, 64+len(reqID)+len(evs)*400)
	buf = append(buf, proposalV1, 0)
	if independent {
		buf[1] |= 1
	}
	if optionalLast {
		buf[1] |= 2
	}
	buf = binary.AppendUvarint(buf, uint64(len(reqID)))
	buf = append(buf, reqID...)
	buf = binary.AppendUvarint(buf, uint64(len(evs)))
	for _, e := range evs {
		b, err := events.Marshal(e)
		if err != nil {
			return nil, err
		}
		buf = binary.AppendUvarint(buf, uint64(len(b)))
		buf = append(buf, b...)
	}
	return buf, nil
}

var errShortProposal = fmt.Errorf("%w: proposal is truncated", events.ErrMalformed)

func readChunk(b []byte) (chunk, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, errShortProposal
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// fsm adapts State to raft. Its Apply wraps the pure State.Apply with the
// effects that follow a commit: the event store and the request table.
// raft calls ApplyBatch, Snapshot and Restore from its FSM goroutine; the
// API reads the state under mu from any goroutine.
type fsm struct {
	mu    sync.RWMutex
	state *cluster.State

	store           *Store
	checkpointEvery uint64
	lastCheckpoint  uint64
	log             *slog.Logger

	// Checkpoints are encoded and written by their own goroutine from a
	// copy of the state, so that a large state never stalls commits.
	checkpoints chan *cluster.State
	cpDone      chan struct{}

	// routes holds what recent events mean to each node, for the
	// leader's publisher; indexes are dense, so a ring keyed by index.
	routesMu sync.Mutex
	routes   [routeRing]routedIndex

	// While the event store fails appends, fault says why, and unstored
	// holds the records it has not taken, oldest first: every later
	// append, and a retry every storeRetry, offers them again, so a store
	// that failed for a while (a full disk) catches up by itself. Past
	// unstoredLimit bytes they are dropped and the fault is final: a
	// restart replays raft into the store. Meanwhile the state still
	// follows raft, and the server refuses writes, reads and streams,
	// refuses raft snapshots (so raft keeps the entries the store lacks)
	// and hands leadership away. storeMu guards unstored and the appends.
	storeMu       sync.Mutex
	unstored      []Record
	unstoredBytes int
	unstoredLimit int
	fault         atomic.Pointer[storeFault]
	faultMu       sync.Mutex
	faultCh       chan struct{} // closed while a fault lasts; replaced when it ends
	closing       chan struct{}
	retries       sync.WaitGroup

	// onApply and onStored, when set (by the server's metrics, before
	// raft starts), are told of each event applied to the state and of
	// how many records the store took; entries up to replayTo, the log's
	// last index when the server started, are its own replay and not
	// told to onApply.
	onApply  func(events.Type)
	onStored func(n int)
	replayTo atomic.Uint64

	// failAppends, when set (by tests only), makes every event-store
	// append fail with it instead of writing.
	failAppends atomic.Pointer[error]
}

// storeRetry is how often a failing event store is offered its unstored
// records again.
const storeRetry = 500 * time.Millisecond

// defaultUnstoredLimit bounds the memory the records a failing store has
// not taken may hold.
const defaultUnstoredLimit = 64 << 20

// storeFault is why and where the event store stopped following the log.
type storeFault struct {
	index uint64 // the first index the store could not take
	err   error  // the latest failure
	final bool   // the unstored records were dropped: only a restart heals
}

// routeRing is how many events back the publisher can find the node
// routes of. Past it (a publisher far behind, or events the store held
// before a restart) a node's update is not sent, and its agent learns of
// the gap from its heartbeat and lists its desired state again.
const routeRing = 1 << 16

type routedIndex struct {
	index  uint64
	typ    events.Type
	routes []cluster.Route
}

// routesAt returns the type and the routes of the event at idx, ok=false
// when the ring no longer (or never) held them.
func (f *fsm) routesAt(idx uint64) (events.Type, []cluster.Route, bool) {
	f.routesMu.Lock()
	defer f.routesMu.Unlock()
	r := f.routes[idx%routeRing]
	if r.index != idx {
		return 0, nil, false
	}
	return r.typ, r.routes, true
}

var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM(store *Store, every uint64, log *slog.Logger) *fsm {
	f := &fsm{state: cluster.NewState(), store: store, checkpointEvery: every, log: log,
		checkpoints: make(chan *cluster.State, 1), cpDone: make(chan struct{})}
	f.unstoredLimit = defaultUnstoredLimit
	f.faultCh = make(chan struct{})
	f.closing = make(chan struct{})
	go f.checkpointLoop()
	return f
}

func (f *fsm) checkpointLoop() {
	defer close(f.cpDone)
	for st := range f.checkpoints {
		b, err := json.Marshal(st)
		if err == nil {
			err = f.store.PutCheckpoint(Record{Index: st.Index, Data: b})
		}
		if err != nil {
			f.log.Error("checkpoint", "index", st.Index, "err", err)
		}
	}
}

// close stops the checkpoint goroutine after it wrote what it was given,
// and the store's retries.
func (f *fsm) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.checkpoints != nil {
		close(f.checkpoints)
		<-f.cpDone
		f.checkpoints = nil
		close(f.closing)
		f.retries.Wait()
	}
}

// read runs f with the state locked for reading. f must not keep s.
func (f *fsm) read(fn func(s *cluster.State)) {
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
	props := make([][]decodedProposal, len(logs))
	batch := make([]bool, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			props[i], batch[i] = decodeEntry(l.Data)
		}
	}
	var committed []committedEvent
	f.mu.Lock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		var outs batchOutcome
		if batch[i] {
			outs = make(batchOutcome, 0, len(props[i]))
		}
		for _, p := range props[i] {
			o, evs := f.applyProposal(p)
			if f.onApply != nil && l.Index > f.replayTo.Load() {
				for _, e := range evs {
					f.onApply(e.typ)
				}
			}
			if batch[i] {
				outs = append(outs, o)
			} else {
				out[i] = o
			}
			committed = append(committed, evs...)
			f.maybeCheckpoint()
		}
		if batch[i] {
			out[i] = outs
		}
	}
	f.mu.Unlock()
	recs := make([]Record, len(committed))
	f.routesMu.Lock()
	for i, c := range committed {
		recs[i] = Record{Index: c.index, Data: withIndex(c.raw, c.index), about: &c.about}
		f.routes[c.index%routeRing] = routedIndex{index: c.index, typ: c.typ, routes: c.routes}
	}
	f.routesMu.Unlock()
	f.storeMu.Lock()
	f.storeLocked(recs)
	f.storeMu.Unlock()
	return out
}

// maybeCheckpoint hands a copy of the state to the checkpoint goroutine
// when it is due. It runs per proposal, not per batch or entry, so that
// checkpoints stay about checkpointEvery apart however raft and the
// leader batch, and never closer than the state has records, so that
// encoding them costs O(1) per event. When the last one is still being
// written, the next proposal tries again, so that `state --at` never
// replays much more than the interval. f.mu is held.
func (f *fsm) maybeCheckpoint() {
	every := max(f.checkpointEvery, uint64(len(f.state.Guests)+len(f.state.Nodes)))
	if idx := f.state.Index; idx-f.lastCheckpoint >= every && f.checkpoints != nil && f.fault.Load() == nil && len(f.checkpoints) == 0 {
		f.checkpoints <- f.state.Clone()
		f.lastCheckpoint = idx
	}
}

func (f *fsm) appendEvents(recs []Record) error {
	if err := f.failAppends.Load(); err != nil {
		return *err
	}
	return f.store.Append(recs)
}

// storeLocked appends what the store has not taken yet and then recs,
// and keeps fault up to date. f.storeMu is held.
func (f *fsm) storeLocked(recs []Record) {
	cur := f.fault.Load()
	if cur != nil && cur.final {
		return
	}
	if len(f.unstored) > 0 {
		recs = append(f.unstored, recs...)
	}
	if len(recs) == 0 {
		return
	}
	err := f.appendEvents(recs)
	if err == nil {
		if f.onStored != nil {
			f.onStored(len(recs))
		}
		f.unstored, f.unstoredBytes = nil, 0
		if cur != nil {
			f.setFault(nil)
			f.log.Info("event store writes work again: it holds the log; serving", "through", recs[len(recs)-1].Index)
		}
		return
	}
	if len(f.unstored) == 0 {
		f.unstored = append([]Record(nil), recs...)
	} else {
		f.unstored = recs
	}
	f.unstoredBytes = 0
	for _, r := range f.unstored {
		f.unstoredBytes += len(r.Data)
	}
	next := &storeFault{index: f.unstored[0].Index, err: err}
	if f.unstoredBytes > f.unstoredLimit {
		next.final = true
		f.unstored, f.unstoredBytes = nil, 0
		f.log.Error("event store write failed for too long: giving up until a restart rebuilds the store from raft", "index", next.index, "err", err)
	} else if cur == nil {
		f.log.Error("event store write failed: this server stops serving and retries", "index", next.index, "err", err)
	}
	f.setFault(next)
	if cur == nil && !next.final {
		f.retries.Add(1)
		go f.retryLoop()
	}
}

// retryLoop offers the unstored records to the store every storeRetry
// until it takes them, the fault is final or the fsm closes.
func (f *fsm) retryLoop() {
	defer f.retries.Done()
	t := time.NewTicker(storeRetry)
	defer t.Stop()
	for {
		select {
		case <-f.closing:
			return
		case <-t.C:
		}
		f.storeMu.Lock()
		f.storeLocked(nil)
		b := f.fault.Load()
		f.storeMu.Unlock()
		if b == nil || b.final {
			return
		}
	}
}

// setFault records the store's fault, nil when it ended, and wakes
// waiters on faulted.
func (f *fsm) setFault(b *storeFault) {
	f.faultMu.Lock()
	defer f.faultMu.Unlock()
	was := f.fault.Swap(b) != nil
	switch {
	case b != nil && !was:
		close(f.faultCh)
	case b == nil && was:
		f.faultCh = make(chan struct{})
	}
}

// broken returns why the event store does not follow the log, nil while
// it does.
func (f *fsm) broken() *storeFault { return f.fault.Load() }

// faulted returns a channel closed while the store has a fault: at once
// if it has one now, else when one begins.
func (f *fsm) faulted() <-chan struct{} {
	f.faultMu.Lock()
	defer f.faultMu.Unlock()
	return f.faultCh
}

// committedEvent is an applied event's index and its encoding as proposed.
type committedEvent struct {
	typ    events.Type
	index  uint64
	raw    []byte
	about  subject // the guest and node raw names
	routes []cluster.Route
}

// unindexed is how every proposed event starts: events.Marshal writes the
// index first, and proposers leave it zero.
var unindexed = []byte(`{"index":0,`)

// withIndex returns the stored encoding of a proposed event: the same bytes
// with its index filled in, so the state machine need not encode it again.
func withIndex(raw []byte, idx uint64) []byte {
	rest := raw[len(unindexed):]
	out := make([]byte, 0, len(raw)+20)
	out = append(out, `{"index":`...)
	out = strconv.AppendUint(out, idx, 10)
	out = append(out, ',')
	return append(out, rest...)
}

type decodedProposal struct {
	reqID        string
	independent  bool
	optionalLast bool
	raw          [][]byte
	events       []events.Event
	errs         []error // per event: why it did not decode
	err          error   // the proposal itself did not decode
}

func decodeProposal(data []byte) decodedProposal {
	if len(data) < 2 || data[0] != proposalV1 {
		return decodedProposal{err: fmt.Errorf("%w: unknown proposal encoding", events.ErrMalformed)}
	}
	d := decodedProposal{independent: data[1]&1 != 0, optionalLast: data[1]&2 != 0}
	req, rest, err := readChunk(data[2:])
	if err != nil {
		return decodedProposal{err: err}
	}
	d.reqID = string(req)
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)) {
		return decodedProposal{err: errShortProposal}
	}
	rest = rest[k:]
	d.raw = make([][]byte, n)
	d.events = make([]events.Event, n)
	d.errs = make([]error, n)
	for i := range d.raw {
		if d.raw[i], rest, err = readChunk(rest); err != nil {
			return decodedProposal{err: err}
		}
		if !bytes.HasPrefix(d.raw[i], unindexed) {
			d.errs[i] = fmt.Errorf("%w: a proposed event must start with %s", events.ErrMalformed, unindexed)
			continue
		}
		d.events[i], d.errs[i] = events.Decode(d.raw[i])
	}
	return d
}

func (f *fsm) applyProposal(p decodedProposal) (*cluster.Outcome, []committedEvent) {
	if p.err != nil {
		return &cluster.Outcome{Err: api.ErrorOf(p.err)}, nil
	}
	if o, ok := f.state.Requests[p.reqID]; ok && p.reqID != "" {
		return o, nil
	}
	o := &cluster.Outcome{}
	var committed []committedEvent
	for i, e := range p.events {
		err := p.errs[i]
		var routes []cluster.Route
		about := subject{Guest: e.Guest, Node: e.Node} // as decoded from raw, before Apply
		if err == nil {
			e, routes, err = f.state.ApplyRouted(e)
		}
		if err != nil {
			if p.optionalLast && i == len(p.events)-1 {
				break // a placement the create tried at once: the scheduler retries it
			}
			if o.Err == nil {
				o.Err = api.ErrorOf(err)
			}
			if p.independent {
				continue
			}
			break
		}
		o.Indexes = append(o.Indexes, e.Index)
		committed = append(committed, committedEvent{typ: e.Type, index: e.Index, raw: p.raw[i], about: about, routes: routes})
	}
	f.state.Record(p.reqID, o)
	return o, committed
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	// The store must hold everything the snapshot covers before raft may
	// compact the log entries it was built from.
	if b := f.broken(); b != nil {
		return nil, fmt.Errorf("corral: no snapshot while the event store is broken (it could not take index %d: %w): raft keeps its log so that a restart rebuilds the store", b.index, b.err)
	}
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
	s, err := cluster.DecodeState(data)
	if err != nil {
		return fmt.Errorf("corral: decode snapshot: %w", err)
	}
	f.storeMu.Lock()
	if _, last := f.store.Bounds(); last < s.Index {
		if err := f.store.Reset(s.Index, data); err != nil {
			f.storeMu.Unlock()
			return err
		}
	}
	f.storeMu.Unlock()
	f.mu.Lock()
	f.state = s
	f.lastCheckpoint = s.Index
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct{ state *cluster.State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.state); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
