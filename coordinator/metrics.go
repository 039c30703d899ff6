package coordinator

import (
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// metrics are the server's Prometheus metrics, in a registry of its own
// (several servers share a process in tests). Counters and histograms are
// fed where the work happens; gauges read the server at scrape time from
// what it keeps in memory (raft's indexes, the store's bounds, the
// pending index), plus one stat of the event store's file.
//
// Every label is bounded: route is the route table's pattern, never the
// path; code an HTTP status; type an event type's name.
type metrics struct {
	reg      *prometheus.Registry
	denied   *prometheus.CounterVec
	requests *prometheus.HistogramVec
	commit   prometheus.Histogram
	leaders  prometheus.Counter
	applied  *prometheus.CounterVec
	appended prometheus.Counter
	trimmed  prometheus.Counter
	placed   prometheus.Counter
	passes   prometheus.Histogram
}

// latencyBuckets span a local fsync to a slow cross-site commit.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 15) // 0.5ms … 8s

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corral_http_requests_denied_total",
		Help: "API requests refused: unauthenticated, permission denied or rate limited, by route.",
	}, []string{"route", "code"})
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "corral_http_request_duration_seconds",
		Help:    "API requests by route pattern and HTTP status, from the first byte read to the handler's return (an event stream or console counts its whole life).",
		Buckets: latencyBuckets,
	}, []string{"route", "code"})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "corral_raft_commit_duration_seconds",
		Help:    "Time from the leader proposing a command to raft until it was committed and applied on the leader.",
		Buckets: latencyBuckets,
	})
	m.leaders = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "corral_raft_leader_changes_total",
		Help: "Times this server learned of a new raft leader (itself included).",
	})
	m.applied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corral_events_applied_total",
		Help: "Events this server applied to its state since it started, by type; the replay of its own log at start is not counted.",
	}, []string{"type"})
	m.appended = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "corral_event_store_appended_total",
		Help: "Events appended to this server's event store since it started (replay included).",
	})
	m.trimmed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "corral_event_store_trimmed_total",
		Help: "Events the retention (--retain-events, --retain-age) removed from this server's event store.",
	})
	m.placed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "corral_scheduler_placements_total",
		Help: "Guest placements committed (guest.placed applied), whether at create or by a scheduling pass; every server counts them as it applies them.",
	})
	m.passes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "corral_scheduler_pass_duration_seconds",
		Help:    "Scheduling passes the leader ran (not the ones it skipped because nothing changed), from reading the state to committing the plan.",
		Buckets: latencyBuckets,
	})
	m.reg.MustRegister(m.denied, m.requests, m.commit, m.leaders, m.applied, m.appended, m.trimmed, m.placed, m.passes,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// watch registers the gauges that read s at scrape time. Called once raft
// and the store exist.
func (m *metrics) watch(s *Server) {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	storePath := s.store.db.Path()
	m.reg.MustRegister(
		gauge("corral_raft_applied_index", "The last raft index applied to this server's state.", func() float64 { return float64(s.raft.AppliedIndex()) }),
		gauge("corral_raft_commit_index", "The last raft index this server knows committed.", func() float64 { return float64(s.raft.CommitIndex()) }),
		gauge("corral_raft_last_index", "The last index in this server's raft log (or snapshot).", func() float64 { return float64(s.raft.LastIndex()) }),
		gauge("corral_raft_term", "This server's current raft term.", func() float64 { return float64(s.raft.CurrentTerm()) }),
		gauge("corral_raft_leader", "1 while this server is the raft leader, 0 otherwise.", func() float64 { return b2f(s.raft.State() == raft.Leader) }),
		gauge("corral_event_store_first_index", "The first event index this server's event store retains.", func() float64 { f, _ := s.store.Bounds(); return float64(f) }),
		gauge("corral_event_store_last_index", "The last event index in this server's event store.", func() float64 { _, l := s.store.Bounds(); return float64(l) }),
		gauge("corral_event_store_size_bytes", "Size of this server's event store file (events.db), free pages included.", func() float64 {
			fi, err := os.Stat(storePath)
			if err != nil {
				return 0
			}
			return float64(fi.Size())
		}),
		gauge("corral_scheduler_pending_guests", "Guests waiting for a placement (status pending and asked to run or reserve).", func() float64 {
			var n int
			s.fsm.read(func(st *cluster.State) { n = len(st.Pending()) })
			return float64(n)
		}),
		gauge("corral_event_store_broken", "1 while this server's event store fails writes (it then serves nothing), 0 otherwise.", func() float64 { return b2f(s.fsm.broken() != nil) }),
	)
	// raft calls the filter on its own goroutine for every observation;
	// counting there needs no channel and no goroutine to drain it.
	s.raft.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID != "" {
			m.leaders.Inc()
		}
		return false
	}))
}

// committed counts events applied to the state.
func (m *metrics) committed(t events.Type) {
	m.applied.WithLabelValues(t.String()).Inc()
	if t == events.TypeGuestPlaced {
		m.placed.Inc()
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// instrument times h under route, the route table's pattern, with the
// status it answered.
func (m *metrics) instrument(route string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			m.requests.WithLabelValues(route, strconv.Itoa(code)).Observe(time.Since(began).Seconds())
		}()
		h(sw, r)
	}
}

// statusWriter remembers the status a handler answered. It flushes for
// the streams (which assert http.Flusher) and unwraps for
// http.ResponseController (the console's full duplex).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
