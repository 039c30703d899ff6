package simtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent"
)

// link is an agent's [nodeagent.Coordinator] and [nodeagent.Notifier] in
// the simulation, as nodeagent.Remote is on a real host: registration,
// desired state and reports through the API client (over [Net]),
// heartbeats and node updates over the [Bus].
type link struct {
	client *api.Client
	conn   *Conn
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

// Register registers the node with the hardware the agent's
// configuration gives it: the simulated host's.
func (l *link) Register(ctx context.Context, node events.NodeRegistered, secret string) error {
	_, err := l.client.RegisterNode(ctx, node, secret)
	return err
}

func (l *link) Desired(ctx context.Context, nodeID string) (nodeagent.Desired, error) {
	d, err := l.client.Desired(ctx, nodeID)
	if err != nil {
		return nodeagent.Desired{}, err
	}
	return nodeagent.Desired{Index: d.Index, Guests: d.Guests}, nil
}

func (l *link) Report(ctx context.Context, nodeID, secret string, items []nodeagent.Report) (uint64, error) {
	out := make([]api.ReportItem, len(items))
	for i, it := range items {
		out[i] = api.NewReportItem(it.Guest, it.Payload)
	}
	res, err := l.client.Report(ctx, nodeID, secret, out)
	var ae *api.APIError
	if errors.As(err, &ae) && ae.Code != api.CodeUnavailable && ae.Code != api.CodeInternal {
		return 0, fmt.Errorf("%w: %v", nodeagent.ErrRefused, err)
	}
	if err != nil {
		return 0, err
	}
	return res.Index, nil
}

func (l *link) Heartbeat(ctx context.Context, nodeID, secret string) (uint64, error) {
	sent := time.Now()
	req, _ := json.Marshal(api.HeartbeatRequest{Secret: secret})
	b, err := l.conn.Request(ctx, bus.HeartbeatSubject(nodeID), req)
	if err != nil {
		return 0, err
	}
	var rep api.HeartbeatReply
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, fmt.Errorf("corral: heartbeat reply: %w", err)
	}
	if rep.Error != "" {
		return 0, fmt.Errorf("corral: heartbeat refused: %s", rep.Error)
	}
	if l.lease > 0 {
		l.host.RenewLease(sent.Add(l.lease))
		l.liftFence(ctx, nodeID)
	}
	return rep.NodeIndex, nil
}

func (l *link) Watch(ctx context.Context, nodeID string, ready func(), fn func(api.NodeUpdate)) error {
	return l.conn.Watch(ctx, bus.NodeSubject(nodeID), ready, func(m bus.Msg) {
		var u api.NodeUpdate
		if err := json.Unmarshal(m.Data, &u); err != nil || u.Index != m.Index {
			return // unreadable: the gap shows at the next update
		}
		fn(u)
	})
}

// ServeLogs answers the coordinator's log reads for nodeID, encoding them
// as nodeagent.Remote does.
func (l *link) ServeLogs(ctx context.Context, nodeID string, read func(nodeagent.LogRead) nodeagent.LogChunk) error {
	return l.conn.Serve(ctx, bus.LogsSubject(nodeID), func(req []byte) []byte {
		var q api.LogRequest
		var c nodeagent.LogChunk
		if err := json.Unmarshal(req, &q); err != nil {
			c.Err = fmt.Errorf("%w: log request: %v", events.ErrInvalid, err)
		} else {
			c = read(nodeagent.LogRead{Guest: q.Guest, Offset: q.Offset, Tail: q.Tail, Max: q.Max})
		}
		rep := api.LogReply{Data: c.Data, Next: c.Next, Size: c.Size, Truncated: c.Truncated}
		if c.Err != nil {
			rep = api.LogReply{Code: api.CodeInternal, Error: c.Err.Error()}
			switch {
			case errors.Is(c.Err, nodeagent.ErrNotHeld):
				rep.Code = api.CodeNotFound
			case errors.Is(c.Err, events.ErrInvalid):
				rep.Code = api.CodeInvalid
			}
		}
		b, _ := json.Marshal(rep)
		return b
	})
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
