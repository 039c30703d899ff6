package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// logRecorder is a slog handler that keeps every record's message and
// its "id" attribute.
type logRecorder struct {
	mu    *sync.Mutex
	lines *[]string // "message id=ID"
	attrs []slog.Attr
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: &sync.Mutex{}, lines: new([]string)}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "id" {
			line += " id=" + a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	*h.lines = append(*h.lines, line)
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clip(h.attrs), as...)
	return &c
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// has reports whether a line starting with prefix and naming id was logged.
func (h *logRecorder) has(prefix, id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.ContainsFunc(*h.lines, func(l string) bool {
		return strings.HasPrefix(l, prefix) && strings.HasSuffix(l, " id="+id)
	})
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func members(t *testing.T, c *api.Client) map[string]api.Member {
	t.Helper()
	ms, err := c.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]api.Member{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

func suffrages(t *testing.T, c *api.Client) map[string]string {
	t.Helper()
	out := map[string]string{}
	for id, m := range members(t, c) {
		out[id] = m.Suffrage
	}
	return out
}

func joinServer(ctx context.Context, c *api.Client, m events.ServerRegistered) error {
	return c.Do(ctx, "POST", "/v1/cluster/join", "", m, nil)
}

// writeFor creates guests through c for at least d (several membership
// checks), each of which must commit, while leader keeps leading.
func writeFor(t *testing.T, c *api.Client, leader *Server, prefix string, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	end := time.Now().Add(d)
	for i := 0; i == 0 || time.Now().Before(end); i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := c.CreateGuest(ctx, api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		if !leader.IsLeader() {
			t.Fatalf("%s lost its leadership after %d writes", leader.ID(), i+1)
		}
	}
}

func TestMembershipDeadJoinKeepsLeader(t *testing.T) {
	logs := newLogRecorder()
	cfg := TestConfig(t, "s1", t.TempDir())
	cfg.Logger = slog.New(logs)
	s1, _ := startServer(t, cfg, Deps{})
	<-s1.Ready()
	c, err := api.NewClient(s1.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	c.Retry = 5 * time.Second
	ctx := context.Background()

	// s8 is dead altogether; s9's raft is dead and its HTTP address is
	// s1's, which answers as s1, not s9.
	s8 := events.ServerRegistered{ID: "s8", RaftAddr: deadAddr(t), HTTPAddr: deadAddr(t)}
	s9 := events.ServerRegistered{ID: "s9", RaftAddr: deadAddr(t), HTTPAddr: s1.HTTPAddr()}
	for _, m := range []events.ServerRegistered{s8, s9} {
		if err := joinServer(ctx, c, m); err != nil {
			t.Fatalf("join %s: %v", m.ID, err)
		}
	}
	want := map[string]string{"s1": "voter", "s8": "nonvoter", "s9": "nonvoter"}
	if got := suffrages(t, c); !maps.Equal(got, want) {
		t.Fatalf("members after the joins: %v, want %v", got, want)
	}
	for _, id := range []string{"s8", "s9"} {
		WaitFor(t, 5*time.Second, "the leader to find "+id+" not caught up", func() bool {
			return logs.has("non-voter is not caught up", id)
		})
	}
	writeFor(t, c, s1, "w", 6*membershipCheck)
	if got := suffrages(t, c); !maps.Equal(got, want) {
		t.Fatalf("members after writing for %v: %v, want %v: a server that never caught up was promoted", 6*membershipCheck, got, want)
	}

	// Joins again: the same address is harmless, another is refused.
	if err := joinServer(ctx, c, s8); err != nil {
		t.Fatalf("join s8 again: %v", err)
	}
	if err := joinServer(ctx, c, events.ServerRegistered{ID: "s1", RaftAddr: s1.RaftAddr(), HTTPAddr: s1.HTTPAddr()}); err != nil {
		t.Fatalf("join s1, a voter, with its own address: %v", err)
	}
	moved := s8
	moved.RaftAddr = deadAddr(t)
	if err := joinServer(ctx, c, moved); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "remove-peer s8") {
		t.Fatalf("join s8 at another address: %v, want a conflict that says to remove it first", err)
	}
	taken := events.ServerRegistered{ID: "s7", RaftAddr: s8.RaftAddr, HTTPAddr: deadAddr(t)}
	if err := joinServer(ctx, c, taken); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("join s7 at s8's raft address: %v, want a conflict", err)
	}
	for _, bad := range []events.ServerRegistered{
		{ID: "s6", RaftAddr: "no-port", HTTPAddr: deadAddr(t)},
		{ID: "s6", RaftAddr: deadAddr(t), HTTPAddr: "ftp://x:1"},
		{ID: "s6", RaftAddr: deadAddr(t) + strings.Repeat("0", 300), HTTPAddr: deadAddr(t)},
		{ID: "../s6", RaftAddr: deadAddr(t), HTTPAddr: deadAddr(t)},
	} {
		if err := joinServer(ctx, c, bad); !errors.Is(err, events.ErrInvalid) {
			t.Fatalf("join %+v: %v, want invalid", bad, err)
		}
	}
	if got := suffrages(t, c); !maps.Equal(got, want) {
		t.Fatalf("members after refused joins: %v, want %v", got, want)
	}

	// remove-peer, through the API.
	if err := c.RemovePeer(ctx, "s8"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePeer(ctx, "s8"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("remove s8 again: %v, want not found", err)
	}
	if err := c.RemovePeer(ctx, "s1"); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "transfer leadership first") {
		t.Fatalf("remove the leader: %v, want a conflict saying to transfer leadership first", err)
	}
	var raw map[string]any
	err = c.Do(ctx, "POST", "/v1/cluster/remove-peer", "", map[string]string{"id": "s9", "extra": "x"}, &raw)
	if !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("remove-peer with an unknown field: %v, want invalid", err)
	}
	if err := c.Do(ctx, "POST", "/v1/cluster/remove-peer", "", map[string]string{"id": "S 9"}, &raw); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("remove-peer of a bad ID: %v, want invalid", err)
	}
	if err := c.RemovePeer(ctx, "s9"); err != nil {
		t.Fatal(err)
	}
	if got, want := suffrages(t, c), map[string]string{"s1": "voter"}; !maps.Equal(got, want) {
		t.Fatalf("members after removing: %v, want %v", got, want)
	}
	if err := s1.removePeer(ctx, "s1"); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("remove the last voter: %v, want a conflict", err)
	}
	writeFor(t, c, s1, "after", 0)
}

// newMemberCluster starts s1 bootstrapped and n-1 servers joining it, and
// waits until all are voters. tweak, when given, changes each
// configuration.
func newMemberCluster(t *testing.T, n int, logs *logRecorder, tweak func(*Config)) ([]*Server, []func()) {
	t.Helper()
	dir := t.TempDir()
	servers, stops := make([]*Server, n), make([]func(), n)
	for i := range n {
		cfg := TestConfig(t, fmt.Sprintf("s%d", i+1), dir)
		cfg.Logger = slog.New(logs)
		cfg.Bootstrap = i == 0
		if i > 0 {
			cfg.Join = []string{servers[0].HTTPAddr()}
		}
		if tweak != nil {
			tweak(&cfg)
		}
		servers[i], stops[i] = startServer(t, cfg, Deps{})
		if i == 0 {
			<-servers[0].Ready()
		}
	}
	WaitFor(t, 10*time.Second, "every server to be a voter", func() bool { return allVoters(servers[0], n) })
	return servers, stops
}

func TestMembershipJoinPromotes(t *testing.T) {
	logs := newLogRecorder()
	servers, _ := newMemberCluster(t, 3, logs, nil)
	for _, id := range []string{"s2", "s3"} {
		if !logs.has("server joined as a non-voter", id) {
			t.Fatalf("%s became a voter without joining as a non-voter", id)
		}
		// The leader logs once AddVoter returned, after the configuration
		// changed.
		WaitFor(t, 5*time.Second, "the leader to log "+id+"'s promotion", func() bool {
			return logs.has("promoted server to voter", id)
		})
	}
	// The promoted servers take part: a write through s3 is forwarded,
	// committed and applied everywhere.
	c, err := api.NewClient(servers[2].HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.CreateGuest(context.Background(), api.CreateGuest{Name: "web", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, "the write on every server", func() bool {
		for _, s := range servers {
			if _, last := s.store.Bounds(); last < res.Index {
				return false
			}
		}
		return true
	})
}

// Over mutual TLS, the joins, the leader's status requests and raft
// itself all go through the servers' certificates.
func TestMembershipJoinPromotesOverTLS(t *testing.T) {
	ids := []pki.Identity{{Role: pki.RoleServer, Name: "s1"}, {Role: pki.RoleServer, Name: "s2"}, {Role: pki.RoleServer, Name: "s3"}}
	files, err := pki.EnsureDir(t.TempDir(), ids...)
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogRecorder()
	servers, _ := newMemberCluster(t, 3, logs, func(cfg *Config) {
		l, err := files[pki.Identity{Role: pki.RoleServer, Name: cfg.ID}].Load()
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS, cfg.Insecure = l, false
	})
	s1, err := files[ids[0]].Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.RaftAddr(), s1.DialConfig())
		if err != nil {
			t.Fatalf("%s: raft does not speak TLS with a server certificate: %v", s.ID(), err)
		}
		c.Close()
	}
	for _, id := range []string{"s2", "s3"} {
		WaitFor(t, 5*time.Second, "the leader to log "+id+"'s promotion", func() bool {
			return logs.has("promoted server to voter", id)
		})
	}
}

func TestMembershipDeadJoinsOnThree(t *testing.T) {
	logs := newLogRecorder()
	servers, stops := newMemberCluster(t, 3, logs, nil)
	var leader *Server
	var follower int
	WaitFor(t, 5*time.Second, "a leader", func() bool {
		for i, s := range servers {
			if s.IsLeader() {
				leader = s
				follower = (i + 1) % len(servers)
				return true
			}
		}
		return false
	})
	// Joins go through a follower, which forwards them to the leader.
	fc, err := api.NewClient(servers[follower].HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	lc, err := api.NewClient(leader.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dead := []string{"d1", "d2", "d3"}
	for _, id := range dead {
		if err := joinServer(ctx, fc, events.ServerRegistered{ID: id, RaftAddr: deadAddr(t), HTTPAddr: deadAddr(t)}); err != nil {
			t.Fatalf("join %s: %v", id, err)
		}
	}
	for _, id := range dead {
		WaitFor(t, 5*time.Second, "the leader to find "+id+" not caught up", func() bool {
			return logs.has("non-voter is not caught up", id)
		})
	}
	writeFor(t, lc, leader, "w", 6*membershipCheck)
	want := map[string]string{"s1": "voter", "s2": "voter", "s3": "voter", "d1": "nonvoter", "d2": "nonvoter", "d3": "nonvoter"}
	if got := suffrages(t, lc); !maps.Equal(got, want) {
		t.Fatalf("members: %v, want %v", got, want)
	}

	// Had the dead joins counted, six voters would need four for quorum;
	// with one real server stopped, two of three still commit.
	var stopped int
	for i, s := range servers {
		if s != leader && i != follower {
			stopped = i
		}
	}
	stops[stopped]()
	writeFor(t, lc, leader, "two-of-three", 0)

	// remove-peer through the follower is forwarded to the leader.
	for _, id := range dead {
		if err := fc.RemovePeer(ctx, id); err != nil {
			t.Fatalf("remove %s through %s: %v", id, servers[follower].ID(), err)
		}
	}
	if got := suffrages(t, lc); len(got) != 3 || got["d1"] != "" {
		t.Fatalf("members after removing the dead: %v", got)
	}
}

func TestMembershipPromotion(t *testing.T) {
	st := func(id string, applied uint64) *api.RaftStatus {
		return &api.RaftStatus{ID: id, State: "follower", Leader: "s1", AppliedIndex: applied, LastContactMs: 10}
	}
	p := newPromotion("s1", time.Second)
	round := func(commit uint64, cs ...check) []decision {
		return p.round(cs, commit)
	}
	// Caught up twice in a row: promoted at the second round.
	if d := round(100, check{ID: "s2", Status: st("s2", 90), LeaderLast: 100}); d[0] != decideWait {
		t.Fatalf("first round: %v, want wait", d)
	}
	if d := round(100, check{ID: "s2", Status: st("s2", 95), LeaderLast: 100}); d[0] != decidePromote {
		t.Fatalf("second round: %v, want promote", d)
	}
	// Behind by more than promoteLag but past the previous round's
	// commit index counts as caught up.
	p = newPromotion("s1", time.Second)
	round(1000, check{ID: "s2", Status: st("s2", 10), LeaderLast: 1000})
	if d := round(5000, check{ID: "s2", Status: st("s2", 1000), LeaderLast: 5000}); d[0] != decideWait {
		t.Fatalf("at the previous commit index after a lagging round: %v, want wait", d)
	}
	if d := round(9000, check{ID: "s2", Status: st("s2", 5000), LeaderLast: 9000}); d[0] != decidePromote {
		t.Fatalf("at the previous commit index twice: %v, want promote", d)
	}

	// A failed check in between starts the count again.
	p = newPromotion("s1", time.Second)
	round(10, check{ID: "s2", Status: st("s2", 10), LeaderLast: 10})
	if d := round(10, check{ID: "s2", Err: errors.New("connection refused"), LeaderLast: 10}); d[0] != decideNotReady {
		t.Fatalf("unreachable: %v, want not ready", d)
	}
	if d := round(10, check{ID: "s2", Err: errors.New("connection refused again"), LeaderLast: 10}); d[0] != decideWait {
		t.Fatalf("unreachable again: %v, want wait (said once)", d)
	}
	round(10, check{ID: "s2", Status: st("s2", 10), LeaderLast: 10})
	if d := round(10, check{ID: "s2", Status: st("s2", 10), LeaderLast: 10}); d[0] != decidePromote {
		t.Fatalf("back and caught up twice: %v, want promote", d)
	}

	// Never promoted, however many rounds.
	for _, tc := range []struct {
		name string
		c    check
		why  string
	}{
		{"unreachable", check{ID: "s2", Err: errors.New("refused"), LeaderLast: 10}, "unreachable"},
		{"another server answers", check{ID: "s2", Status: st("s1", 10), LeaderLast: 10}, "another server answers"},
		{"follows another leader", check{ID: "s2", Status: &api.RaftStatus{ID: "s2", Leader: "s3", AppliedIndex: 10, LastContactMs: 1}, LeaderLast: 10}, "not following"},
		{"never contacted", check{ID: "s2", Status: &api.RaftStatus{ID: "s2", Leader: "s1", AppliedIndex: 10, LastContactMs: -1}, LeaderLast: 10}, "no contact"},
		{"stale contact", check{ID: "s2", Status: &api.RaftStatus{ID: "s2", Leader: "s1", AppliedIndex: 10, LastContactMs: 5000}, LeaderLast: 10}, "no recent contact"},
		{"behind", check{ID: "s2", Status: st("s2", 10), LeaderLast: 10 + promoteLag + 1}, "behind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPromotion("s1", time.Second)
			for i := range 5 {
				cs := []check{tc.c}
				d := p.round(cs, tc.c.LeaderLast+uint64(i)*100)
				if d[0] == decidePromote {
					t.Fatalf("round %d: promoted", i)
				}
				if !strings.HasPrefix(cs[0].reason, tc.why) {
					t.Fatalf("round %d: reason %q, want it to start with %q", i, cs[0].reason, tc.why)
				}
			}
		})
	}

	// A server that left the configuration is forgotten.
	p = newPromotion("s1", time.Second)
	round(10, check{ID: "s2", Status: st("s2", 10), LeaderLast: 10})
	round(10)
	if d := round(10, check{ID: "s2", Status: st("s2", 10), LeaderLast: 10}); d[0] != decideWait {
		t.Fatalf("back after leaving: %v, want wait (counted again from one)", d)
	}
}

// allVoters reports whether s's raft configuration holds n servers, all
// voters: a joining server is a non-voter until the leader promotes it,
// and a test that stops servers must wait for that.
func allVoters(s *Server, n int) bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil || len(f.Configuration().Servers) != n {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			return false
		}
	}
	return true
}
