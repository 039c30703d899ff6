package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/cluster"
)

// lossyBus is a server's real NATS connection that loses what the server
// publishes while lose is set: the events a leader committed but never got
// out before it died.
type lossyBus struct {
	*bus.Conn
	lose atomic.Bool
}

func (b *lossyBus) Publish(subject string, index, prev uint64, data []byte) error {
	if b.lose.Load() {
		return nil
	}
	return b.Conn.Publish(subject, index, prev, data)
}

// natsCluster is three servers, each on its own embedded NATS server, the
// three NATS servers joined by routes, every server's bus a lossyBus.
type natsCluster struct {
	*testCluster
	nats  []*bus.Embedded
	buses []*lossyBus
}

func newNATSCluster(t *testing.T, tweak func(cfg *Config)) *natsCluster {
	const n = 3
	nc := &natsCluster{
		testCluster: &testCluster{t: t, dir: t.TempDir(), servers: make([]*Server, n), stops: make([]func(), n), cfgs: make([]Config, n)},
		nats:        make([]*bus.Embedded, n),
		buses:       make([]*lossyBus, n),
	}
	for i := range n {
		cfg := bus.EmbeddedConfig{Port: -1, ClusterPort: -1}
		if i > 0 {
			cfg.Routes = []string{nc.nats[0].ClusterURL()}
		}
		e, err := bus.StartEmbedded(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		nc.nats[i] = e
	}
	WaitFor(t, 10*time.Second, "NATS routes between all three", func() bool {
		for _, e := range nc.nats {
			if e.NumRoutes() < n-1 {
				return false
			}
		}
		return true
	})
	for i := range n {
		cfg := TestConfig(t, fmt.Sprintf("s%d", i+1), nc.dir)
		cfg.Bootstrap = i == 0
		if i > 0 {
			cfg.Join = []string{nc.servers[0].HTTPAddr()}
		}
		if tweak != nil {
			tweak(&cfg)
		}
		conn, err := bus.Dial(nc.nats[i].ClientURL(), "corral-server-"+cfg.ID)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		nc.buses[i] = &lossyBus{Conn: conn}
		s, stop := startServer(t, cfg, Deps{Bus: nc.buses[i]})
		nc.servers[i], nc.stops[i], nc.cfgs[i] = s, stop, cfg
		if i == 0 {
			<-s.Ready()
		}
	}
	WaitFor(t, 10*time.Second, "all servers to join", func() bool {
		for _, s := range nc.servers {
			select {
			case <-s.Ready():
			default:
				return false
			}
		}
		var ok bool
		nc.servers[0].fsm.read(func(st *cluster.State) { ok = len(st.Servers) == n })
		return ok && allVoters(nc.servers[0], n)
	})
	return nc
}

// indexCounter records the indexes a NATS subscriber receives.
type indexCounter struct {
	mu   sync.Mutex
	seen map[uint64]int
	gaps []api.PublishGap
}

func (c *indexCounter) add(m bus.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.Subject == bus.EventGapSubject {
		var g api.PublishGap
		json.Unmarshal(m.Data, &g)
		c.gaps = append(c.gaps, g)
		return
	}
	c.seen[m.Index]++
}

// missing returns the indexes from..to the subscriber has neither received
// nor been told are lost.
func (c *indexCounter) missing(from, to uint64) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for i := from; i <= to; i++ {
		if c.seen[i] > 0 || slices.ContainsFunc(c.gaps, func(g api.PublishGap) bool { return g.From <= i && i <= g.To }) {
			continue
		}
		out = append(out, i)
	}
	return out
}

// watchIndexes subscribes to subject on url until the test ends.
func watchIndexes(t *testing.T, url, subject string) *indexCounter {
	t.Helper()
	conn, err := bus.Dial(url, "test-subscriber")
	if err != nil {
		t.Fatal(err)
	}
	c := &indexCounter{seen: map[uint64]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		conn.Watch(ctx, subject, func() { close(ready) }, c.add)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	select {
	case <-ready:
	case <-done:
		t.Fatalf("subscribe to %s on %s failed", subject, url)
	}
	return c
}

// TestPublishResumesAfterLeaderChange stops the leader in the middle of a
// stream of writes after it committed events it never published: the new
// leader publishes them, so a NATS subscriber has every index.
func TestPublishResumesAfterLeaderChange(t *testing.T) {
	nc := newNATSCluster(t, nil)
	li, leader := nc.waitLeader()
	sub := (li + 1) % 3 // the subscriber's NATS survives the leader
	counter := watchIndexes(t, nc.nats[sub].ClientURL(), bus.EventPrefix+">")
	var from uint64
	leader.fsm.read(func(st *cluster.State) { from = st.Index })
	from++

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := api.NewClient(nc.addrs(-1))
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	var lastAcked atomic.Uint64
	werr := make(chan error, 1)
	wctx, stopWriting := context.WithCancel(ctx)
	go func() {
		for i := 0; wctx.Err() == nil; i++ {
			res, err := cl.CreateGuest(wctx, api.CreateGuest{Name: fmt.Sprintf("g%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
			if err != nil {
				if wctx.Err() == nil {
					werr <- err
				}
				break
			}
			acked.Add(1)
			raiseTo(&lastAcked, res.Index)
		}
		close(werr)
	}()
	waitAcked := func(n int64, what string) {
		t.Helper()
		target := acked.Load() + n
		WaitFor(t, 15*time.Second, what, func() bool { return acked.Load() >= target })
	}
	waitAcked(20, "20 writes through the first leader")
	// The leader goes on committing, but nothing it publishes gets out.
	nc.buses[li].lose.Store(true)
	waitAcked(20, "20 writes the leader commits but never publishes")
	nc.stops[li]()
	nc.nats[li].Close()
	WaitFor(t, 10*time.Second, "a new leader", func() bool {
		i, l := nc.leader()
		return l != nil && i != li
	})
	waitAcked(20, "20 writes through the new leader")
	stopWriting()
	if err := <-werr; err != nil {
		t.Fatalf("a write failed: %v", err)
	}
	_, newLeader := nc.leader()
	// The store writer runs behind the state machine: wait for it to hold
	// the last acknowledged write rather than read its end at once.
	var to uint64
	WaitFor(t, 10*time.Second, fmt.Sprintf("the new leader's store to hold the last acknowledged write %d", lastAcked.Load()), func() bool {
		_, to = newLeader.store.Bounds()
		return to >= lastAcked.Load()
	})
	WaitFor(t, 10*time.Second, fmt.Sprintf("the subscriber to have every index %d to %d", from, to), func() bool {
		return len(counter.missing(from, to)) == 0
	})
	counter.mu.Lock()
	defer counter.mu.Unlock()
	if len(counter.gaps) > 0 {
		t.Fatalf("gap notices %+v, though the new leader's store holds every event", counter.gaps)
	}
	t.Logf("subscriber has every index %d to %d (%d acknowledged writes)", from, to, acked.Load())
}

// TestPublishResumesNodeUpdates checks that the new leader also sends a
// node the updates the old leader committed but never got out.
func TestPublishResumesNodeUpdates(t *testing.T) {
	nc := newNATSCluster(t, nil)
	li, leader := nc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := api.NewClient(nc.addrs(-1))
	if err != nil {
		t.Fatal(err)
	}
	node := agentNode("n1")
	if _, err := cl.RegisterNode(ctx, node, "secret-n1"); err != nil {
		t.Fatal(err)
	}
	sub := (li + 1) % 3
	updates := watchIndexes(t, nc.nats[sub].ClientURL(), bus.NodeSubject("n1"))
	var from uint64
	leader.fsm.read(func(st *cluster.State) { from = st.Index })

	nc.buses[li].lose.Store(true)
	var last uint64
	const guests = 3 // n1 has 4 CPUs, a guest takes one
	for i := range guests {
		res, err := cl.CreateGuest(ctx, api.CreateGuest{Name: fmt.Sprintf("p%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}})
		if err != nil {
			t.Fatal(err)
		}
		last = res.Index
	}
	// Wait until every guest is placed on n1, by the old leader. The
	// routes come from the state machine, which may run ahead of the store
	// the store writer fills, so the range ends at the state's own index.
	var to uint64
	WaitFor(t, 10*time.Second, "the guests to be placed on n1", func() bool {
		placed := 0
		leader.fsm.read(func(st *cluster.State) {
			to = st.Index
			for _, g := range st.Guests {
				if g.Node == "n1" {
					placed++
				}
			}
		})
		return placed == guests
	})
	var want []uint64
	for idx := from + 1; idx <= to; idx++ {
		if _, routes, ok := leader.fsm.routesAt(idx); ok && slices.ContainsFunc(routes, func(r cluster.Route) bool { return r.Node == "n1" }) {
			want = append(want, idx)
		}
	}
	if len(want) < guests || want[len(want)-1] < last {
		t.Fatalf("updates for n1 at %v, want at least the %d placements up to %d", want, guests, last)
	}
	nc.stops[li]()
	nc.nats[li].Close()
	WaitFor(t, 10*time.Second, "n1 to receive every update the old leader never sent", func() bool {
		updates.mu.Lock()
		defer updates.mu.Unlock()
		for _, idx := range want {
			if updates.seen[idx] == 0 {
				return false
			}
		}
		return true
	})
}

// TestPublishAnnouncesGap: when the events the old leader never published
// are no longer in the new leader's store, the new leader says so on
// bus.EventGapSubject instead of leaving subscribers to guess.
func TestPublishAnnouncesGap(t *testing.T) {
	nc := newNATSCluster(t, func(cfg *Config) { cfg.Store = StoreConfig{MaxEvents: 5, CheckpointEvery: 5} })
	_, leader := nc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := api.NewClient(nc.addrs(-1))
	if err != nil {
		t.Fatal(err)
	}
	// Whoever leads while these commit (leadership may move under load)
	// gets none of them out.
	for _, b := range nc.buses {
		b.lose.Store(true)
	}
	nc.waitConverged()
	_, from := leader.store.Bounds()
	from++ // the first index nobody publishes
	for i := range 30 {
		if _, err := cl.CreateGuest(ctx, api.CreateGuest{Name: fmt.Sprintf("g%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); err != nil {
			t.Fatal(err)
		}
	}
	nc.waitConverged()
	li, _ := nc.waitLeader()
	counter := watchIndexes(t, nc.nats[(li+1)%3].ClientURL(), bus.EventPrefix+">")
	// Retention on the followers drops what was never published.
	for i, s := range nc.servers {
		if i == li {
			continue
		}
		WaitFor(t, 10*time.Second, "retention on "+s.ID(), func() bool {
			if _, err := s.store.Trim(time.Now()); err != nil {
				t.Fatal(err)
			}
			first, _ := s.store.Bounds()
			return first > from+1
		})
	}
	nc.stops[li]()
	nc.nats[li].Close()
	for _, b := range nc.buses {
		b.lose.Store(false)
	}
	var newLeader *Server
	WaitFor(t, 10*time.Second, "a new leader", func() bool {
		i, l := nc.leader()
		newLeader = l
		return l != nil && i != li
	})
	first, _ := newLeader.store.Bounds()
	if _, err := cl.CreateGuest(ctx, api.CreateGuest{Name: "after", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); err != nil {
		t.Fatal(err)
	}
	_, to := newLeader.store.Bounds()
	WaitFor(t, 10*time.Second, fmt.Sprintf("every index %d to %d, or a notice that it is lost", from, to), func() bool {
		return len(counter.missing(from, to)) == 0
	})
	counter.mu.Lock()
	defer counter.mu.Unlock()
	if len(counter.gaps) == 0 || counter.gaps[0].To != first-1 || counter.gaps[0].Reason == "" {
		t.Fatalf("gap notices %+v, want one ending at %d (the new leader's store starts at %d)", counter.gaps, first-1, first)
	}
	for i := first; i <= to; i++ {
		if counter.seen[i] == 0 {
			t.Fatalf("index %d, retained by the new leader, was not published", i)
		}
	}
}

// TestPublishResumesAfterRestart: a lone server that committed events it
// never got out before it stopped publishes them when it comes back, from
// the mark it keeps in its data directory.
func TestPublishResumesAfterRestart(t *testing.T) {
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	counter := watchIndexes(t, ns.ClientURL(), bus.EventPrefix+">")
	cfg := TestConfig(t, "s1", t.TempDir())
	start := func() (*Server, *lossyBus, func()) {
		conn, err := bus.Dial(ns.ClientURL(), "corral-server-s1")
		if err != nil {
			t.Fatal(err)
		}
		b := &lossyBus{Conn: conn}
		s, err := New(cfg, Deps{Bus: b})
		if err != nil {
			t.Fatal(err)
		}
		cfg.RaftAddr = s.RaftAddr() // its raft configuration names this address
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.Run(ctx)
		}()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				<-done
				s.Close()
				conn.Close()
			})
		}
		t.Cleanup(stop)
		<-s.Ready()
		return s, b, stop
	}
	s, b, stop := start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	write := func(s *Server, name string) uint64 {
		cl, _ := api.NewClient(s.HTTPAddr())
		res, err := cl.CreateGuest(ctx, api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
		if err != nil {
			t.Fatal(err)
		}
		return res.Index
	}
	first := write(s, "a0")
	for i := 1; i < 5; i++ {
		write(s, fmt.Sprintf("a%d", i))
	}
	_, last := s.store.Bounds()
	WaitFor(t, 10*time.Second, "the first events to be published", func() bool { return len(counter.missing(first, last)) == 0 })
	b.lose.Store(true)
	for i := range 5 {
		write(s, fmt.Sprintf("b%d", i))
	}
	stop()

	s, _, _ = start()
	to := write(s, "c0")
	WaitFor(t, 10*time.Second, fmt.Sprintf("every index %d to %d after the restart", first, to), func() bool {
		return len(counter.missing(first, to)) == 0
	})
}

// TestPublishedMarkFollows: every server's mark file catches up with the
// last batch the leader published within about publishedSave, even when
// the marks came faster than it saves and then stopped.
func TestPublishedMarkFollows(t *testing.T) {
	nc := newNATSCluster(t, nil)
	nc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := api.NewClient(nc.addrs(-1))
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 5 {
		res, err := cl.CreateGuest(ctx, api.CreateGuest{Name: fmt.Sprintf("m%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
		if err != nil {
			t.Fatal(err)
		}
		last = res.Index
	}
	for i, cfg := range nc.cfgs {
		path := filepath.Join(cfg.DataDir, publishedFile)
		var got string
		WaitFor(t, 10*time.Second, fmt.Sprintf("server %d's mark file to reach %d", i+1, last), func() bool {
			b, _ := os.ReadFile(path)
			got = strings.TrimSpace(string(b))
			n, err := strconv.ParseUint(got, 10, 64)
			return err == nil && n >= last
		})
	}
}
