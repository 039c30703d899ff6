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

// TestCredentialsAcrossLeaderKills: an agent whose first address is each
// server in turn keeps reporting with its secret while leaders are killed
// and come back; the node keeps its secret and a wrong one stays refused.
func TestCredentialsAcrossLeaderKills(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitLeader()
	c.waitConverged()
	ctx := context.Background()
	usage := []api.ReportItem{api.NewReportItem("", &events.NodeUsage{IntervalMs: 1000})}
	cl, _ := api.NewClient(c.addrs(-1))
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		li, _ := c.waitLeader()
		first := (li + 1 + round%2) % 3 // a follower, then the other one
		addrs := c.servers[first].HTTPAddr()
		for i, s := range c.servers {
			if i != first {
				addrs += "," + s.HTTPAddr()
			}
		}
		agent, _ := api.NewClient(addrs)
		if _, err := agent.Report(ctx, "n1", "s3cret", usage); err != nil {
			t.Fatalf("round %d: report through %s: %v", round, c.servers[first].ID(), err)
		}
		c.stops[li]()
		t.Logf("round %d: killed leader %s, agent's first address %s", round, c.cfgs[li].ID, c.servers[first].ID())
		if _, err := agent.Report(ctx, "n1", "s3cret", usage); err != nil {
			t.Fatalf("round %d: report after the leader %s was killed: %v", round, c.cfgs[li].ID, err)
		}
		if _, err := agent.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
			t.Fatalf("round %d: re-register through %s: %v", round, c.servers[first].ID(), err)
		}
		if _, err := agent.Report(ctx, "n1", "wrong", usage); !errors.Is(err, api.ErrPermission) {
			t.Fatalf("round %d: a wrong secret: %v", round, err)
		}
		c.cfgs[li].Bootstrap = false
		c.start(li)
		c.waitConverged()
		t.Logf("round %d: %s back", round, c.cfgs[li].ID)
	}
	cl, _ = api.NewClient(c.addrs(-1))
	nodes, err := cl.Nodes(ctx)
	if err != nil || len(nodes) != 1 || !nodes[0].Agent {
		t.Fatalf("nodes after the rounds: %+v %v", nodes, err)
	}
}
