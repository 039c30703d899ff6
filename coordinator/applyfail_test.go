package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestEventStoreWriteFailure breaks the leader's event store: the leader
// hands leadership away, writes go on through the other servers, the
// broken server refuses at once and says why, catches up by itself once
// its store takes writes again, and, when its store gave up, a restart
// rebuilds the store from raft.
func TestEventStoreWriteFailure(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, leader := c.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	create := func(addr, name string) (api.WriteResult, error) {
		t.Helper()
		cl, err := api.NewClient(addr)
		if err != nil {
			t.Fatal(err)
		}
		cl.Retry = 10 * time.Second
		return cl.CreateGuest(ctx, api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
	}
	if _, err := create(leader.HTTPAddr(), "before"); err != nil {
		t.Fatal(err)
	}
	_, storedBefore := leader.store.Bounds()

	fault := errors.New("injected: input/output error")
	leader.fsm.failAppends.Store(&fault)
	// This write commits in raft; the leader's store cannot take it.
	if _, err := create(leader.HTTPAddr(), "during"); err != nil && !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("the write that breaks the store: %v", err)
	}
	WaitFor(t, 10*time.Second, "the leader to mark its store broken", func() bool { return leader.fsm.broken() != nil })
	WaitFor(t, 10*time.Second, "another server to take the lead", func() bool {
		i, l := c.leader()
		return l != nil && i != li
	})

	// Writes go on through every other server, and are read back on each.
	var names []string
	for i, s := range c.servers {
		if i == li {
			continue
		}
		name := fmt.Sprintf("after-%s", s.ID())
		if _, err := create(s.HTTPAddr(), name); err != nil {
			t.Fatalf("write through %s after the leader's store broke: %v", s.ID(), err)
		}
		names = append(names, name)
	}
	for i, s := range c.servers {
		if i == li {
			continue
		}
		cl, _ := api.NewClient(s.HTTPAddr())
		for _, n := range append(names, "before", "during") {
			if _, err := cl.Guest(ctx, n); err != nil {
				t.Fatalf("read %s on %s: %v", n, s.ID(), err)
			}
		}
	}

	// The broken server refuses writes at once and says why.
	cl, _ := api.NewClient(leader.HTTPAddr())
	cl.Retry = 0
	began := time.Now()
	_, err := cl.CreateGuest(ctx, api.CreateGuest{Name: "refused", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "cannot write its event store") ||
		!strings.Contains(err.Error(), fault.Error()) || !strings.Contains(err.Error(), "retries") {
		t.Fatalf("write on the broken server: got %v, want unavailable saying its event store failed and that it retries", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("the broken server took %v to refuse a write", took)
	}
	// Waits for the store answer the reason at once instead of hanging.
	_, last := c.servers[(li+1)%3].store.Bounds()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	err = leader.WaitIndex(wctx, last)
	wcancel()
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "cannot write its event store") {
		t.Fatalf("WaitIndex on the broken server: got %v, want the store's failure", err)
	}
	// Reads refuse quickly too, with the reason.
	began = time.Now()
	if _, err := cl.Guests(ctx); err == nil {
		t.Fatal("a default read on the broken server succeeded; its store misses events")
	} else if took := time.Since(began); took > 2*time.Second || !strings.Contains(err.Error(), "cannot write its event store") {
		t.Fatalf("the broken server took %v to refuse a read, saying: %v", took, err)
	}
	if _, stored := leader.store.Bounds(); stored != storedBefore {
		t.Fatalf("the broken store went on from %d to %d", storedBefore, stored)
	}
	// No snapshot may let raft compact what the store still needs.
	if _, err := leader.fsm.Snapshot(); err == nil {
		t.Fatal("a broken store allowed a raft snapshot")
	}

	// Once the store takes writes again, the server catches up by itself.
	leader.fsm.failAppends.Store(nil)
	WaitFor(t, 10*time.Second, "the store to heal", func() bool { return leader.fsm.broken() == nil })
	c.waitConverged()
	sameStore(t, leader, c.servers[(li+1)%3])
	if _, err := create(leader.HTTPAddr(), "healed"); err != nil {
		t.Fatalf("write through the healed %s: %v", leader.ID(), err)
	}
	if _, err := cl.Guest(ctx, "healed"); err != nil {
		t.Fatalf("read on the healed %s: %v", leader.ID(), err)
	}

	// A store that fails for too long gives up; a restart replays raft
	// into it.
	leader.fsm.storeMu.Lock()
	leader.fsm.unstoredLimit = 0
	leader.fsm.storeMu.Unlock()
	leader.fsm.failAppends.Store(&fault)
	healthy := c.servers[(li+1)%3]
	if _, err := create(healthy.HTTPAddr(), "while-broken"); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, "the store to give up", func() bool { b := leader.fsm.broken(); return b != nil && b.final })
	leader.fsm.failAppends.Store(nil)
	if _, err := cl.CreateGuest(ctx, api.CreateGuest{Name: "refused", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); !errors.Is(err, api.ErrUnavailable) ||
		!strings.Contains(err.Error(), "restart it to rebuild the store from raft") || strings.Contains(err.Error(), "retries") {
		t.Fatalf("write on a server whose store gave up: got %v, want unavailable saying to restart it", err)
	}
	c.stops[li]()
	c.start(li)
	c.waitConverged()
	restarted := c.servers[li]
	sameStore(t, restarted, healthy)
	if restarted.fsm.broken() != nil {
		t.Fatal("the restarted server still reports a broken store")
	}
	cl, _ = api.NewClient(restarted.HTTPAddr())
	for _, n := range append(names, "before", "during", "healed", "while-broken") {
		if _, err := cl.Guest(ctx, n); err != nil {
			t.Fatalf("read %s on the restarted %s: %v", n, restarted.ID(), err)
		}
	}
	if _, err := create(restarted.HTTPAddr(), "after-restart"); err != nil {
		t.Fatalf("write through the restarted %s: %v", restarted.ID(), err)
	}
}

// sameStore fails the test unless a and b hold the same events.
func sameStore(t *testing.T, a, b *Server) {
	t.Helper()
	for _, s := range []*Server{a, b} {
		if err := s.waitStored(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.store.Read(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want, err := b.store.Read(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s's store holds %d events, %s's %d", a.ID(), len(got), b.ID(), len(want))
	}
	for i := range got {
		if got[i].Index != want[i].Index || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Fatalf("%s's store differs from %s's at index %d", a.ID(), b.ID(), want[i].Index)
		}
	}
}

// TestCrashWithStoreBehind stops a follower whose event store trails its
// state, as a crash between the commit and the store writer's
// transaction leaves it: raft replays the missing events into the store
// at the restart, and the server's store and history match the others'.
func TestCrashWithStoreBehind(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, leader := c.waitLeader()
	fi := (li + 1) % 3
	follower := c.servers[fi]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := api.NewClient(leader.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string) api.WriteResult {
		t.Helper()
		res, err := cl.CreateGuest(ctx, api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	create("before")
	c.waitConverged()
	_, stored := follower.store.Bounds()

	follower.fsm.holdWrites.Store(true)
	var last api.WriteResult
	for i := range 5 {
		last = create(fmt.Sprint("held-", i))
	}
	WaitFor(t, 10*time.Second, "the follower to apply what its store lacks", func() bool { return follower.AppliedIndex() >= last.Index })
	if _, now := follower.store.Bounds(); now != stored {
		t.Fatalf("the held store went on from %d to %d", stored, now)
	}
	c.stops[fi]() // the queued records are lost with the process
	create("while-down")
	c.start(fi)
	c.waitConverged()
	restarted := c.servers[fi]
	sameStore(t, restarted, leader)
	if _, got := restarted.store.Bounds(); got <= last.Index {
		t.Fatalf("the restarted store ends at %d, before %d", got, last.Index)
	}
	rcl, _ := api.NewClient(restarted.HTTPAddr())
	for i := range 5 {
		n := 0
		err := rcl.History(ctx, fmt.Sprint("held-", i), func(events.Event) error { n++; return nil })
		if err != nil || n == 0 {
			t.Fatalf("history of held-%d on the restarted server: %d events, %v", i, n, err)
		}
	}
}
