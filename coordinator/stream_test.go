package coordinator

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
)

func collect(t *testing.T, cl *api.Client, q api.EventQuery) []events.Event {
	t.Helper()
	var out []events.Event
	if err := cl.Events(context.Background(), q, func(e events.Event) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStreamResumeOnAnotherServer(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, _ := c.waitLeader()
	cl, _ := api.NewClient(c.servers[li].HTTPAddr())
	createGuests(t, cl, "g", 30)
	last := c.servers[li].AppliedIndex() // a stream waits for the store to hold it
	other := c.servers[(li+1)%3]
	WaitFor(t, 5*time.Second, "follower to catch up", func() bool { _, l := other.store.Bounds(); return l >= last })

	all := collect(t, cl, api.EventQuery{})
	if uint64(len(all)) != last {
		t.Fatalf("got %d events from the leader, want %d", len(all), last)
	}
	// Read half from the leader, resume from the other server.
	mid := all[len(all)/2].Index
	ocl, _ := api.NewClient(other.HTTPAddr())
	rest := collect(t, ocl, api.EventQuery{Since: mid})
	if len(rest) != len(all)-len(all)/2-1 || rest[0].Index != mid+1 {
		t.Fatalf("resume after %d on %s gave %d events starting at %d", mid, other.ID(), len(rest), rest[0].Index)
	}
	for i, e := range rest {
		if e.Index != all[len(all)/2+1+i].Index || e.Guest != all[len(all)/2+1+i].Guest {
			t.Fatalf("event %d differs between servers", e.Index)
		}
	}
	// Filters.
	defs := collect(t, ocl, api.EventQuery{Types: []string{"guest.defined"}, Guest: "g-7"})
	if len(defs) != 1 || defs[0].Guest != "g-7" {
		t.Fatalf("filtered stream gave %v", defs)
	}
}

func TestStreamGoneAfterRetention(t *testing.T) {
	c := newTestCluster(t, 1, func(_ int, cfg *Config, _ []*Server) {
		cfg.Store = StoreConfig{MaxEvents: 10, CheckpointEvery: 5}
	})
	_, s := c.waitLeader()
	cl, _ := api.NewClient(s.HTTPAddr())
	createGuests(t, cl, "g", 30)
	// Checkpoints are written in the background; retention trims once one
	// exists past what it may drop.
	WaitFor(t, 5*time.Second, "retention to trim", func() bool {
		n, err := s.store.Trim(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	first, last := s.store.Bounds()
	if last-first+1 < 10 {
		t.Fatalf("retention kept %d events, want at least 10", last-first+1)
	}
	resp, err := http.Get("http://" + s.HTTPAddr() + "/v1/events?since=0")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), `"first_index"`) {
		t.Fatalf("since=0 after retention: %d %s", resp.StatusCode, body)
	}
	err = cl.Events(context.Background(), api.EventQuery{Since: 0}, func(events.Event) error { return nil })
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Code != api.CodeGone || ae.FirstIndex != first {
		t.Fatalf("client got %v, want gone with first index %d", err, first)
	}
	// Resuming exactly at the first retained index works.
	got := collect(t, cl, api.EventQuery{Since: first - 1})
	if len(got) != int(last-first+1) || got[0].Index != first {
		t.Fatalf("resume at first retained gave %d events", len(got))
	}
	// State at a retained index rebuilds; before it is gone.
	if _, err := s.StateAt(last - 1); err != nil {
		t.Fatalf("state at %d: %v", last-1, err)
	}
	if _, err := s.StateAt(first - 2); !errors.Is(err, api.ErrGone) {
		t.Fatalf("state before retention: %v", err)
	}
}

func TestFollowAcrossLeaderChange(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, _ := c.waitLeader()
	// Follow through the leader first in the address list, so that killing
	// it forces the client over to another server mid-stream.
	order := c.servers[li].HTTPAddr() + "," + c.addrs(li)
	fcl, _ := api.NewClient(order)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var seen []uint64
	done := make(chan error, 1)
	go func() {
		done <- fcl.Events(ctx, api.EventQuery{Follow: true}, func(e events.Event) error {
			mu.Lock()
			seen = append(seen, e.Index)
			mu.Unlock()
			return nil
		})
	}()
	wcl, _ := api.NewClient(c.addrs(-1))
	createGuests(t, wcl, "a", 20)
	WaitFor(t, 5*time.Second, "follower to see the first events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= 20
	})
	c.stops[li]()
	c.servers[li] = nil
	_, nl := c.waitLeader()
	wcl2, _ := api.NewClient(c.addrs(-1))
	createGuests(t, wcl2, "b", 20)
	_, last := nl.store.Bounds()
	WaitFor(t, 10*time.Second, "follower to see every event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) > 0 && seen[len(seen)-1] >= last
	})
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for i, idx := range seen {
		if idx != uint64(i+1) {
			t.Fatalf("event %d arrived as index %d: gap or duplicate", i+1, idx)
		}
	}
}

func TestEventsPublishedOnNATS(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	_, s := c.waitLeader()
	nc, err := bus.Dial(s.NATSURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ch, stop, err := nc.Subscribe(bus.EventPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cl, _ := api.NewClient(s.HTTPAddr())
	res, err := cl.CreateGuest(context.Background(), api.CreateGuest{Name: "pub", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-ch:
			if m.Index != res.Index {
				continue
			}
			e, err := events.Unmarshal(m.Data)
			if err != nil || e.Guest != "pub" || m.Subject != "corral.events.guest.defined" {
				t.Fatalf("published %s %v %v", m.Subject, e, err)
			}
			return
		case <-deadline:
			t.Fatal("guest.defined was not published on NATS")
		}
	}
}

func TestBadInputAppendsNothing(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	_, s := c.waitLeader()
	base := "http://" + s.HTTPAddr()
	if err := s.WaitIndex(context.Background(), s.AppliedIndex()); err != nil {
		t.Fatal(err)
	}
	_, before := s.store.Bounds()
	cases := []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/v1/guests", `{"name":"a",`, 400, "request body"},
		{"POST", "/v1/guests", `{"name":"a","driver":"process","memory":"16M","command":["/bin/true"],"bogus":1}`, 400, "bogus"},
		{"POST", "/v1/guests", `{"name":"..","driver":"process","memory":"16M","command":["/bin/true"]}`, 400, "guest name"},
		{"POST", "/v1/guests", `{"name":"a/b","driver":"process","memory":"16M","command":["/bin/true"]}`, 400, "guest name"},
		{"POST", "/v1/guests", `{"name":"","driver":"process","memory":"16M","command":["/bin/true"]}`, 400, "empty"},
		{"POST", "/v1/guests", `{"name":"` + strings.Repeat("a", 64) + `","driver":"process","memory":"16M","command":["/bin/true"]}`, 400, "63"},
		{"POST", "/v1/guests", `{"name":"a\u0001","driver":"process","memory":"16M","command":["/bin/true"]}`, 400, "not allowed"},
		{"POST", "/v1/guests", `{"name":"a","driver":"xen","memory":"16M","command":["/bin/true"]}`, 400, "driver"},
		{"POST", "/v1/guests", `{"name":"a","driver":"process","memory":"0","command":["/bin/true"]}`, 400, "memory"},
		{"POST", "/v1/guests", `{"name":"a","driver":"process","memory":"16M","cpu_shares":1,"command":["/bin/true"]}`, 400, "cpu_shares"},
		{"DELETE", "/v1/guests/nope", ``, 404, "does not exist"},
		{"POST", "/v1/guests/nope/start", ``, 404, "does not exist"},
		{"POST", "/v1/guests/nope/tune", `{"set":{"cpu_shares":"500"}}`, 404, "does not exist"},
		{"GET", "/v1/events?since=x", ``, 400, "since"},
		{"GET", "/v1/events?type=guest.exploded", ``, 400, "unknown event type"},
		{"GET", "/v1/state?at=99999", ``, 400, "last committed"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s %s %s: %d %s; want %d containing %q", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.status, tc.want)
		}
	}
	if _, after := s.store.Bounds(); after != before {
		t.Fatalf("bad input appended events: %d -> %d", before, after)
	}
}
