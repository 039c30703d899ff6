package coordinator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/events"
)

func TestSingleServerCreate(t *testing.T) {
	cfg := TestConfig(t, "s1", t.TempDir())
	cfg.Nodes = []events.NodeRegistered{{ID: "local", CPUs: 2, MemoryBytes: 4 << 30, Drivers: map[string]string{"process": "1"}}}
	s := StartTestServer(t, cfg)
	<-s.Ready()
	c, err := api.NewClient(s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := c.CreateGuest(ctx, api.CreateGuest{Name: "web", Driver: "process", Memory: "64MiB", VCPUs: 1, Command: []string{"/bin/sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	// The placement comes with the create when the local node has
	// registered already, else from the scheduler right after.
	if n := len(res.Indexes); n != 2 && n != 3 {
		t.Fatalf("create committed %v, want defined and start requested, and maybe placed", res.Indexes)
	}
	WaitFor(t, 5*time.Second, "placement", func() bool {
		g, err := c.Guest(ctx, "web")
		return err == nil && g.Status == api.StatusPlaced && g.Node == "local"
	})
	_, err = c.CreateGuest(ctx, api.CreateGuest{Name: "web", Driver: "process", Memory: "64MiB", Command: []string{"/bin/true"}})
	if !errors.Is(err, api.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
}
