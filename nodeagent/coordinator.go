package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
)

// Remote is the agent's Coordinator and Notifier over the real thing: the
// coordinator's HTTP API for registration, desired state and reports, and
// the bus for heartbeats, node updates and log reads.
type Remote struct {
	client *api.Client
	conn   RemoteBus
}

// RemoteBus is what Remote needs of the bus: *bus.Conn, or simtest's
// in-memory one.
type RemoteBus interface {
	Request(ctx context.Context, subject string, data []byte) ([]byte, error)
	Watch(ctx context.Context, subject string, ready func(), fn func(bus.Msg)) error
	Serve(ctx context.Context, subject string, handler func(req []byte) []byte) error
}

// NewRemote returns a Remote for the API at addrs (comma-separated, fails
// over) and the bus connection conn.
func NewRemote(addrs string, conn RemoteBus, actor string) (*Remote, error) {
	c, err := api.NewClient(addrs)
	if err != nil {
		return nil, err
	}
	c.Actor = actor
	c.Retry = 5 * time.Second
	return NewRemoteWith(c, conn), nil
}

// NewRemoteWith returns a Remote over an API client set up by the caller.
func NewRemoteWith(client *api.Client, conn RemoteBus) *Remote {
	return &Remote{client: client, conn: conn}
}

var (
	_ Coordinator = (*Remote)(nil)
	_ Notifier    = (*Remote)(nil)
)

// refused wraps the coordinator's final refusals in ErrRefused.
func refused(err error) error {
	var ae *api.APIError
	if errors.As(err, &ae) && ae.Code != api.CodeUnavailable && ae.Code != api.CodeInternal {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return err
}

func (r *Remote) Register(ctx context.Context, node events.NodeRegistered, secret string) error {
	_, err := r.client.RegisterNode(ctx, node, secret)
	return err
}

func (r *Remote) Desired(ctx context.Context, nodeID string) (Desired, error) {
	d, err := r.client.Desired(ctx, nodeID)
	if err != nil {
		return Desired{}, err
	}
	return Desired{Index: d.Index, Guests: d.Guests, Partitions: d.Partitions, NodeDown: d.Node != nil && d.Node.Status == api.NodeStatusDown}, nil
}

func (r *Remote) Report(ctx context.Context, nodeID, secret string, items []Report) (uint64, error) {
	out := make([]api.ReportItem, len(items))
	for i, it := range items {
		out[i] = api.NewReportItem(it.Guest, it.Payload)
	}
	res, err := r.client.Report(ctx, nodeID, secret, out)
	if err != nil {
		return 0, refused(err)
	}
	return res.Index, nil
}

func (r *Remote) Heartbeat(ctx context.Context, nodeID, secret string) (uint64, error) {
	req, _ := json.Marshal(api.HeartbeatRequest{Secret: secret})
	b, err := r.conn.Request(ctx, bus.HeartbeatSubject(nodeID), req)
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
	return rep.NodeIndex, nil
}

func (r *Remote) Watch(ctx context.Context, nodeID string, ready func(), fn func(api.NodeUpdate)) error {
	return r.conn.Watch(ctx, bus.NodeSubject(nodeID), ready, func(m bus.Msg) {
		var u api.NodeUpdate
		if err := json.Unmarshal(m.Data, &u); err != nil || u.Index != m.Index {
			return // unreadable: the gap shows at the next update
		}
		fn(u)
	})
}
