package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
)

// waitPublished subscribes to every event on url, runs act, and waits for
// the event at the index act returns.
func waitPublished(t *testing.T, url string, act func() uint64) events.Event {
	t.Helper()
	nc, err := bus.Dial(url, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ch, stop, err := nc.Subscribe(bus.EventPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	want := act()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			if m.Index == want {
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
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	cfg := TestConfig(t, "s1", t.TempDir())
	cfg.NATSURL = ns.ClientURL()
	s := StartTestServer(t, cfg)
	<-s.Ready()
	if s.NATSURL() != ns.ClientURL() {
		t.Fatalf("server uses %s, want the external %s", s.NATSURL(), ns.ClientURL())
	}
	cl, _ := api.NewClient(s.HTTPAddr())
	e := waitPublished(t, ns.ClientURL(), func() uint64 {
		res, err := cl.CreateGuest(context.Background(), api.CreateGuest{Name: "ext", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
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
	cl, _ := api.NewClient(leader.HTTPAddr())
	for i, s := range c.servers {
		e := waitPublished(t, s.NATSURL(), func() uint64 {
			res, err := cl.CreateGuest(context.Background(), api.CreateGuest{Name: fmt.Sprintf("n%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
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
