package coordinator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
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

	// The event store is written by its own goroutine (storeLoop), so
	// that the state machine goroutine, and the write acknowledged after
	// it, never wait for a store transaction: ApplyBatch queues the
	// records in unstored, oldest first, and the writer appends all that
	// is queued in one transaction. It writes at once when someone waits
	// for the store (urgent: a read, the leader's publisher, a snapshot)
	// or much is queued, else after storeLag, so that a follower nobody
	// reads from pays for a transaction per storeLag, not per entry. A
	// crash loses at most what was queued: the store is behind raft, and
	// raft replays those entries into it at the restart.
	//
	// While the event store fails appends, fault says why, and unstored
	// keeps what it has not taken: every later batch, and a retry every
	// storeRetry, offers them again, so a store that failed for a while
	// (a full disk) catches up by itself. Past unstoredLimit bytes they
	// are dropped and the fault is final: a restart replays raft into the
	// store. Meanwhile the state still follows raft, and the server
	// refuses writes, reads and streams, refuses raft snapshots (so raft
	// keeps the entries the store lacks) and hands leadership away.
	// storeMu guards unstored, unstoredBytes and queued; writeMu is held
	// by whoever writes the store (the writer, Restore).
	storeMu       sync.Mutex
	unstored      []Record
	unstoredBytes int
	unstoredLimit int
	queued        uint64 // the last index handed to the writer
	writeMu       sync.Mutex
	kick          chan struct{} // records were queued
	urge          chan struct{} // a waiter wants the store now
	urgent        atomic.Int32  // how many wait for the store now
	writerDone    chan struct{}
	fault         atomic.Pointer[storeFault]
	faultMu       sync.Mutex
	faultCh       chan struct{} // closed while a fault lasts; replaced when it ends
	closing       chan struct{}

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
	// holdWrites, when set (by tests only), makes the store writer leave
	// what is queued unwritten, close included, as a process that died
	// before writing it would.
	holdWrites atomic.Bool
}

// storeRetry is how often a failing event store is offered its unstored
// records again.
const storeRetry = 500 * time.Millisecond

// storeLag is how long the store writer waits for more records when
// nobody waits for the store; storeBatch and storeBatchBytes are how much
// it writes at once without waiting.
const (
	storeLag        = 10 * time.Millisecond
	storeBatch      = 1024
	storeBatchBytes = 1 << 20
)

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
	f.kick, f.urge = make(chan struct{}, 1), make(chan struct{}, 1)
	f.writerDone = make(chan struct{})
	go f.checkpointLoop()
	go f.storeLoop()
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
// and the store writer after it offered the store what is queued.
func (f *fsm) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.checkpoints != nil {
		close(f.checkpoints)
		<-f.cpDone
		f.checkpoints = nil
		close(f.closing)
		<-f.writerDone
	}
}

// read runs f with the state locked for reading. f must not keep s.
func (f *fsm) read(fn func(s *cluster.State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies a batch of committed entries and queues their events
// for the store writer. Decoding and encoding happen outside the state
// lock, so readers and the leader's command validation wait only for the
// state changes themselves. A reader may see the state ahead of the
// store; Server.WaitIndex waits for the store.
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
	f.queue(recs)
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

// queue hands recs to the store writer.
func (f *fsm) queue(recs []Record) {
	if len(recs) == 0 {
		return
	}
	f.storeMu.Lock()
	if b := f.fault.Load(); b != nil && b.final {
		f.storeMu.Unlock()
		return
	}
	f.unstored = append(f.unstored, recs...)
	for _, r := range recs {
		f.unstoredBytes += len(r.Data)
	}
	f.queued = recs[len(recs)-1].Index
	f.storeMu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// storeLoop is the event store's writer: it runs from newFSM to close,
// and on close offers the store what is still queued.
func (f *fsm) storeLoop() {
	defer close(f.writerDone)
	lag := time.NewTimer(storeLag)
	lag.Stop()
	var retry <-chan time.Time
	for {
		select {
		case <-f.kick:
		case <-f.urge:
		case <-retry:
		case <-f.closing:
			f.writeStore()
			return
		}
		if !f.storeDue() {
			lag.Reset(storeLag)
			select {
			case <-f.urge:
			case <-lag.C:
			case <-f.closing:
			}
			lag.Stop()
		}
		f.writeStore()
		retry = nil
		if b := f.fault.Load(); b != nil && !b.final {
			retry = time.After(storeRetry)
		}
	}
}

// storeDue tells the writer to write without waiting for more.
func (f *fsm) storeDue() bool {
	if f.urgent.Load() > 0 {
		return true
	}
	f.storeMu.Lock()
	defer f.storeMu.Unlock()
	return len(f.unstored) == 0 || len(f.unstored) >= storeBatch || f.unstoredBytes >= storeBatchBytes || f.fault.Load() != nil
}

// want tells the writer that someone waits for the store, until unwant.
func (f *fsm) want() {
	f.urgent.Add(1)
	select {
	case f.urge <- struct{}{}:
	default:
	}
}

func (f *fsm) unwant() { f.urgent.Add(-1) }

// drainStore waits until the store holds every record queued so far, and
// returns the store's fault instead when it has one.
func (f *fsm) drainStore() error {
	f.storeMu.Lock()
	want := f.queued
	f.storeMu.Unlock()
	f.want()
	defer f.unwant()
	for {
		faulted := f.faulted()
		last, appended := f.store.appended()
		if last >= want {
			return nil
		}
		if b := f.broken(); b != nil {
			return fmt.Errorf("corral: the event store could not take index %d: %w", b.index, b.err)
		}
		select {
		case <-appended:
		case <-faulted:
		case <-f.writerDone:
			return errors.New("corral: the event store writer has stopped")
		}
	}
}

// writeStore appends what is queued in one transaction and keeps fault
// up to date. Records queued meanwhile wait for the next one.
func (f *fsm) writeStore() {
	if f.holdWrites.Load() {
		return
	}
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	f.storeMu.Lock()
	cur := f.fault.Load()
	recs := f.unstored
	f.storeMu.Unlock()
	if len(recs) == 0 || cur != nil && cur.final {
		return
	}
	err := f.appendEvents(recs)
	f.storeMu.Lock()
	defer f.storeMu.Unlock()
	if err == nil {
		if f.onStored != nil {
			f.onStored(len(recs))
		}
		for _, r := range recs {
			f.unstoredBytes -= len(r.Data)
		}
		// queue only appends, so what came meanwhile follows recs.
		if rest := f.unstored[len(recs):]; len(rest) > 0 {
			f.unstored = append([]Record(nil), rest...)
		} else {
			f.unstored, f.unstoredBytes = nil, 0
		}
		if cur != nil {
			f.setFault(nil)
			f.log.Info("event store writes work again: it holds the log; serving", "through", recs[len(recs)-1].Index)
		}
		return
	}
	next := &storeFault{index: recs[0].Index, err: err}
	if f.unstoredBytes > f.unstoredLimit {
		next.final = true
		f.unstored, f.unstoredBytes = nil, 0
		f.log.Error("event store write failed for too long: giving up until a restart rebuilds the store from raft", "index", next.index, "err", err)
	} else if cur == nil {
		f.log.Error("event store write failed: this server stops serving and retries", "index", next.index, "err", err)
	}
	f.setFault(next)
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
	drained := f.drainStore()
	if b := f.broken(); b != nil {
		return nil, fmt.Errorf("corral: no snapshot while the event store is broken (it could not take index %d: %w): raft keeps its log so that a restart rebuilds the store", b.index, b.err)
	}
	if drained != nil {
		// The writer stopped (the server is closing) before the store
		// held what the snapshot would cover.
		return nil, fmt.Errorf("corral: no snapshot: %w", drained)
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
	// What is queued goes first (the store may need no reset then);
	// a broken store keeps it, and Append skips what the reset covers.
	f.drainStore()
	f.writeMu.Lock()
	if _, last := f.store.Bounds(); last < s.Index {
		if err := f.store.Reset(s.Index, data); err != nil {
			f.writeMu.Unlock()
			return err
		}
	}
	f.writeMu.Unlock()
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
