package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
)

func agentNode(id string) events.NodeRegistered {
	return events.NodeRegistered{ID: id, CPUs: 4, MemoryBytes: 4 << 30, Drivers: map[string]string{"process": "1"},
		FenceTimeoutMs: 300, HeartbeatMs: 100}
}

func startAgentServer(t *testing.T) (*Server, *api.Client) {
	t.Helper()
	cfg := TestConfig(t, "s1", t.TempDir())
	cfg.NodeDownTimeout = time.Second
	s := StartTestServer(t, cfg)
	<-s.Ready()
	cl, _ := api.NewClient(s.HTTPAddr())
	return s, cl
}

func TestAgentSecretAndReports(t *testing.T) {
	_, cl := startAgentServer(t)
	ctx := context.Background()
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	// Another agent cannot take the node over while it is up.
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "other"); !errors.Is(err, api.ErrPermission) {
		t.Fatalf("takeover with another secret: %v", err)
	}
	// The same agent may register again (after a restart).
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	create(t, cl, "web", "64MiB", nil)
	WaitFor(t, 5*time.Second, "placement", func() bool { return guestsOn(t, cl)["web"] == "n1" })
	d, err := cl.Desired(ctx, "n1")
	if err != nil || len(d.Guests) != 1 || d.Guests[0].Name != "web" || d.Index == 0 {
		t.Fatalf("desired: %+v %v", d, err)
	}
	gen := d.Guests[0].Generation
	started := api.NewReportItem("web", &events.GuestStarted{Node: "n1", Generation: gen, PID: 42})
	if _, err := cl.Report(ctx, "n1", "wrong", []api.ReportItem{started}); !errors.Is(err, api.ErrPermission) {
		t.Fatalf("report with the wrong secret: %v", err)
	}
	if _, err := cl.Report(ctx, "n1", "s3cret", []api.ReportItem{api.NewReportItem("web", &events.GuestStarted{Node: "n2", Generation: gen})}); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("report naming another node: %v", err)
	}
	stale := api.NewReportItem("web", &events.GuestStarted{Node: "n1", Generation: gen - 1, PID: 41})
	res, err := cl.Report(ctx, "n1", "s3cret", []api.ReportItem{stale, started,
		api.NewReportItem("web", &events.GuestTuningApplied{Node: "n1", Generation: gen, Knob: "cpu_shares", Value: "1024"}),
		api.NewReportItem("", &events.NodeUsage{IntervalMs: 1000, Guests: []events.GuestUsage{{Guest: "web", Generation: gen, CPUNanos: 5, MemoryBytes: 100}}}),
	})
	if err != nil || len(res.Indexes) != 3 {
		t.Fatalf("report: %+v %v (the stale item alone must be refused)", res, err)
	}
	g, _ := cl.Guest(ctx, "web")
	if g.Status != api.StatusRunning || g.PID != 42 || g.Applied["cpu_shares"] != "1024" || g.Usage == nil || g.Usage.CPUNanos != 5 {
		t.Fatalf("guest after reports: %+v", g.Guest)
	}
	// Only agent event types may be reported.
	bad := api.NewReportItem("web", &events.GuestUndefined{})
	if _, err := cl.Report(ctx, "n1", "s3cret", []api.ReportItem{bad}); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("reporting guest.undefined: %v", err)
	}
	if g, _ := cl.Guest(ctx, "web"); g.Name != "web" {
		t.Fatal("the guest is gone")
	}
}

func TestFenceTimeoutChecked(t *testing.T) {
	_, cl := startAgentServer(t)
	n := agentNode("n1")
	n.FenceTimeoutMs = 900 // 1s down timeout - 2 x 100ms heartbeats = 800ms
	if _, err := cl.RegisterNode(context.Background(), n, "x"); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("fence timeout too close to the down timeout: %v", err)
	}
}

func heartbeat(t *testing.T, s *Server, node, secret string) api.HeartbeatReply {
	t.Helper()
	nc, err := bus.Dial(s.NATSURL(), "hb")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, _ := json.Marshal(map[string]string{"secret": secret})
	var data []byte
	// The leader subscribes just after it is elected; agents retry, so
	// does this.
	WaitFor(t, 5*time.Second, "a heartbeat answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		data, err = nc.Request(ctx, bus.HeartbeatSubject(node), b)
		return err == nil
	})
	var r api.HeartbeatReply
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestHeartbeatsKeepNodeUp(t *testing.T) {
	s, cl := startAgentServer(t)
	ctx := context.Background()
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	status := func() string {
		n, err := cl.Node(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		return n.Status
	}
	if r := heartbeat(t, s, "n1", "nope"); r.Error == "" {
		t.Fatal("a heartbeat with the wrong secret was accepted")
	}
	// Without heartbeats the node is declared down after the timeout...
	WaitFor(t, 5*time.Second, "node declared down", func() bool { return status() == api.NodeStatusDown })
	// ...and a heartbeat brings it back up.
	if r := heartbeat(t, s, "n1", "s3cret"); r.Error != "" || r.Index == 0 {
		t.Fatalf("heartbeat reply %+v", r)
	}
	WaitFor(t, 5*time.Second, "node up again", func() bool { return status() == api.NodeStatusUp })
	// Static nodes (no agent secret) are never declared down.
	if _, err := cl.RegisterNode(ctx, events.NodeRegistered{ID: "static", CPUs: 1, MemoryBytes: 1 << 30}, ""); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 5*time.Second, "n1 down again", func() bool { return status() == api.NodeStatusDown })
	if n, _ := cl.Node(ctx, "static"); n.Status != api.NodeStatusUp {
		t.Fatalf("static node is %s", n.Status)
	}
}
