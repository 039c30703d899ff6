package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/natsbus"
)

// waitPublished subscribes to every event on url, runs act, and waits for
// the event at the index act returns.
func waitPublished(t *testing.T, url string, act func() uint64) events.Event {
	t.Helper()
	nc, err := natsbus.Connect(url, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(natsbus.EventPrefix+">", ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	want := act()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			if idx, err := natsbus.Index(m); err == nil && idx == want {
				e, err := events.Unmarshal(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
		case <-deadline:
			t.Fatalf("event %d never arrived on %s", want, url)
		}
	}
}

func TestExternalNATS(t *testing.T) {
	ns, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	cfg := TestConfig(t, "s1", t.TempDir())
	cfg.NATSURL = ns.ClientURL()
	s := StartTestServer(t, cfg)
	<-s.Ready()
	if s.NATSURL() != ns.ClientURL() {
		t.Fatalf("server uses %s, want the external %s", s.NATSURL(), ns.ClientURL())
	}
	cl, _ := NewClient(s.HTTPAddr())
	e := waitPublished(t, ns.ClientURL(), func() uint64 {
		res, err := cl.CreateGuest(context.Background(), CreateGuest{Name: "ext", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
		if err != nil {
			t.Fatal(err)
		}
		return res.Index
	})
	if e.Guest != "ext" {
		t.Fatalf("got %+v", e)
	}
}

// TestClusteredEmbeddedNATS joins the three servers' embedded NATS servers
// with routes: a subscriber on every server's NATS gets what the leader
// publishes.
func TestClusteredEmbeddedNATS(t *testing.T) {
	c := newTestCluster(t, 3, func(i int, cfg *Config, started []*Server) {
		cfg.NATS.ClusterPort = -1
		if i > 0 {
			cfg.NATS.Routes = []string{started[0].NATSClusterURL()}
		}
	})
	_, leader := c.waitLeader()
	WaitFor(t, 10*time.Second, "NATS routes between all three", func() bool {
		for _, s := range c.servers {
			if s.nats.NumRoutes() < 2 {
				return false
			}
		}
		return true
	})
	cl, _ := NewClient(leader.HTTPAddr())
	for i, s := range c.servers {
		e := waitPublished(t, s.NATSURL(), func() uint64 {
			res, err := cl.CreateGuest(context.Background(), CreateGuest{Name: fmt.Sprintf("n%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
			if err != nil {
				t.Fatal(err)
			}
			return res.Index
		})
		if e.Guest != fmt.Sprintf("n%d", i) {
			t.Fatalf("got %+v on %s", e, s.ID())
		}
	}
}
