package coordinator

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// historyLog is a synthetic cluster's log written straight into a Store:
// a steady population of guests on a fixed set of nodes, where every cycle
// defines, places, starts and tunes one guest, undefines the oldest and
// stores one node's usage report. Halfway through, the guest "quiet" is
// defined and placed and never touched again: a guest with two events.
type historyLog struct {
	store *Store
	state *cluster.State
	quiet string
}

const (
	historyNodes      = 50
	historyPopulation = 1000 // 20 guests per node
)

// buildHistoryLog writes total events (a few more, to end a cycle) to a
// store in dir, with checkpoints as the server's state machine takes them.
func buildHistoryLog(tb testing.TB, dir string, total uint64, cfg StoreConfig) *historyLog {
	tb.Helper()
	store, err := OpenStore(filepath.Join(dir, "events.db"), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	st := cluster.NewState()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var (
		batch    []Record
		lastCP   uint64
		nextNode int
	)
	emit := func(e events.Event) {
		e.Index = st.Index + 1
		e.Version = events.SchemaVersion
		e.Type = e.Payload.EventType()
		e.Time = t0.Add(time.Duration(e.Index) * time.Millisecond)
		e.Actor = "bench"
		if _, err := st.Apply(e); err != nil {
			tb.Fatalf("event %d (%s): %v", e.Index, e.Type, err)
		}
		data, err := events.Marshal(e)
		if err != nil {
			tb.Fatal(err)
		}
		batch = append(batch, Record{Index: e.Index, Data: data})
		if every := max(cfg.CheckpointEvery, uint64(len(st.Guests)+len(st.Nodes))); st.Index-lastCP >= every {
			b, err := json.Marshal(st)
			if err != nil {
				tb.Fatal(err)
			}
			if err := store.PutCheckpoint(Record{Index: st.Index, Data: b}); err != nil {
				tb.Fatal(err)
			}
			lastCP = st.Index
		}
		if len(batch) == 4096 {
			if err := store.Append(batch); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for i := range historyNodes {
		id := fmt.Sprintf("n%d", i)
		emit(events.Event{Node: id, Payload: &events.NodeRegistered{ID: id, CPUs: 64, MemoryBytes: 256 << 30,
			Drivers: map[string]string{"process": "1"}, CgroupMode: "v1"}})
		emit(events.Event{Node: id, Payload: &events.NodeUp{}})
	}
	var live []string // guests defined, oldest first
	place := func(name, node string) {
		emit(events.Event{Guest: name, Payload: &events.GuestDefined{Name: name, Driver: "process", MemoryBytes: 16 << 20,
			VCPUs: 1, CPUShares: 1024, Command: []string{"/bin/sleep", "infinity"}}})
		emit(events.Event{Guest: name, Node: node, Payload: &events.GuestPlaced{Node: node}})
	}
	h := &historyLog{store: store, state: st, quiet: "quiet"}
	for c := 0; st.Index < total; c++ {
		if h.quiet != "" && st.Index >= total/2 && st.Guests[h.quiet] == nil {
			place(h.quiet, "n0")
		}
		name := fmt.Sprintf("g%d", c)
		node := fmt.Sprintf("n%d", nextNode)
		nextNode = (nextNode + 1) % historyNodes
		place(name, node)
		gen := st.Index
		emit(events.Event{Guest: name, Payload: &events.GuestStartRequested{}})
		emit(events.Event{Guest: name, Node: node, Payload: &events.GuestStarted{Node: node, Generation: gen, PID: 1000 + c}})
		emit(events.Event{Guest: name, Payload: &events.GuestTuned{Knob: "cpu_shares", Old: "1024", New: strconv.Itoa(512 + c%1024), Live: true, Persistent: true}})
		live = append(live, name)
		if len(live) > historyPopulation {
			emit(events.Event{Guest: live[0], Payload: &events.GuestUndefined{}})
			live = live[1:]
		}
		var u events.NodeUsage
		u.IntervalMs = 10000
		for _, g := range st.Guests {
			if g.Node == node && g.Name != h.quiet && g.Status == cluster.StatusRunning {
				u.Guests = append(u.Guests, events.GuestUsage{Guest: g.Name, Generation: g.Generation,
					CPUNanos: uint64(c) * 1e7, MemoryBytes: 8 << 20, LimitHits: 0, Pids: 1})
			}
		}
		slices.SortFunc(u.Guests, func(a, b events.GuestUsage) int { return cmpString(a.Guest, b.Guest) })
		emit(events.Event{Node: node, Payload: &u})
	}
	if len(batch) > 0 {
		if err := store.Append(batch); err != nil {
			tb.Fatal(err)
		}
	}
	return h
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// historyServer is just enough of a Server to call the read handlers.
func (h *historyLog) server(tb testing.TB) *Server {
	f := newFSM(h.store, DefaultStoreConfig().CheckpointEvery, slog.New(slog.DiscardHandler))
	tb.Cleanup(f.close)
	f.state = h.state
	return &Server{store: h.store, fsm: f}
}

// serve runs handler on a request for target and returns the recorder,
// failing unless it answered 200.
func serve(tb testing.TB, handler http.HandlerFunc, target string, path map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", target, nil)
	for k, v := range path {
		r.SetPathValue(k, v)
	}
	w := httptest.NewRecorder()
	handler(w, r)
	if w.Code != http.StatusOK {
		tb.Fatalf("GET %s: %d %s", target, w.Code, w.Body.String())
	}
	return w
}

// medianMs runs fn reps times and returns the median wall time in ms.
func medianMs(reps int, fn func()) float64 {
	d := make([]time.Duration, reps)
	for i := range d {
		start := time.Now()
		fn()
		d[i] = time.Since(start)
	}
	slices.Sort(d)
	return float64(d[reps/2]) / float64(time.Millisecond)
}

// interleavedMedianMs runs each of fns in turn, reps rounds, and returns
// the median wall time of each in ms.
func interleavedMedianMs(reps int, fns ...func()) []float64 {
	d := make([][]time.Duration, len(fns))
	for range reps {
		for i, fn := range fns {
			start := time.Now()
			fn()
			d[i] = append(d[i], time.Since(start))
		}
	}
	out := make([]float64, len(fns))
	for i := range d {
		slices.Sort(d[i])
		out[i] = float64(d[i][reps/2]) / float64(time.Millisecond)
	}
	return out
}

// showGuest is what GET /v1/guests/{name} does once its read barrier has
// passed: the reference for a guest's history.
func (s *Server) showGuest(w http.ResponseWriter, r *http.Request) {
	var v any
	s.fsm.read(func(st *cluster.State) { v = cluster.View(st.Guests[r.PathValue("name")]) })
	writeJSON(w, http.StatusOK, v)
}

// showState is what GET /v1/state does once its read barrier has passed:
// the reference for the state at an index.
func (s *Server) showState(w http.ResponseWriter, r *http.Request) {
	var v any
	s.fsm.read(func(st *cluster.State) { v = st.View() })
	writeJSON(w, http.StatusOK, v)
}

var historyEvery = flag.Uint64("history.every", DefaultStoreConfig().CheckpointEvery, "BenchmarkHistory: the store's checkpoint interval")

// BenchmarkHistory measures `guest history` of a guest with two events and
// `state --at N` for N early, in the middle and late in the log and right
// before the last checkpoint ("full": a whole interval to replay), at 10k,
// 100k and 1M events, each beside its reference in the same run: `guest
// show` and `state` now. at_*_replayed is how many events each N
// replays; history_scan_ms is the same history read the way it was before
// the subject index (decoding every stored event).
func BenchmarkHistory(b *testing.B) {
	for _, total := range []uint64{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("events=%d", total), func(b *testing.B) {
			start := time.Now()
			cfg := DefaultStoreConfig()
			cfg.CheckpointEvery = *historyEvery
			h := buildHistoryLog(b, b.TempDir(), total, cfg)
			_, last := h.store.Bounds()
			cp, _, _ := h.store.Checkpoint(last)
			b.Logf("built %d events, %d guests, in %v; checkpoints every %d events or more, the last %d bytes",
				last, len(h.state.Guests), time.Since(start).Round(time.Millisecond), cfg.CheckpointEvery, len(cp.Data))
			s := h.server(b)
			quiet := map[string]string{"name": h.quiet}
			if n := countLines(serve(b, s.guestHistory, "/v1/guests/quiet/history", quiet).Body.Bytes()); n != 2 {
				b.Fatalf("history of %s has %d events, want 2", h.quiet, n)
			}
			reps := 11
			b.ResetTimer()
			for range b.N {
				hist := medianMs(reps, func() { serve(b, s.guestHistory, "/v1/guests/quiet/history", quiet) })
				show := medianMs(reps, func() { serve(b, s.showGuest, "/v1/guests/quiet", quiet) })
				scan := medianMs(3, func() {
					first, _ := h.store.Bounds()
					n := 0
					f := eventFilter{guest: h.quiet}
					for cursor := first - 1; ; {
						recs, err := h.store.Read(cursor, 1024)
						if err != nil {
							b.Fatal(err)
						}
						if len(recs) == 0 {
							break
						}
						for _, rec := range recs {
							cursor = rec.Index
							if f.match(rec.Data) {
								n++
							}
						}
					}
					if n != 2 {
						b.Fatalf("scan found %d events of %s", n, h.quiet)
					}
				})
				// state and state --at in turn, so that a machine busy
				// with something else slows both alike.
				ats := []struct {
					name string
					n    uint64
				}{{"early", last / 10}, {"mid", last / 2}, {"late", last - 1}, {"full", cp.Index - 1}}
				fns := []func(){func() { serve(b, s.showState, "/v1/state", nil) }}
				for _, at := range ats {
					fns = append(fns, func() { serve(b, s.getState, "/v1/state?at="+strconv.FormatUint(at.n, 10), nil) })
				}
				ms := interleavedMedianMs(2*reps-1, fns...)
				state, worst := ms[0], 0.0
				for i, at := range ats {
					b.ReportMetric(ms[i+1], "at_"+at.name+"_ms")
					if from, ok, err := h.store.Checkpoint(at.n); err != nil || !ok {
						b.Fatalf("no checkpoint at or below %d: %v", at.n, err)
					} else {
						b.ReportMetric(float64(at.n-from.Index), "at_"+at.name+"_replayed")
					}
					worst = max(worst, ms[i+1])
				}
				b.ReportMetric(hist, "history_ms")
				b.ReportMetric(show, "show_ms")
				b.ReportMetric(hist/show, "history/show")
				b.ReportMetric(scan, "history_scan_ms")
				b.ReportMetric(state, "state_ms")
				b.ReportMetric(worst/state, "worst_at/state")
			}
		})
	}
}

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}
