package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestReadYourWriteOnAnyServer: a guest created through the leader is in
// the very next default read on each follower, every time.
func TestReadYourWriteOnAnyServer(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, leader := c.waitLeader()
	c.waitConverged()
	write, _ := api.NewClient(leader.HTTPAddr())
	var reads []*api.Client
	for i, s := range c.servers {
		if i != li {
			cl, _ := api.NewClient(s.HTTPAddr())
			reads = append(reads, cl)
		}
	}
	ctx := context.Background()
	for i := range 100 {
		name := fmt.Sprintf("g%d", i)
		if _, err := write.CreateGuest(ctx, api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); err != nil {
			t.Fatal(err)
		}
		for j, cl := range reads {
			g, err := cl.Guest(ctx, name)
			if err != nil || g.Name != name {
				t.Fatalf("write %d: follower %d read %v, %v", i, j, g, err)
			}
		}
	}
}

// TestStaleReadSaysHowStale: ?stale=1 is served at once and says the index
// it reflects and when the leader was last heard from.
func TestStaleReadSaysHowStale(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, _ := c.waitLeader()
	c.waitConverged()
	f := c.servers[(li+1)%3]
	resp, err := http.Get("http://" + f.HTTPAddr() + "/v1/guests?stale=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	idx, err := strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
	if resp.StatusCode != http.StatusOK || err != nil || idx == 0 || resp.Header.Get(headerLastContact) == "" || resp.Header.Get(headerKnownLeader) != "true" {
		t.Fatalf("stale read: %s, headers %v", resp.Status, resp.Header)
	}
	resp, err = http.Get("http://" + f.HTTPAddr() + "/v1/guests?stale=maybe")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("stale=maybe: %s", resp.Status)
	}
}

// TestNoEmptyReadAfterRestart: a server restarted on its data directory
// never answers a read with less than what was acknowledged before it
// stopped: from the first moment its API answers, a read either holds
// every guest or says it is catching up.
func TestNoEmptyReadAfterRestart(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	_, s := c.waitLeader()
	cl, _ := api.NewClient(s.HTTPAddr())
	ctx := context.Background()
	const n = 300
	for i := range n {
		if _, err := cl.CreateGuest(ctx, api.CreateGuest{Name: fmt.Sprintf("g%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); err != nil {
			t.Fatal(err)
		}
	}
	c.stops[0]()
	c.cfgs[0].Bootstrap = false
	c.cfgs[0].HTTPAddr = s.HTTPAddr()
	c.start(0)
	raw, _ := api.NewClient(c.servers[0].HTTPAddr())
	raw.Retry = 0
	answered, full := 0, 0
	WaitFor(t, readWait*2, "a full read", func() bool {
		gs, err := raw.Guests(ctx)
		var ae *api.APIError
		switch {
		case err == nil:
			answered++
			if len(gs) != n {
				t.Fatalf("read after restart returned %d guests, want %d", len(gs), n)
			}
			full++
		case errors.As(err, &ae):
			answered++
			if !errors.Is(err, api.ErrUnavailable) {
				t.Fatalf("read after restart: %v", err)
			}
		}
		return full > 0
	})
	t.Logf("%d answers before and with the first full read", answered)
}

// TestReadYourForwardedWrite: a write sent to a follower is answered once
// the leader has committed it, and the same client's very next read on
// that follower holds it, every time: a default read through the leader's
// read index, a stale one through the index the client sends
// (X-Corral-Min-Index).
func TestReadYourForwardedWrite(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, _ := c.waitLeader()
	c.waitConverged()
	f := c.servers[(li+1)%3]
	consistent, _ := api.NewClient(f.HTTPAddr())
	stale, _ := api.NewClient(f.HTTPAddr())
	stale.Stale = true
	ctx := context.Background()
	for i := range 100 {
		for _, cl := range []*api.Client{consistent, stale} {
			name := fmt.Sprintf("g%d-%t", i, cl.Stale)
			res, err := cl.CreateGuest(ctx, api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
			if err != nil || res.Index == 0 {
				t.Fatalf("create %s through follower %s: %+v, %v", name, f.ID(), res, err)
			}
			g, err := cl.Guest(ctx, name)
			if err != nil || g.Name != name {
				t.Fatalf("write %d (stale=%t): follower %s read %v, %v", i, cl.Stale, f.ID(), g, err)
			}
		}
	}
}

// TestStaleReadMinIndex: a stale read waits for the index it asks for,
// and a bad one is refused before anything is read.
func TestStaleReadMinIndex(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, leader := c.waitLeader()
	c.waitConverged()
	f := c.servers[(li+1)%3]
	cl, _ := api.NewClient(leader.HTTPAddr())
	res, err := cl.CreateGuest(context.Background(), api.CreateGuest{Name: "g", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	get := func(min string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+f.HTTPAddr()+"/v1/guests/g?stale=1", nil)
		req.Header.Set(api.HeaderMinIndex, min)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := get(strconv.FormatUint(res.Index, 10))
	idx, _ := strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
	if resp.StatusCode != http.StatusOK || idx < res.Index {
		t.Fatalf("stale read asking for index %d: %s, reflects %d", res.Index, resp.Status, idx)
	}
	if resp := get("soon"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("stale read with %s: soon: %s, want 400", api.HeaderMinIndex, resp.Status)
	}
}
