package simtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
)

// Observer is the endpoint the harness's checkers read through. No cut
// applies to it: it sees every server and host as they are, not as the
// cluster's partitions let its members see them.
const Observer = "simtest-observer"

// Checker checks the invariants of DESIGN.md on a [Cluster] while faults
// are injected: no acknowledged event lost, logs dense and identical on
// every server, at most one running copy of a guest at any instant, hosts
// converging to the log, nothing orphaned, and reads that tell the truth.
// The test tells it what the clients were acknowledged ([Checker.Acked])
// and asks it to check ([Checker.CheckLogs], [Checker.CheckRead],
// [Checker.CheckConverged]); the at-most-one-copy rule is checked by the
// hosts themselves on every change.
//
// Its methods are called from the test's goroutine; the host watch runs
// on whichever goroutine changed a host.
type Checker struct {
	c  *Cluster
	hc *http.Client

	// dupMu guards active and dups; the host watch takes it with a host
	// locked, so nothing may take a host's lock while holding it.
	dupMu  sync.Mutex
	active map[string]map[string]int // guest -> node -> pid of an active copy
	dups   []string

	mu       sync.Mutex // guards what follows
	acked    []Ack
	ackedMax uint64

	canon  map[uint64]logEntry // the log as every server must have it
	cursor map[string]uint64   // per server: the last index checked

	published map[uint64]bool // indexes seen on the bus's event subjects
	pubFrom   uint64          // the first index the subscriber is sure to have been in place for
	gaps      [][2]uint64     // gaps announced there, from-to

	stats CheckStats
}

// Ack is one write a client was acknowledged: the events it wrote.
type Ack struct {
	Op, Guest string
	Indexes   []uint64
}

type logEntry struct {
	raw   string
	guest string
	typ   string
}

// CheckStats counts what a [Checker] saw and found.
type CheckStats struct {
	Acked         int    // acknowledged writes
	AckedEvents   int    // events they wrote
	Lost          int    // acknowledged events missing or different on a server
	Duplicates    int    // instants with two active copies of a guest
	Divergent     int    // servers whose log differs from another's or has a hole
	Orphans       int    // groups or guests a host holds that the log does not place there
	Unconverged   int    // hosts that did not come to run what the log says
	Reads         int    // consistent reads made
	ReadsRefused  int    // of which a server refused (unavailable, catching up, unreachable)
	StaleReads    int    // of which answered with a state older than an acknowledged write
	LogIndex      uint64 // the last index of the log
	LeaseExpiries int    // hosts' fencing leases that ran out
	NodeDowns     int    // node.down events in the log
	Placements    int    // guest.placed events in the log
	Published     int    // distinct indexes an event subscriber received
	Unpublished   int    // indexes of the log it neither received nor was told it missed
}

// NewChecker watches every host of c.
func NewChecker(c *Cluster) *Checker {
	k := &Checker{c: c, hc: c.Net.Client(Observer),
		active: map[string]map[string]int{}, canon: map[uint64]logEntry{}, cursor: map[string]uint64{},
		published: map[uint64]bool{}}
	for _, a := range c.agents {
		a.Host.Watch(k.hostChanged)
	}
	return k
}

// hostChanged is every host's watch: it enforces at most one active copy
// of a guest at every instant.
func (k *Checker) hostChanged(node, guest string, pid int, active bool) {
	k.dupMu.Lock()
	defer k.dupMu.Unlock()
	on := k.active[guest]
	if on == nil {
		on = map[string]int{}
		k.active[guest] = on
	}
	if !active {
		delete(on, node)
		return
	}
	on[node] = pid
	if len(on) > 1 {
		k.dups = append(k.dups, fmt.Sprintf("at %s guest %s runs unfrozen on %v at once",
			time.Now().UTC().Format("15:04:05.000"), guest, slices.Sorted(maps.Keys(on))))
	}
}

// Duplicates returns every instant two copies of a guest were active.
func (k *Checker) Duplicates() []string {
	k.dupMu.Lock()
	defer k.dupMu.Unlock()
	return slices.Clone(k.dups)
}

// Acked records a write a client was acknowledged.
func (k *Checker) Acked(op, guest string, res api.WriteResult) {
	k.mu.Lock()
	defer k.mu.Unlock()
	// Indexes are the events the write made; a write that changed
	// nothing has none, and its Index is only the state it saw.
	idx := slices.Clone(res.Indexes)
	k.acked = append(k.acked, Ack{Op: op, Guest: guest, Indexes: idx})
	k.stats.Acked++
	k.stats.AckedEvents += len(idx)
	for _, i := range idx {
		k.ackedMax = max(k.ackedMax, i)
	}
	k.ackedMax = max(k.ackedMax, res.Index)
}

// AckedIndex is the highest index a client was acknowledged.
func (k *Checker) AckedIndex() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ackedMax
}

// Stats returns the counts so far.
func (k *Checker) Stats() CheckStats {
	k.mu.Lock()
	s := k.stats
	for i, e := range k.canon {
		s.LogIndex = max(s.LogIndex, i)
		switch e.typ {
		case "node.down":
			s.NodeDowns++
		case "guest.placed":
			s.Placements++
		}
	}
	s.Published = len(k.published)
	k.mu.Unlock()
	s.Duplicates = len(k.Duplicates())
	for _, a := range k.c.agents {
		s.LeaseExpiries += a.Host.LeaseExpiries()
	}
	return s
}

// CheckRead makes a consistent read of guest, which a client was
// acknowledged creating and never asked to destroy, on server s as
// endpoint from (cuts apply), and checks that it tells the truth: a
// server either refuses, or answers with the guest and an index at least
// that of every write acknowledged before the read began.
func (k *Checker) CheckRead(ctx context.Context, s *Server, from, guest string) error {
	return k.CheckReadQuery(ctx, s, from, guest, "")
}

// CheckReadQuery is CheckRead with a query string ("stale=1": a stale
// read, which the rule does not cover; checking one shows what the rule
// would catch).
func (k *Checker) CheckReadQuery(ctx context.Context, s *Server, from, guest, query string) error {
	before := k.AckedIndex()
	k.mu.Lock()
	k.stats.Reads++
	k.mu.Unlock()
	refused := func() error {
		k.mu.Lock()
		k.stats.ReadsRefused++
		k.mu.Unlock()
		return nil
	}
	stale := func(format string, args ...any) error {
		k.mu.Lock()
		k.stats.StaleReads++
		k.mu.Unlock()
		return fmt.Errorf("stale read on %s: "+format, append([]any{s.ID}, args...)...)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+s.HTTPAddr+"/v1/guests/"+guest+"?"+query, nil)
	if err != nil {
		return err
	}
	resp, err := k.c.Net.Client(from).Do(req)
	if err != nil {
		return refused()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return refused()
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusServiceUnavailable:
		return refused()
	case http.StatusNotFound:
		return stale("guest %s, acknowledged before the read began (index <= %d), is not found: %s", guest, before, strings.TrimSpace(string(body)))
	default:
		return fmt.Errorf("read of %s on %s answered %d: %s", guest, s.ID, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	idx, err := strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
	if err != nil {
		return fmt.Errorf("read of %s on %s has no %s header: %q", guest, s.ID, api.HeaderIndex, resp.Header.Get(api.HeaderIndex))
	}
	if idx < before {
		return stale("answered at index %d, but index %d was acknowledged before the read began", idx, before)
	}
	var g api.GuestView
	if err := json.Unmarshal(body, &g); err != nil || g.Name != guest {
		return fmt.Errorf("read of %s on %s answered %q (%v)", guest, s.ID, body, err)
	}
	return nil
}

// CheckLogs reads what every running server's event store gained since
// the last check and checks that the stores agree: each is dense (every
// index after the first, once) and holds, at every index, the same event
// as every other server that has it.
func (k *Checker) CheckLogs(ctx context.Context) error {
	var errs []string
	for _, s := range k.c.servers {
		if !s.Running() {
			continue
		}
		if err := k.checkLog(ctx, s); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func (k *Checker) checkLog(ctx context.Context, s *Server) error {
	k.mu.Lock()
	since := k.cursor[s.ID]
	k.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/v1/events?since=%d", s.HTTPAddr, since), nil)
	if err != nil {
		return err
	}
	resp, err := k.hc.Do(req)
	if err != nil {
		return nil // stopped meanwhile
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusServiceUnavailable {
			return nil
		}
		return fmt.Errorf("events of %s answered %d: %s", s.ID, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	k.mu.Lock()
	defer k.mu.Unlock()
	last := since
	for sc.Scan() {
		line := sc.Text()
		var e struct {
			Index uint64          `json:"index"`
			Type  string          `json:"type"`
			Guest string          `json:"guest"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return fmt.Errorf("events of %s: unreadable line %q: %v", s.ID, line, err)
		}
		if e.Error != nil {
			return fmt.Errorf("events of %s after %d: %s", s.ID, last, e.Error)
		}
		if last > 0 && e.Index != last+1 {
			k.stats.Divergent++
			k.cursor[s.ID] = e.Index
			return fmt.Errorf("log of %s is not dense: index %d follows %d", s.ID, e.Index, last)
		}
		if have, ok := k.canon[e.Index]; ok && have.raw != line {
			k.stats.Divergent++
			k.cursor[s.ID] = e.Index
			return fmt.Errorf("logs differ at index %d: %s has %s, another server %s", e.Index, s.ID, line, have.raw)
		}
		k.canon[e.Index] = logEntry{raw: line, guest: e.Guest, typ: e.Type}
		last = e.Index
	}
	k.cursor[s.ID] = last
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return nil // the server went away mid-stream: check again later
	}
	return nil
}

// LogsEven reports whether every server's log, as checked last, ends at
// the same index, and at least at the highest acknowledged one.
func (k *Checker) LogsEven() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	end := k.cursor[k.c.servers[0].ID]
	for _, s := range k.c.servers {
		if k.cursor[s.ID] != end {
			return false
		}
	}
	return end >= k.ackedMax
}

// CheckAcked checks, once every server runs and has caught up, that every
// acknowledged event is in every server's log at its index, as the write
// that was acknowledged wrote it (same guest), and that every server's
// log ends at the same index.
func (k *Checker) CheckAcked() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var errs []string
	var ends []string
	end := map[uint64]bool{}
	for _, s := range k.c.servers {
		end[k.cursor[s.ID]] = true
		ends = append(ends, fmt.Sprintf("%s at %d", s.ID, k.cursor[s.ID]))
	}
	if len(end) > 1 {
		k.stats.Divergent++
		errs = append(errs, "servers' logs end at different indexes: "+strings.Join(ends, ", "))
	}
	for _, a := range k.acked {
		for _, i := range a.Indexes {
			e, ok := k.canon[i]
			switch {
			case !ok:
				k.stats.Lost++
				errs = append(errs, fmt.Sprintf("acknowledged %s of %s wrote index %d, which no server has", a.Op, a.Guest, i))
			case e.guest != a.Guest:
				k.stats.Lost++
				errs = append(errs, fmt.Sprintf("acknowledged %s of %s wrote index %d, which holds %s", a.Op, a.Guest, i, e.raw))
			}
			for _, s := range k.c.servers {
				if k.cursor[s.ID] < i {
					k.stats.Lost++
					errs = append(errs, fmt.Sprintf("acknowledged %s of %s wrote index %d, which %s does not have (its log ends at %d)", a.Op, a.Guest, i, s.ID, k.cursor[s.ID]))
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// Convergence describes how far the hosts are from the log.
type Convergence struct {
	Unconverged []string // a host that does not run what the log says
	Orphans     []string // something a host holds that the log does not place there
}

func (v Convergence) ok() bool { return len(v.Unconverged) == 0 && len(v.Orphans) == 0 }

func (v Convergence) String() string {
	return fmt.Sprintf("unconverged: %v; orphans: %v", v.Unconverged, v.Orphans)
}

// Converged compares every host with the log as a consistent read on
// the leader gives it: a guest the log wants running on a node (placed
// there, desired running, not paused) runs there, unfrozen, as the
// instance the log names (its pid), and reported running; no other host
// runs it; and no host holds a group or guest the log does not place on
// it.
func (k *Checker) Converged(ctx context.Context) (Convergence, error) {
	var v Convergence
	cl, err := api.NewClientWith(k.addrs(), k.hc)
	if err != nil {
		return v, err
	}
	cl.Retry = 5 * time.Second
	guests, err := cl.Guests(ctx)
	if err != nil {
		return v, fmt.Errorf("list guests: %w", err)
	}
	byID := map[string]*api.Guest{}
	for _, g := range guests {
		byID[g.Name] = g
	}
	for _, a := range k.c.agents {
		held := a.Host.Guests()
		for _, g := range guests {
			h, ok := held[g.Name]
			active := ok && !h.Ended && !h.Frozen
			want := g.Node == a.ID && g.Desired == api.DesiredRunning && !g.Paused
			switch {
			case want && (!active || h.PID != g.PID || g.Status != api.StatusRunning):
				v.Unconverged = append(v.Unconverged, fmt.Sprintf("%s: guest %s should run as pid %d (log: %s, generation %d), host has %+v (held %v)", a.ID, g.Name, g.PID, g.Status, g.Generation, h, ok))
			case !want && active:
				v.Unconverged = append(v.Unconverged, fmt.Sprintf("%s: guest %s runs, but the log has it %s/%s on %q (generation %d)", a.ID, g.Name, g.Desired, g.Status, g.Node, g.Generation))
			}
		}
		for id, h := range held {
			if g := byID[id]; g == nil || g.Node != a.ID {
				v.Orphans = append(v.Orphans, fmt.Sprintf("%s holds guest %s (pid %d, ended %v), which the log does not place there", a.ID, id, h.PID, h.Ended))
			}
		}
		for _, grp := range a.Host.Groups() {
			if g := byID[grp.ID]; g == nil || g.Node != a.ID || cgroupdriver.Kind(g.Driver) != grp.Kind {
				v.Orphans = append(v.Orphans, fmt.Sprintf("%s holds group %s, which the log does not place there", a.ID, grp))
			}
		}
	}
	slices.Sort(v.Unconverged)
	slices.Sort(v.Orphans)
	return v, nil
}

// CheckConverged waits up to within for the hosts to converge to the log
// and counts what did not.
func (k *Checker) CheckConverged(ctx context.Context, within time.Duration) error {
	var v Convergence
	var err error
	deadline := time.Now().Add(within)
	for {
		v, err = k.Converged(ctx)
		if err == nil && v.ok() {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		k.c.Advance(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.stats.Unconverged += len(v.Unconverged)
	k.stats.Orphans += len(v.Orphans)
	k.mu.Unlock()
	return fmt.Errorf("after %v the hosts have not converged to the log: %v", within, v)
}

func (k *Checker) addrs() string {
	var out []string
	for _, s := range k.c.servers {
		out = append(out, s.HTTPAddr)
	}
	return strings.Join(out, ",")
}

// Add adds o's counts to s.
func (s *CheckStats) Add(o CheckStats) {
	s.Acked += o.Acked
	s.AckedEvents += o.AckedEvents
	s.Lost += o.Lost
	s.Duplicates += o.Duplicates
	s.Divergent += o.Divergent
	s.Orphans += o.Orphans
	s.Unconverged += o.Unconverged
	s.Reads += o.Reads
	s.ReadsRefused += o.ReadsRefused
	s.StaleReads += o.StaleReads
	s.LogIndex += o.LogIndex
	s.LeaseExpiries += o.LeaseExpiries
	s.NodeDowns += o.NodeDowns
	s.Placements += o.Placements
	s.Published += o.Published
	s.Unpublished += o.Unpublished
}

// WatchPublished subscribes, as the [Observer] (no cut and no chaos
// applies to it), to every event the servers publish on the bus, until
// ctx ends, as an audit subscriber would.
func (k *Checker) WatchPublished(ctx context.Context) {
	conn := k.c.Bus.Conn(Observer)
	ready := make(chan struct{})
	go func() {
		defer conn.Close()
		conn.Watch(ctx, bus.EventPrefix+">", func() { close(ready) }, func(m bus.Msg) {
			k.mu.Lock()
			defer k.mu.Unlock()
			if m.Subject == bus.EventGapSubject {
				k.gaps = append(k.gaps, [2]uint64{m.Prev + 1, m.Index})
				return
			}
			k.published[m.Index] = true
		})
	}()
	<-ready
	var applied uint64
	for _, s := range k.c.servers {
		if cs := s.Coordinator(); cs != nil {
			applied = max(applied, cs.AppliedIndex())
		}
	}
	k.mu.Lock()
	k.pubFrom = applied + 1
	k.mu.Unlock()
}

// Unpublished returns the indexes of the log, as checked last, that the
// event subscriber neither received nor was told it would never receive,
// from the first one committed after it subscribed.
func (k *Checker) Unpublished() []uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []uint64
	for i := range k.canon {
		if k.published[i] || i < k.pubFrom {
			continue
		}
		gapped := false
		for _, g := range k.gaps {
			gapped = gapped || (g[0] <= i && i <= g[1])
		}
		if !gapped {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

// CheckPublished checks that the event subscriber received every index
// of the log or was told of the gap, and counts what it was not.
func (k *Checker) CheckPublished() error {
	miss := k.Unpublished()
	k.mu.Lock()
	k.stats.Unpublished += len(miss)
	k.mu.Unlock()
	if len(miss) > 0 {
		return fmt.Errorf("the bus's event subscriber neither received nor was told it missed %d indexes of the log: %v", len(miss), miss)
	}
	return nil
}
