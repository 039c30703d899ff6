package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// fakeCoordinator is an in-memory coordinator for one node: it holds the
// node's desired state, applies the agent's reports to it as the state
// machine would, records them, and publishes every change as an event
// with a dense index.
type fakeCoordinator struct {
	node string

	mu         sync.Mutex
	index      uint64
	guests     map[string]*DesiredGuest
	reports    []Report
	registered []events.NodeRegistered
	secret     string
	hbFail     bool
	watchers   map[int]chan events.Event
	nextW      int
}

var errUnreachable = errors.New("fake: leader unreachable")

func newFakeCoordinator(node string) *fakeCoordinator {
	return &fakeCoordinator{node: node, guests: map[string]*DesiredGuest{}, watchers: map[int]chan events.Event{}}
}

// commit appends an event for guest; mu must be held.
func (f *fakeCoordinator) commit(guest string, p events.Payload) uint64 {
	f.index++
	e := events.New(time.Now(), "fake", p)
	e.Index, e.Guest, e.Node = f.index, guest, f.node
	for _, w := range f.watchers {
		select {
		case w <- e:
		default: // NATS may drop: the agent must cope
		}
	}
	return f.index
}

func (f *fakeCoordinator) Register(ctx context.Context, n events.NodeRegistered, secret string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.secret != "" && f.secret != secret {
		return fmt.Errorf("fake: node %s registered with another secret", n.ID)
	}
	f.secret = secret
	f.registered = append(f.registered, n)
	f.commit("", &n)
	return nil
}

func (f *fakeCoordinator) Desired(ctx context.Context, node string) (Desired, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hbFail {
		return Desired{}, errUnreachable
	}
	d := Desired{Index: f.index}
	for _, name := range slices.Sorted(maps.Keys(f.guests)) {
		g := *f.guests[name]
		g.Tuning = maps.Clone(g.Tuning)
		d.Guests = append(d.Guests, g)
	}
	return d, nil
}

func (f *fakeCoordinator) Report(ctx context.Context, node, secret string, items []Report) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hbFail {
		return 0, errUnreachable
	}
	if secret != f.secret {
		return 0, fmt.Errorf("%w: wrong secret", ErrRefused)
	}
	for _, it := range items {
		g := f.guests[it.Guest]
		switch p := it.Payload.(type) {
		case *events.GuestStarted:
			if g == nil || g.Generation != p.Generation {
				return 0, fmt.Errorf("%w: stale start", ErrRefused)
			}
			g.Status = StatusRunning
		case *events.GuestExited:
			if g == nil || g.Generation != p.Generation {
				return 0, fmt.Errorf("%w: stale exit", ErrRefused)
			}
			g.Status = StatusExited
			if p.Error != "" {
				g.Status = StatusFailed
			}
		}
		f.reports = append(f.reports, it)
		f.commit(it.Guest, it.Payload)
	}
	return f.index, nil
}

func (f *fakeCoordinator) Heartbeat(ctx context.Context, node, secret string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hbFail {
		return 0, errUnreachable
	}
	return f.index, nil
}

func (f *fakeCoordinator) Watch(ctx context.Context, fn func(events.Event)) error {
	ch := make(chan events.Event, 64)
	f.mu.Lock()
	id := f.nextW
	f.nextW++
	f.watchers[id] = ch
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.watchers, id)
		f.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-ch:
			fn(e)
		}
	}
}

// place defines and places a guest on the node, desired running.
func (f *fakeCoordinator) place(def events.GuestDefined) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	gen := f.commit(def.Name, &events.GuestPlaced{Node: f.node})
	f.guests[def.Name] = &DesiredGuest{Name: def.Name, Generation: gen, Desired: DesiredRunning, Status: StatusPlaced, Definition: def}
	return gen
}

func (f *fakeCoordinator) setDesired(name, desired string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.guests[name]
	if desired == DesiredRunning && (g.Status == StatusExited || g.Status == StatusFailed) {
		g.Status = StatusPlaced
	}
	g.Desired = desired
	if desired == DesiredRunning {
		f.commit(name, &events.GuestStartRequested{})
	} else {
		f.commit(name, &events.GuestStopRequested{})
	}
}

func (f *fakeCoordinator) undefine(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.guests, name)
	f.commit(name, &events.GuestUndefined{})
}

func (f *fakeCoordinator) tune(name, knob, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.guests[name]
	if g.Tuning == nil {
		g.Tuning = map[string]string{}
	}
	g.Tuning[knob] = value
	f.commit(name, &events.GuestTuned{Knob: knob, New: value, Live: true})
}

func (f *fakeCoordinator) setUnreachable(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hbFail = down
}

func (f *fakeCoordinator) status(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if g := f.guests[name]; g != nil {
		return g.Status
	}
	return ""
}

// reportsOf returns the reports of type T about guest ("" for node-wide).
func reportsOf[T events.Payload](f *fakeCoordinator, guest string) []T {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []T
	for _, r := range f.reports {
		if p, ok := r.Payload.(T); ok && r.Guest == guest {
			out = append(out, p)
		}
	}
	return out
}

func (f *fakeCoordinator) reportCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reports)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-time.After(5 * time.Millisecond) // poll interval
	}
}

// waitReport waits for the first report of type T about guest that ok
// accepts (nil: any).
func waitReport[T events.Payload](t testing.TB, f *fakeCoordinator, guest string, ok func(T) bool) T {
	t.Helper()
	var got T
	waitFor(t, fmt.Sprintf("a %T report about %q", got, guest), 15*time.Second, func() bool {
		for _, p := range reportsOf[T](f, guest) {
			if ok == nil || ok(p) {
				got = p
				return true
			}
		}
		return false
	})
	return got
}
