package simtest

import (
	"context"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/nodeagent"
)

// link is an agent's [nodeagent.Coordinator], [nodeagent.Notifier] and
// [nodeagent.LogServer] in the simulation: the agent's real adapter,
// nodeagent.Remote, over the API client (on [Net]) and the [Bus], plus
// the host's fencing lease, renewed on every heartbeat that succeeded.
type link struct {
	*nodeagent.Remote
	client *api.Client
	host   *Host
	// lease is the time to live of the host's fencing lease from when a
	// heartbeat that succeeded was sent; see [Host.RenewLease].
	lease time.Duration
}

var (
	_ nodeagent.Coordinator = (*link)(nil)
	_ nodeagent.Notifier    = (*link)(nil)
	_ nodeagent.LogServer   = (*link)(nil)
)

func (l *link) Heartbeat(ctx context.Context, nodeID, secret string) (uint64, error) {
	sent := time.Now()
	idx, err := l.Remote.Heartbeat(ctx, nodeID, secret)
	if err != nil {
		return 0, err
	}
	if l.lease > 0 {
		l.host.RenewLease(sent.Add(l.lease))
		l.liftFence(ctx, nodeID)
	}
	return idx, nil
}

// liftFence thaws, of the guests the host's lease froze, those a fresh
// list of the node's desired state wants running here; see
// [Host.LiftFence]. Without a list it leaves them frozen: the next
// heartbeat tries again.
func (l *link) liftFence(ctx context.Context, nodeID string) {
	if !l.host.FenceUp() {
		return
	}
	d, err := l.client.Desired(ctx, nodeID)
	if err != nil {
		return
	}
	want := map[string]bool{}
	for _, g := range d.Guests {
		if g.Desired == api.DesiredRunning && !g.Paused {
			want[g.Name] = true
		}
	}
	l.host.LiftFence(func(id string) bool { return want[id] })
}
