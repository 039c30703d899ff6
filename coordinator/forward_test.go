package coordinator

import (
	"context"
	"errors"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestForwardKeepsNodeSecret: an agent whose address is a follower
// registers and reports through it; the node secret reaches the leader with
// the forwarded write, and a wrong one is still refused there.
func TestForwardKeepsNodeSecret(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	li, _ := c.waitLeader()
	follower := c.servers[(li+1)%3]
	cl, _ := api.NewClient(follower.HTTPAddr())
	ctx := context.Background()
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
		t.Fatalf("register through a follower: %v", err)
	}
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
		t.Fatalf("register again through a follower with the same secret: %v", err)
	}
	usage := []api.ReportItem{api.NewReportItem("", &events.NodeUsage{IntervalMs: 1000})}
	if _, err := cl.Report(ctx, "n1", "s3cret", usage); err != nil {
		t.Fatalf("report through a follower: %v", err)
	}
	if _, err := cl.Report(ctx, "n1", "wrong", usage); !errors.Is(err, api.ErrPermission) {
		t.Fatalf("report with a wrong secret through a follower: %v", err)
	}
}
