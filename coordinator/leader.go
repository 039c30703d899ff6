package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// applyTimeout bounds how long a command waits to be enqueued in raft.
const applyTimeout = 10 * time.Second

// Submit validates cmd against the current state and commits the events it
// produces. Only the leader submits; others get ErrNotLeader and forward.
// A request ID seen before returns that request's outcome and commits
// nothing new.
func (s *Server) Submit(ctx context.Context, reqID, actor string, cmd cluster.Command) (*cluster.Outcome, error) {
	if err := s.storeBroken(); err != nil {
		return nil, err
	}
	if s.raft.State() != raft.Leader {
		return nil, api.ErrNotLeader
	}
	// Refused before raft: a leader whose log write fails steps down, and
	// a full disk would make it do so over and over.
	if err := s.DiskRoom(); err != nil {
		return nil, err
	}
	var (
		evs   []events.Event
		prior *cluster.Outcome
		err   error
	)
	now := s.clock.Now()
	s.fsm.read(func(st *cluster.State) {
		if o, ok := st.Requests[reqID]; ok && reqID != "" {
			prior = o
			return
		}
		evs, err = cmd.Decide(st, now, actor)
	})
	if prior != nil {
		return prior, nil
	}
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return &cluster.Outcome{}, nil
	}
	independent, optionalLast := false, false
	switch cmd.(type) {
	case *cluster.PlaceGuests, *cluster.AgentReport, *cluster.EndMigrations:
		independent = true
	case *cluster.CreateGuest:
		optionalLast = evs[len(evs)-1].Type == events.TypeGuestPlaced
	}
	data, err := encodeProposal(reqID, independent, optionalLast, evs)
	if err != nil {
		return nil, err
	}
	proposed := time.Now()
	var res proposalResult
	select {
	case res = <-s.proposer.propose(data):
		err = res.err
	case <-ctx.Done():
		// The command may still commit; a retry with the same request ID
		// finds out.
		return nil, fmt.Errorf("%w: %v; retry with the same request ID to learn the outcome", api.ErrUnavailable, ctx.Err())
	}
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return nil, fmt.Errorf("%w: leadership changed while committing; retry with the same request ID", api.ErrUnavailable)
		}
		return nil, fmt.Errorf("%w: commit: %v", api.ErrUnavailable, err)
	}
	s.metrics.commit.Observe(time.Since(proposed).Seconds())
	return res.outcome, nil
}

// leaderLoop runs the leader's duties while this server leads.
func (s *Server) leaderLoop(ctx context.Context) {
	stop := func() {}
	defer func() { stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case lead := <-s.leaderNotify:
			stop()
			stop = func() {}
			s.leading.Store(lead)
			if !lead {
				s.leaderReady.Store(false)
			}
			if lead {
				lctx, cancel := context.WithCancel(ctx)
				stop = cancel
				s.goLoop(func() { s.leaderDuties(lctx) })
			}
		}
	}
}

func (s *Server) leaderDuties(ctx context.Context) {
	s.log.Info("became leader")
	s.goLoop(func() { s.handOffWhenBroken(ctx) })
	if !s.waitHealed(ctx) {
		return // handOffWhenBroken gave leadership away
	}
	// Apply everything earlier leaders committed before deciding anything.
	if err := s.raft.Barrier(applyTimeout).Error(); err != nil {
		s.log.Warn("barrier failed", "err", err)
		return
	}
	// From here the state holds every write any leader acknowledged:
	// consistent reads may be served from it.
	s.leaderReady.Store(true)
	defer s.leaderReady.Store(false)
	s.goLoop(func() { s.heartbeats(ctx) })
	s.goLoop(func() { s.membershipLoop(ctx) })
	self := &cluster.RegisterServer{ServerRegistered: events.ServerRegistered{ID: s.cfg.ID, RaftAddr: s.RaftAddr(), HTTPAddr: s.HTTPAddr()}}
	if _, err := s.Submit(ctx, "", "server:"+s.cfg.ID, self); err != nil {
		s.log.Warn("register self", "err", err)
	}
	for _, n := range s.cfg.Nodes {
		var known bool
		s.fsm.read(func(st *cluster.State) { _, known = st.Nodes[n.ID] })
		if !known {
			if _, err := s.Submit(ctx, "", "server:"+s.cfg.ID, &cluster.RegisterNode{NodeRegistered: n}); err != nil {
				s.log.Warn("register node", "node", n.ID, "err", err)
			}
		}
	}
	if alg := s.cfg.SchedulerAlgorithm; alg != "" {
		var unset bool
		s.fsm.read(func(st *cluster.State) { unset = st.Scheduler.Algorithm == "" })
		if unset {
			cmd := &cluster.SetSchedulerConfig{SchedulerConfig: events.SchedulerConfig{Algorithm: alg}}
			if _, err := s.Submit(ctx, "", "server:"+s.cfg.ID, cmd); err != nil {
				s.log.Warn("scheduler config", "err", err)
			}
		}
	}
	// A pass costs time in proportion to the cluster, so under load passes
	// are spaced apart (see schedulePace) and each takes every guest that
	// arrived meanwhile: small batches instead of one pass per event.
	var mark schedMark
	for {
		_, seen := s.store.Bounds()
		began := time.Now()
		s.schedule(ctx, &mark)
		took := time.Since(began) // the pass alone, not the idle wait after it
		if err := s.awaitStore(ctx, seen, false); err != nil && (ctx.Err() != nil || !s.waitHealed(ctx)) {
			return
		}
		if wait := max(schedulePace, 2*took) - time.Since(began); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// storeBroken returns, while this server's event store fails writes, the
// error every write, read and stream on this server answers with; nil
// while the store follows the log.
func (s *Server) storeBroken() error {
	b := s.fsm.broken()
	if b == nil {
		return nil
	}
	did := "it has stepped down; the other servers serve"
	if s.raft.State() == raft.Leader {
		did = "it is handing leadership to another server (a lone server cannot, and serves nothing meanwhile)"
	}
	heal := "it retries every " + storeRetry.String() + " and serves again once the store takes the events (free disk space if it is full), or restart it to rebuild the store from raft"
	if b.final {
		heal = "restart it to rebuild the store from raft"
	}
	return fmt.Errorf("%w: server %s cannot write its event store (index %d: %v): %s; %s",
		api.ErrUnavailable, s.cfg.ID, b.index, b.err, did, heal)
}

// handOffWhenBroken transfers leadership to another server whenever this
// server's event store fails writes, retrying while it leads and the
// fault lasts: a leader that cannot store events can neither acknowledge
// writes nor publish them.
func (s *Server) handOffWhenBroken(ctx context.Context) {
	logged := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.fsm.faulted():
		}
		err := s.raft.LeadershipTransfer().Error()
		if err == nil {
			s.log.Warn("handed leadership to another server: the event store fails writes")
			return
		}
		if !logged {
			s.log.Error("cannot hand leadership away while the event store fails writes; retrying", "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// waitHealed waits until this server's event store follows the log
// again, false when ctx ends first.
func (s *Server) waitHealed(ctx context.Context) bool {
	for s.fsm.broken() != nil {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(storeRetry):
		}
	}
	return true
}

// reportSkipped logs each node a scheduling pass had to leave out, once
// per distinct reason, so a bad record is said without flooding the log.
func (s *Server) reportSkipped(skipped []error) {
	for _, err := range skipped {
		msg := err.Error()
		if _, seen := s.skippedNodes.LoadOrStore(msg, true); !seen {
			s.log.Warn("scheduler: node left out of placement until it registers again", "err", msg)
		}
	}
}

// schedMark is what the last scheduling pass saw.
type schedMark struct {
	version uint64
	at      time.Time
}

// resweep is how often a pass runs even when nothing changed.
const resweep = time.Second

// schedulePace is the least time between the starts of two scheduling
// passes. Beyond it, a pass waits as long as it took before the next one,
// so that scheduling never takes more than half of the leader's time: on a
// small cluster passes follow events at once, on a large one under load
// they batch what arrived meanwhile.
const schedulePace = 2 * time.Millisecond

// schedule runs one scheduling pass: it places pending guests, moves the
// guests of lost nodes and of draining nodes, and ends finished drains. The
// plan is computed from a consistent view of the state; the state machine
// re-checks every placement when it commits.
//
// A pass is skipped when nothing that placement depends on changed since
// the last one (usage reports, tunings and the like do not) and the last
// one is less than resweep old: a drain's deadline is the only thing that
// changes with time alone.
func (s *Server) schedule(ctx context.Context, last *schedMark) {
	now := s.clock.Now()
	var (
		plan    scheduler.Plan
		drained []string
		stalled []string // migrations waiting on a lost node
		err     error
	)
	var in *cluster.PlanInput
	skip := false
	s.fsm.read(func(st *cluster.State) {
		if st.SchedVersion() == last.version && now.Sub(last.at) < resweep {
			skip = true
			return
		}
		*last = schedMark{version: st.SchedVersion(), at: now}
		if len(st.Nodes) == 0 {
			return
		}
		w := st.Work(now)
		drained, stalled = w.Drained, w.Stalled
		if len(w.Guests) > 0 && len(st.Nodes) > 0 {
			x := st.PlanInput(w.Guests, w.Moving)
			in = &x
		}
	})
	if skip {
		return
	}
	defer func(began time.Time) { s.metrics.passes.Observe(time.Since(began).Seconds()) }(time.Now())
	if in != nil {
		var skipped []error
		plan, skipped, err = in.Schedule(now)
		s.reportSkipped(skipped)
	}
	if err != nil {
		s.log.Error("scheduler", "err", err)
		return
	}
	actor := "scheduler:" + s.cfg.ID
	for _, f := range plan.Failures {
		s.log.Debug("guest stays pending", "guest", f.Guest, "why", f.Headline())
	}
	if len(plan.Placements) > 0 {
		cmd := &cluster.PlaceGuests{Placements: make([]cluster.Placement, len(plan.Placements))}
		for i, p := range plan.Placements {
			cmd.Placements[i] = cluster.Placement{Guest: p.Guest.Name, Node: p.Node, CPUs: p.CPUs.String()}
		}
		o, err := s.Submit(ctx, "", actor, cmd)
		if err != nil {
			s.log.Warn("placement", "err", err)
		} else if o.Err != nil {
			s.log.Info("placement refused at commit", "err", o.Err.Message)
		}
	}
	if len(stalled) > 0 {
		if _, err := s.Submit(ctx, "", actor, &cluster.EndMigrations{Guests: stalled}); err != nil {
			s.log.Warn("ending migrations held up by a lost node", "guests", stalled, "err", err)
		}
	}
	for _, id := range drained {
		cmd := &cluster.SetEligibility{SetEligibility: api.SetEligibility{ID: id, Eligibility: events.Ineligible, Reason: "drain complete"}}
		if _, err := s.Submit(ctx, "", actor, cmd); err != nil {
			s.log.Warn("end drain", "node", id, "err", err)
		}
	}
}

// busWatcher is the part of *bus.Conn a server uses to learn what any
// server published. A Bus without it makes a new leader publish from
// where its own store was.
type busWatcher interface {
	Watch(ctx context.Context, subject string, ready func(), fn func(bus.Msg)) error
}

// publishLoop sends every committed event to the bus while this server
// leads: on its type's subject for auditors, and to each node it concerns
// on the node's subject, with the guest as the node must now run it.
//
// Every server watches the leader's published marks and remembers the
// highest index it saw published, by whichever server. A new leader publishes from
// there, not from where its own store is, so the events committed around
// a leader change still reach subscribers (some twice: consumers drop by
// index). The mark file (publishedFile) carries that index across a
// restart. What is no longer retained is announced on bus.EventGapSubject. A node's
// update whose route the fsm no longer holds is skipped: its agent learns
// of the gap by the update's Prev or its heartbeat and lists its desired
// state again.
func (s *Server) publishLoop(ctx context.Context) {
	_, cursor := s.store.Bounds()
	// seen is the highest index this server saw published or published
	// itself; observed the highest that came back from the bus, which is
	// what the mark file keeps across restarts.
	var seen, observed atomic.Uint64
	seen.Store(cursor)
	w, watching := s.bus.(busWatcher)
	var mark *publishedMark
	if watching {
		mark = s.loadPublished(cursor)
		seen.Store(mark.saved)
		observed.Store(mark.saved)
		defer mark.save(s, &observed, true)
		s.goLoop(func() { s.watchPublished(ctx, w, &seen, &observed, mark) })
	}
	wake := make(chan raft.Observation, 1)
	obs := raft.NewObserver(wake, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(obs)
	defer s.raft.DeregisterObserver(obs)
	leading := false
	for {
		lead := s.raft.State() == raft.Leader
		if lead && !leading && watching {
			from := seen.Load()
			if from != cursor {
				s.log.Info("publishing from where the last leader stopped", "from", from+1, "store_at", cursor)
			}
			cursor = from
		}
		leading = lead
		if !lead {
			// A follower publishes nothing: it follows its store's end
			// without reading the events back.
			if _, last := s.store.Bounds(); last > cursor {
				cursor = last
				continue
			}
			if err := s.waitPublishable(ctx, cursor, wake, false); err != nil && (ctx.Err() != nil || !s.waitHealed(ctx)) {
				return
			}
			continue
		}
		recs, err := s.store.Read(cursor, 1024)
		var gone *api.GoneError
		if errors.As(err, &gone) {
			if lead {
				s.publishGap(cursor+1, gone.First-1, &seen)
			}
			cursor = gone.First - 1
			continue
		}
		if err != nil {
			s.log.Error("publish: read event store; retrying", "after", cursor, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(storeRetry):
			}
			continue
		}
		if len(recs) == 0 {
			if err := s.waitPublishable(ctx, cursor, wake, true); err != nil && (ctx.Err() != nil || !s.waitHealed(ctx)) {
				return
			}
			continue
		}
		for _, r := range recs {
			cursor = r.Index
			if lead {
				s.publish(r)
				raiseTo(&seen, r.Index)
			}
		}
		if lead && watching {
			// Tell every server how far this leader got; NATS keeps one
			// publisher's order, so the mark follows the events.
			if err := s.bus.Publish(bus.PublishedSubject, cursor, 0, nil); err != nil {
				s.log.Warn("publish the published mark", "index", cursor, "err", err)
			}
		}
	}
}

// waitPublishable blocks until the store holds an index past after or
// this server's leadership changes (wake), or returns an error when ctx
// ends or the store fails writes.
//
// It runs once per batch the store takes, on every server, so it waits
// in one select, as waitStore does.
//
// The leader's publisher is urgent: the store writer writes at once while
// it waits, so that events reach the bus without the writer's lag.
func (s *Server) waitPublishable(ctx context.Context, after uint64, wake <-chan raft.Observation, urgent bool) error {
	faulted := s.fsm.faulted()
	if urgent {
		s.fsm.want()
		defer s.fsm.unwant()
	}
	for s.storeBroken() == nil {
		last, appended := s.store.appended()
		if last > after {
			break
		}
		select {
		case <-appended:
			continue
		case <-wake:
		case <-faulted:
		case <-ctx.Done():
		}
		break
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return s.storeBroken()
}

// watchPublished raises seen and observed to every mark a leader
// published on bus.PublishedSubject until ctx ends. Following the marks,
// one small message per published batch, costs far less than following
// every event.
//
// It saves the mark file as the marks come in (at most every
// publishedSave), off the publisher's way: saved before a batch was
// published, the file's write and rename held up the first event after a
// pause by about half a millisecond.
func (s *Server) watchPublished(ctx context.Context, w busWatcher, seen, observed *atomic.Uint64, mark *publishedMark) {
	err := w.Watch(ctx, bus.PublishedSubject, nil, func(m bus.Msg) {
		raiseTo(seen, m.Index)
		raiseTo(observed, m.Index)
		mark.save(s, observed, false)
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("watch published events: a new leader will publish from its own store", "err", err)
	}
}

// publishedFile, in the data directory, holds the highest index this
// server saw come back from the bus, so that after a restart (of every
// server, or of a lone one) a new leader republishes what may not have got
// out instead of assuming it did. It is replaced atomically, without
// fsync, at most every publishedSave: it may lag, which costs duplicates
// only.
const publishedFile = "published"

const publishedSave = 200 * time.Millisecond

type publishedMark struct {
	mu     sync.Mutex // save runs on the watcher's goroutine, a timer's, and once more as the loop ends
	path   string
	saved  uint64
	at     time.Time
	failed bool        // the last save failed and was logged
	later  *time.Timer // a save put off by publishedSave
	closed bool        // the final save is done
}

// loadPublished reads the mark file. Without one (a new data dir, or one
// from before the file existed) what the store holds counts as
// published, as a restarted server cannot tell.
func (s *Server) loadPublished(storeLast uint64) *publishedMark {
	m := &publishedMark{path: filepath.Join(s.cfg.DataDir, publishedFile), saved: storeLast}
	b, err := os.ReadFile(m.path)
	if errors.Is(err, fs.ErrNotExist) {
		return m
	}
	n, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || perr != nil {
		s.log.Warn("publish: unreadable mark file; counting what the store holds as published", "path", m.path, "err", errors.Join(err, perr))
		return m
	}
	m.saved = n
	return m
}

// save writes observed to the mark file when it rose and the last write
// is publishedSave old, or now when final; a save put off meanwhile comes
// when publishedSave has passed, so the file lags the marks by no more.
// After the final save there is none.
func (m *publishedMark) save(s *Server, observed *atomic.Uint64, final bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if final {
		m.closed = true
		if m.later != nil {
			m.later.Stop()
			m.later = nil
		}
	}
	v := observed.Load()
	now := time.Now()
	if v <= m.saved {
		return
	}
	if since := now.Sub(m.at); !final && since < publishedSave {
		if m.later == nil {
			m.later = time.AfterFunc(publishedSave-since, func() {
				m.mu.Lock()
				m.later = nil
				m.mu.Unlock()
				m.save(s, observed, false)
			})
		}
		return
	}
	tmp := m.path + ".tmp"
	err := os.WriteFile(tmp, []byte(strconv.FormatUint(v, 10)+"\n"), 0o600)
	if err == nil {
		err = os.Rename(tmp, m.path)
	}
	m.at = now
	if err != nil {
		if !m.failed {
			s.log.Warn("publish: cannot save the mark file; after a restart this server may publish some events again", "path", m.path, "err", err)
			m.failed = true
		}
		return
	}
	m.saved, m.failed = v, false
}

func raiseTo(v *atomic.Uint64, idx uint64) {
	for {
		cur := v.Load()
		if idx <= cur || v.CompareAndSwap(cur, idx) {
			return
		}
	}
}

// publishGap announces that events from..to will never be published.
func (s *Server) publishGap(from, to uint64, seen *atomic.Uint64) {
	b, _ := json.Marshal(api.PublishGap{From: from, To: to,
		Reason: fmt.Sprintf("events %d to %d were committed but not published before a leader change, and the event store of %s no longer holds them; read the state from the API", from, to, s.cfg.ID)})
	s.log.Warn("publish: announcing a gap", "from", from, "to", to)
	if err := s.bus.Publish(bus.EventGapSubject, to, from-1, b); err != nil {
		s.log.Warn("publish gap", "from", from, "to", to, "err", err)
		return
	}
	raiseTo(seen, to)
}

func (s *Server) publish(r Record) {
	typ, routes, ok := s.fsm.routesAt(r.Index)
	if !ok {
		// Not applied since this server started: the type is in the record.
		var e struct {
			Type events.Type `json:"type"`
		}
		if err := json.Unmarshal(r.Data, &e); err != nil {
			s.log.Error("publish: decode", "index", r.Index, "err", err)
			return
		}
		typ = e.Type
	}
	if err := s.bus.Publish(bus.EventSubject(typ), r.Index, 0, r.Data); err != nil {
		s.log.Warn("publish", "index", r.Index, "err", err)
	}
	if !ok {
		return
	}
	for _, rt := range routes {
		b, err := encodeNodeUpdate(r, rt)
		if err == nil {
			err = s.bus.Publish(bus.NodeSubject(rt.Node), r.Index, rt.Prev, b)
		}
		if err != nil {
			s.log.Warn("publish to node", "index", r.Index, "node", rt.Node, "err", err)
		}
	}
}

// encodeNodeUpdate writes the api.NodeUpdate of a route as JSON. It is
// built by hand around the stored event, which is valid JSON already:
// encoding/json would scan and compact it again for every node.
func encodeNodeUpdate(r Record, rt cluster.Route) ([]byte, error) {
	b := make([]byte, 0, len(r.Data)+512)
	b = append(b, `{"index":`...)
	b = strconv.AppendUint(b, r.Index, 10)
	b = append(b, `,"prev":`...)
	b = strconv.AppendUint(b, rt.Prev, 10)
	b = append(b, `,"event":`...)
	b = append(b, r.Data...)
	if rt.Guest != nil {
		g, err := json.Marshal(rt.Guest)
		if err != nil {
			return nil, err
		}
		b = append(b, `,"guest":`...)
		b = append(b, g...)
	}
	if rt.Removed != "" {
		n, _ := json.Marshal(rt.Removed)
		b = append(b, `,"removed":`...)
		b = append(b, n...)
	}
	if rt.Partition != nil {
		p, err := json.Marshal(rt.Partition)
		if err != nil {
			return nil, err
		}
		b = append(b, `,"partition":`...)
		b = append(b, p...)
	}
	if rt.PartitionRemoved != "" {
		n, _ := json.Marshal(rt.PartitionRemoved)
		b = append(b, `,"partition_removed":`...)
		b = append(b, n...)
	}
	return append(b, '}'), nil
}

// retentionTick is how often retention runs.
const retentionTick = 30 * time.Second

func (s *Server) retentionLoop(ctx context.Context) {
	t := time.NewTicker(retentionTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n, err := s.store.Trim(now); err != nil {
				s.log.Error("retention", "err", err)
			} else if n > 0 {
				s.metrics.trimmed.Add(float64(n))
				s.log.Info("retention trimmed events", "count", n)
			}
		}
	}
}

// WaitIndex blocks until this server's event store holds index idx, so that
// both its state and its event stream include it, or ctx ends.
func (s *Server) WaitIndex(ctx context.Context, idx uint64) error {
	if idx == 0 {
		return nil
	}
	return s.waitStore(ctx, idx-1)
}

// waitStore blocks until the event store holds an index greater than
// after, or ctx ends, or the store fails a write: then it returns the
// reason at once instead of letting the caller wait for what may never
// come. The store writer writes at once while someone waits here.
func (s *Server) waitStore(ctx context.Context, after uint64) error {
	return s.awaitStore(ctx, after, true)
}

// awaitStore is waitStore; when urgent is false the store writer is not
// hurried, and the wait may last up to storeLag longer.
//
// The scheduling loop calls it after every batch the store takes, so it
// waits in one select: a goroutine and a context per call woke the
// scheduler up to three times per write, just as the write's reply
// needed the CPU.
func (s *Server) awaitStore(ctx context.Context, after uint64, urgent bool) error {
	wanted := false
	defer func() {
		if wanted {
			s.fsm.unwant()
		}
	}()
	for {
		// faulted first: a fault that begins after the check below
		// closes this channel.
		faulted := s.fsm.faulted()
		last, appended := s.store.appended()
		if last > after {
			return nil
		}
		if err := s.storeBroken(); err != nil {
			return err
		}
		if urgent && !wanted {
			s.fsm.want()
			wanted = true
		}
		select {
		case <-appended:
		case <-faulted:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitStored waits, up to readWait, until the event store holds every
// event this server's state holds, so that a read of the store reflects
// every write acknowledged before it began, as a read of the state does.
func (s *Server) waitStored(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readWait)
	defer cancel()
	return s.WaitIndex(ctx, s.AppliedIndex())
}

// AppliedIndex returns the index of the last event in this server's state.
func (s *Server) AppliedIndex() uint64 {
	var i uint64
	s.fsm.read(func(st *cluster.State) { i = st.Index })
	return i
}
