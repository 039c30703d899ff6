package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/natsbus"
)

// Remote is the agent's Coordinator and Notifier over the real thing: the
// coordinator's HTTP API for registration, desired state and reports, and
// NATS for heartbeats and event notifications.
type Remote struct {
	client *coordinator.Client
	bus    *natsbus.Conn
}

// NewRemote returns a Remote for the API at addrs (comma-separated, fails
// over) and the NATS connection bus.
func NewRemote(addrs string, bus *natsbus.Conn, actor string) (*Remote, error) {
	c, err := coordinator.NewClient(addrs)
	if err != nil {
		return nil, err
	}
	c.Actor = actor
	c.Retry = 5 * time.Second
	return &Remote{client: c, bus: bus}, nil
}

var (
	_ Coordinator = (*Remote)(nil)
	_ Notifier    = (*Remote)(nil)
)

// refused wraps the coordinator's final refusals in ErrRefused.
func refused(err error) error {
	var ae *coordinator.APIError
	if errors.As(err, &ae) && ae.Code != coordinator.CodeUnavailable && ae.Code != coordinator.CodeInternal {
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
	out := Desired{Index: d.Index, Guests: make([]DesiredGuest, 0, len(d.Guests))}
	for _, g := range d.Guests {
		out.Guests = append(out.Guests, DesiredGuest{
			Name: g.Name, Generation: g.Generation, Desired: g.Desired, Status: g.Status,
			Definition: g.GuestDefined, Tuning: g.Tuning, Paused: g.Paused,
		})
	}
	return out, nil
}

func (r *Remote) Report(ctx context.Context, nodeID, secret string, items []Report) (uint64, error) {
	out := make([]coordinator.ReportItem, len(items))
	for i, it := range items {
		out[i] = coordinator.NewReportItem(it.Guest, it.Payload)
	}
	res, err := r.client.Report(ctx, nodeID, secret, out)
	if err != nil {
		return 0, refused(err)
	}
	return res.Index, nil
}

func (r *Remote) Heartbeat(ctx context.Context, nodeID, secret string) (uint64, error) {
	req, _ := json.Marshal(map[string]string{"secret": secret})
	b, err := r.bus.Request(ctx, natsbus.HeartbeatSubject(nodeID), req)
	if err != nil {
		return 0, err
	}
	var rep coordinator.HeartbeatReply
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, fmt.Errorf("corral: heartbeat reply: %w", err)
	}
	if rep.Error != "" {
		return 0, fmt.Errorf("corral: heartbeat refused: %s", rep.Error)
	}
	return rep.Index, nil
}

func (r *Remote) Watch(ctx context.Context, fn func(e events.Event)) error {
	return r.bus.WatchEvents(ctx, func(index uint64, data []byte) {
		e, err := events.Decode(data)
		if err != nil || e.Index != index {
			return
		}
		fn(e)
	})
}
