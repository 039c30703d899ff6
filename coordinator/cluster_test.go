package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"

	"github.com/corral-dev/corral/events"
)

// testCluster is n servers over real TCP on loopback with bbolt in a temp
// dir. Servers can be stopped and restarted from their data dirs.
type testCluster struct {
	t       testing.TB
	dir     string
	servers []*Server
	stops   []func()
	cfgs    []Config
}

func newTestCluster(t *testing.T, n int, tweak func(i int, cfg *Config, started []*Server)) *testCluster {
	c := &testCluster{t: t, dir: t.TempDir(), servers: make([]*Server, n), stops: make([]func(), n), cfgs: make([]Config, n)}
	for i := range n {
		cfg := TestConfig(t, fmt.Sprintf("s%d", i+1), c.dir)
		cfg.Bootstrap = i == 0
		if i > 0 {
			cfg.Join = []string{c.servers[0].HTTPAddr()}
		}
		if tweak != nil {
			tweak(i, &cfg, c.servers[:i])
		}
		c.cfgs[i] = cfg
		c.start(i)
		if i == 0 {
			<-c.servers[0].Ready()
		}
	}
	WaitFor(t, 10*time.Second, "all servers to join", func() bool {
		for _, s := range c.servers {
			select {
			case <-s.Ready():
			default:
				return false
			}
		}
		var ok bool
		c.servers[0].fsm.read(func(st *cluster.State) { ok = len(st.Servers) == n })
		return ok && allVoters(c.servers[0], n)
	})
	return c
}

func (c *testCluster) start(i int) {
	s, stop := startServer(c.t, c.cfgs[i], Deps{})
	// A restarted server must come back on the raft address the others know.
	c.cfgs[i].RaftAddr = s.RaftAddr()
	c.servers[i], c.stops[i] = s, stop
}

// stopAll stops every server now.
func (c *testCluster) stopAll() {
	for _, stop := range c.stops {
		if stop != nil {
			stop()
		}
	}
}

func (c *testCluster) leader() (int, *Server) {
	for i, s := range c.servers {
		if s != nil && s.IsLeader() {
			return i, s
		}
	}
	return -1, nil
}

func (c *testCluster) waitLeader() (int, *Server) {
	var i int
	var s *Server
	WaitFor(c.t, 10*time.Second, "a leader", func() bool {
		i, s = c.leader()
		return s != nil
	})
	return i, s
}

// waitConverged waits until every live server has stored what the leader
// has.
func (c *testCluster) waitConverged() {
	WaitFor(c.t, 10*time.Second, "servers to converge", func() bool {
		_, l := c.leader()
		if l == nil {
			return false
		}
		want := l.AppliedIndex() // the stores trail the states by what their writers queued
		for _, s := range c.servers {
			if s != nil {
				if _, last := s.store.Bounds(); last != want {
					return false
				}
			}
		}
		return true
	})
}

func (c *testCluster) addrs(skip int) string {
	var out []string
	for i, s := range c.servers {
		if i != skip && s != nil {
			out = append(out, s.HTTPAddr())
		}
	}
	return joinComma(out)
}

func joinComma(xs []string) string {
	var b bytes.Buffer
	for i, x := range xs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

func storeRecords(t *testing.T, s *Server) []Record {
	t.Helper()
	var out []Record
	var after uint64
	for {
		recs, err := s.store.Read(after, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		after = recs[len(recs)-1].Index
	}
}

func createGuests(t *testing.T, c *api.Client, prefix string, n int) map[string]uint64 {
	t.Helper()
	acked := map[string]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("%s-%d", prefix, i)
			res, err := c.CreateGuest(context.Background(), api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
			if err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				return
			}
			mu.Lock()
			acked[name] = res.Index
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return acked
}

// checkStores requires every live server to hold the same dense sequence of
// events, 1..N with no index twice, containing every acknowledged guest.
func checkStores(t *testing.T, c *testCluster, acked map[string]uint64) {
	t.Helper()
	var ref []Record
	for _, s := range c.servers {
		if s == nil {
			continue
		}
		recs := storeRecords(t, s)
		for i, r := range recs {
			if r.Index != uint64(i+1) {
				t.Fatalf("%s: record %d has index %d: gap or duplicate", s.ID(), i, r.Index)
			}
		}
		if ref == nil {
			ref = recs
			continue
		}
		if !reflect.DeepEqual(recs, ref) {
			t.Fatalf("%s holds %d events that differ from another server's %d", s.ID(), len(recs), len(ref))
		}
	}
	for name, idx := range acked {
		if idx == 0 || idx > uint64(len(ref)) {
			t.Fatalf("acknowledged guest %s at index %d is missing (store has %d)", name, idx, len(ref))
		}
		e, err := events.Unmarshal(ref[idx-1].Data)
		if err != nil || e.Guest != name || e.Type != events.TypeGuestDefined {
			t.Fatalf("index %d is %v %v, want the definition of %s", idx, e.Type, e.Guest, name)
		}
	}
}

func TestLeaderFailover(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, _ := c.waitLeader()
	cl, err := api.NewClient(c.addrs(-1))
	if err != nil {
		t.Fatal(err)
	}
	acked := createGuests(t, cl, "before", 40)

	c.stops[li]()
	c.servers[li] = nil
	_, nl := c.waitLeader()
	if nl.ID() == c.cfgs[li].ID {
		t.Fatal("stopped server still leads")
	}
	cl2, _ := api.NewClient(c.addrs(-1))
	for k, v := range createGuests(t, cl2, "after", 40) {
		acked[k] = v
	}
	// Every server that is up holds the same events once it has caught up.
	c.waitConverged()
	checkStores(t, c, acked)

	// The stopped server restarts from its data dir and catches up.
	c.cfgs[li].Bootstrap = false
	c.cfgs[li].Join = []string{nl.HTTPAddr()}
	c.start(li)
	WaitFor(t, 10*time.Second, "restarted server to re-register", func() bool {
		var addr string
		c.servers[li].fsm.read(func(st *cluster.State) {
			if m, ok := st.Servers[c.cfgs[li].ID]; ok {
				addr = m.HTTPAddr
			}
		})
		return addr == c.servers[li].HTTPAddr()
	})
	c.waitConverged()
	checkStores(t, c, acked)
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	c := newTestCluster(t, 1, func(_ int, cfg *Config, _ []*Server) {
		cfg.Nodes = []events.NodeRegistered{{ID: "n1", CPUs: 4, MemoryBytes: 8 << 30, Drivers: map[string]string{"process": "1"}}}
	})
	_, s := c.waitLeader()
	cl, _ := api.NewClient(s.HTTPAddr())
	createGuests(t, cl, "g", 20)
	if _, err := cl.Tune(context.Background(), api.TuneGuest{Name: "g-3", Set: map[string]string{"cpu_shares": "500"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snap, err := s.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	store, err := OpenStore(filepath.Join(t.TempDir(), "events.db"), DefaultStoreConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f := newFSM(store, 10000, s.log)
	defer f.close()
	if err := f.Restore(sink.reader()); err != nil {
		t.Fatal(err)
	}
	// The state is what encodes; the derived indexes are rebuilt.
	want := snap.(*fsmSnapshot).state
	a, _ := json.Marshal(f.state)
	b, _ := json.Marshal(want)
	same := string(a) == string(b) && reflect.DeepEqual(f.state.Pending(), want.Pending())
	for id := range want.Nodes {
		same = same && reflect.DeepEqual(f.state.GuestsOn(id), want.GuestsOn(id))
	}
	if !same {
		t.Fatal("restored state differs from the state the snapshot was taken of")
	}
	// A fresh store restored past its end starts at the snapshot's index.
	if first, last := store.Bounds(); first != want.Index+1 || last != want.Index {
		t.Fatalf("store bounds after restore = %d..%d, want %d..%d", first, last, want.Index+1, want.Index)
	}
}

func TestIdempotentRequestID(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, _ := c.waitLeader()
	follower := c.servers[(li+1)%3]
	cl, _ := api.NewClient(follower.HTTPAddr())
	ctx := context.Background()
	body := api.CreateGuest{Name: "once", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}}
	var first, second api.WriteResult
	if err := cl.Do(ctx, "POST", "/v1/guests", "req-1", body, &first); err != nil {
		t.Fatal(err)
	}
	if err := cl.Do(ctx, "POST", "/v1/guests", "req-1", body, &second); err != nil {
		t.Fatalf("retry with the same request ID failed: %v", err)
	}
	if !reflect.DeepEqual(first, second) {
		t.Fatalf("retry answered %+v, first call %+v", second, first)
	}
	// The same body under a new request ID is a new request, refused.
	err := cl.Do(ctx, "POST", "/v1/guests", "req-2", body, &second)
	if !errors.Is(err, api.ErrExists) {
		t.Fatalf("new request for an existing name: %v", err)
	}
	gs, _ := cl.Guests(ctx)
	if len(gs) != 1 {
		t.Fatalf("%d guests, want 1", len(gs))
	}
}

type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }
func (m *memSink) reader() *readCloser {
	return &readCloser{bytes.NewReader(m.Bytes())}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
