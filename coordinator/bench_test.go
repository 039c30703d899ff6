package coordinator

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/coordinator/pki"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// benchWindow is how long each configuration is measured.
const benchWindow = 3 * time.Second

type commitStats struct {
	ops      int
	perSec   float64
	p50, p99 time.Duration
}

// measure runs clients goroutines calling op until benchWindow passes.
func measure(clients int, op func(n int64) error) (commitStats, error) {
	return measureFor(clients, benchWindow, op)
}

// measureFor runs clients goroutines calling op until window passes.
func measureFor(clients int, window time.Duration, op func(n int64) error) (commitStats, error) {
	var (
		mu   sync.Mutex
		lats []time.Duration
		seq  atomic.Int64
		wg   sync.WaitGroup
		ferr atomic.Value
	)
	start := time.Now()
	deadline := start.Add(window)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := op(seq.Add(1)); err != nil {
					ferr.Store(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err, ok := ferr.Load().(error); ok {
		return commitStats{}, err
	}
	el := time.Since(start)
	slices.Sort(lats)
	st := commitStats{ops: len(lats), perSec: float64(len(lats)) / el.Seconds()}
	if len(lats) > 0 {
		st.p50 = lats[len(lats)/2]
		st.p99 = lats[len(lats)*99/100]
	}
	return st, nil
}

// BenchmarkCommit measures events committed per second and commit latency
// on three servers on loopback with fsync on, through corral's Submit
// (validation, raft, state machine, event store, NATS) and, in the same
// run, through bare hashicorp/raft with a no-op FSM on the same log store
// and raft settings. It prints both and the ratio.
//
//	go test ./coordinator -run '^$' -bench Commit -benchtime 1x
func BenchmarkCommit(b *testing.B) {
	for range b.N {
		bare := startBareRaft(b, 3)
		c := newBenchCluster(b)
		_, leader := c.waitLeader()
		payload, _ := encodeProposal("", false, false, nil)
		payload = append(payload, make([]byte, 300)...) // about a guest definition's size
		fmt.Fprintf(os.Stdout, "\n3 servers on loopback, fsync on, raft MaxAppendEntries=%d (bare raft with BatchApplyCh; corral's leader groups proposals itself), %v per row\n",
			DefaultRaftConfig().MaxAppendEntries, benchWindow)
		fmt.Fprintf(os.Stdout, "%-8s %12s %10s %10s   %12s %10s %10s   %s\n", "clients", "corral ev/s", "p50", "p99", "raft ev/s", "p50", "p99", "corral/raft")
		for _, clients := range []int{1, 16, 256} {
			cs, err := measure(clients, func(n int64) error {
				cmd := &cluster.CreateGuest{CreateGuest: api.CreateGuest{Name: fmt.Sprintf("b%d-%d", clients, n), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}}
				o, err := leader.Submit(context.Background(), "", "bench", cmd)
				if err == nil && o.Err != nil {
					err = o.Err
				}
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			rs, err := measure(clients, func(int64) error { return bare.Apply(payload, applyTimeout).Error() })
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(os.Stdout, "%-8d %12.0f %10v %10v   %12.0f %10v %10v   %.2f\n", clients,
				cs.perSec, cs.p50.Round(time.Microsecond), cs.p99.Round(time.Microsecond),
				rs.perSec, rs.p50.Round(time.Microsecond), rs.p99.Round(time.Microsecond), cs.perSec/rs.perSec)
			b.ReportMetric(cs.perSec, fmt.Sprintf("corral-ev/s-%d", clients))
			b.ReportMetric(rs.perSec, fmt.Sprintf("raft-ev/s-%d", clients))
		}
	}
}

// BenchmarkCommitTLS is the cost of security on the write path: the same
// writes through 3 corral servers whose raft runs over mutual TLS, against
// 3 servers without TLS, in the same process.
func BenchmarkCommitTLS(b *testing.B) {
	for range b.N {
		plain := newBenchCluster(b)
		secure := newTLSBenchCluster(b, filepath.Join(b.TempDir(), "tls"))
		_, pl := plain.waitLeader()
		_, sl := secure.waitLeader()
		submit := func(s *Server, tag string) func(int) func(int64) error {
			return func(clients int) func(int64) error {
				return func(n int64) error {
					cmd := &cluster.CreateGuest{CreateGuest: api.CreateGuest{Name: fmt.Sprintf("%s%d-%d", tag, clients, n), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}}
					o, err := s.Submit(context.Background(), "", "bench", cmd)
					if err == nil && o.Err != nil {
						err = o.Err
					}
					return err
				}
			}
		}
		compareTLS(b, "raft over mutual TLS vs plain TCP", "ev/s", submit(sl, "t"), submit(pl, "p"))
	}
}

// newTLSBenchCluster is newBenchCluster with mutual TLS, certificates in
// dir, and no rate limit (a benchmark measures TLS and ACLs, not it).
func newTLSBenchCluster(b *testing.B, dir string) *testCluster {
	return newBenchClusterWith(b, func(cfg *Config) {
		id := pki.Identity{Role: pki.RoleServer, Name: cfg.ID}
		files, err := pki.EnsureDir(dir, id)
		if err != nil {
			b.Fatal(err)
		}
		if cfg.TLS, err = files[id].Load(); err != nil {
			b.Fatal(err)
		}
		cfg.Insecure, cfg.Limits.Rate = false, 0
	})
}

// compareTLS measures op with TLS and without at 1, 16 and 256 clients and
// prints both and their ratio.
func compareTLS(b *testing.B, what, unit string, withTLS, plain func(clients int) func(int64) error) {
	fmt.Fprintf(os.Stdout, "\n3 servers on loopback, fsync on, %v per row: %s\n", benchWindow, what)
	fmt.Fprintf(os.Stdout, "%-8s %12s %10s %10s   %12s %10s %10s   %s\n", "clients", "TLS "+unit, "p50", "p99", "plain "+unit, "p50", "p99", "TLS/plain")
	for _, clients := range []int{1, 16, 256} {
		ts, err := measure(clients, withTLS(clients))
		if err != nil {
			b.Fatal(err)
		}
		ps, err := measure(clients, plain(clients))
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stdout, "%-8d %12.0f %10v %10v   %12.0f %10v %10v   %.2f\n", clients,
			ts.perSec, ts.p50.Round(time.Microsecond), ts.p99.Round(time.Microsecond),
			ps.perSec, ps.p50.Round(time.Microsecond), ps.p99.Round(time.Microsecond), ts.perSec/ps.perSec)
		b.ReportMetric(ts.perSec, fmt.Sprintf("tls-%s-%d", unit, clients))
		b.ReportMetric(ps.perSec, fmt.Sprintf("plain-%s-%d", unit, clients))
	}
}

func newBenchCluster(b *testing.B) *testCluster { return newBenchClusterWith(b, nil) }

func newBenchClusterWith(b *testing.B, tweak func(*Config)) *testCluster {
	c := &testCluster{t: b, dir: b.TempDir(), servers: make([]*Server, 3), stops: make([]func(), 3), cfgs: make([]Config, 3)}
	for i := range 3 {
		cfg := TestConfig(b, fmt.Sprintf("s%d", i+1), c.dir)
		cfg.Raft = DefaultRaftConfig()
		if tweak != nil {
			tweak(&cfg)
		}
		cfg.Bootstrap = i == 0
		if i > 0 {
			cfg.Join = []string{c.servers[0].HTTPAddr()}
		}
		c.cfgs[i] = cfg
		c.start(i)
		if i == 0 {
			<-c.servers[0].Ready()
		}
	}
	WaitFor(b, 10*time.Second, "servers to join", func() bool {
		var n int
		c.servers[0].fsm.read(func(st *cluster.State) { n = len(st.Servers) })
		return n == 3 && allVoters(c.servers[0], 3)
	})
	return c
}

type noopFSM struct{}

func (noopFSM) Apply(*raft.Log) any                 { return nil }
func (noopFSM) Snapshot() (raft.FSMSnapshot, error) { return noopSnap{}, nil }
func (noopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type noopSnap struct{}

func (noopSnap) Persist(s raft.SnapshotSink) error { return s.Close() }
func (noopSnap) Release()                          {}

// startBareRaft starts n raft servers with corral's raft settings and log
// store and a no-op FSM, and returns the leader.
func startBareRaft(b *testing.B, n int) *raft.Raft {
	leader, _ := startBareRafts(b, n)
	return leader
}

// startBareRafts is startBareRaft returning every server as well.
func startBareRafts(b *testing.B, n int) (*raft.Raft, []*raft.Raft) {
	dir := b.TempDir()
	rcfg := DefaultRaftConfig()
	var rafts []*raft.Raft
	var trans []*raft.NetworkTransport
	var servers []raft.Server
	for i := range n {
		tr, err := raft.NewTCPTransportWithConfig("127.0.0.1:0", nil, &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, Logger: hclog.NewNullLogger(), MaxRPCsInFlight: rcfg.MaxRPCsInFlight})
		if err != nil {
			b.Fatal(err)
		}
		trans = append(trans, tr)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint("r", i)), Address: tr.LocalAddr()})
	}
	for i := range n {
		c := raft.DefaultConfig()
		c.LocalID = servers[i].ID
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = rcfg.HeartbeatTimeout, rcfg.ElectionTimeout, rcfg.LeaderLease
		c.MaxAppendEntries, c.BatchApplyCh, c.CommitTimeout = rcfg.MaxAppendEntries, true, rcfg.CommitTimeout
		c.SnapshotThreshold, c.TrailingLogs = rcfg.SnapshotThreshold, rcfg.TrailingLogs
		c.Logger = hclog.NewNullLogger()
		d := filepath.Join(dir, fmt.Sprint(i))
		os.MkdirAll(d, 0o700)
		store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(d, "raft.db")})
		if err != nil {
			b.Fatal(err)
		}
		logs, _ := raft.NewLogCache(1024, store)
		snaps, _ := raft.NewFileSnapshotStoreWithLogger(d, 2, hclog.NewNullLogger())
		r, err := raft.NewRaft(c, noopFSM{}, logs, store, snaps, trans[i])
		if err != nil {
			b.Fatal(err)
		}
		r.BootstrapCluster(raft.Configuration{Servers: servers})
		rafts = append(rafts, r)
		b.Cleanup(func() {
			r.Shutdown().Error()
			trans[i].Close()
			store.Close()
		})
	}
	var leader *raft.Raft
	WaitFor(b, 10*time.Second, "bare raft leader", func() bool {
		for _, r := range rafts {
			if r.State() == raft.Leader {
				leader = r
				return true
			}
		}
		return false
	})
	return leader, rafts
}

// BenchmarkAPITLS is the cost of security at the API: guest creates
// through the leader's HTTP API with mutual TLS and an ACL token, against
// the same creates through a cluster without TLS or ACLs, in the same
// process, each with one keep-alive connection pool of 256.
func BenchmarkAPITLS(b *testing.B) {
	for range b.N {
		dir := filepath.Join(b.TempDir(), "tls")
		plain := newBenchCluster(b)
		secure := newTLSBenchCluster(b, dir)
		_, pl := plain.waitLeader()
		_, sl := secure.waitLeader()
		me := pki.Identity{Role: pki.RoleClient, Name: "bench"}
		files, err := pki.EnsureDir(dir, me)
		if err != nil {
			b.Fatal(err)
		}
		l, err := files[me].Load()
		if err != nil {
			b.Fatal(err)
		}
		pool := func(tc *tls.Config) *http.Client {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost, tr.TLSClientConfig = 256, tc
			return &http.Client{Transport: tr}
		}
		sc, err := api.NewClientWith("https://"+sl.HTTPAddr(), pool(l.DialConfig()))
		if err != nil {
			b.Fatal(err)
		}
		tok, err := sc.ACLBootstrap(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		sc.Token = tok.Secret
		pc, err := api.NewClientWith(pl.HTTPAddr(), pool(nil))
		if err != nil {
			b.Fatal(err)
		}
		create := func(c *api.Client, tag string) func(int) func(int64) error {
			return func(clients int) func(int64) error {
				return func(n int64) error {
					_, err := c.CreateGuest(context.Background(), api.CreateGuest{Name: fmt.Sprintf("%s%d-%d", tag, clients, n), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
					return err
				}
			}
		}
		compareTLS(b, "guest creates through the leader's HTTP API, mutual TLS and an ACL token vs neither", "ops/s", create(sc, "t"), create(pc, "p"))
	}
}
