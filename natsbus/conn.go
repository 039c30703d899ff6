package natsbus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Conn is a NATS connection for code that must not import nats.go: the
// node agent's heartbeats and event subscription.
type Conn struct{ nc *nats.Conn }

// Dial connects to NATS at urls (comma-separated), reconnecting forever.
func Dial(urls, name string) (*Conn, error) {
	nc, err := Connect(urls, name)
	if err != nil {
		return nil, err
	}
	return &Conn{nc: nc}, nil
}

// Request sends data on subject and returns the first reply, or an error
// when nobody answers before ctx ends.
func (c *Conn) Request(ctx context.Context, subject string, data []byte) ([]byte, error) {
	m, err := c.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return nil, fmt.Errorf("corral: nats request on %s: %w", subject, err)
	}
	return m.Data, nil
}

// WatchEvents calls fn with the index and encoding of every committed event
// published on NATS until ctx ends or the connection closes. NATS may drop,
// duplicate or reorder them: fn must cope.
func (c *Conn) WatchEvents(ctx context.Context, fn func(index uint64, data []byte)) error {
	ch := make(chan *nats.Msg, 4096)
	sub, err := c.nc.ChanSubscribe(EventPrefix+">", ch)
	if err != nil {
		return fmt.Errorf("corral: subscribe to events: %w", err)
	}
	defer sub.Unsubscribe()
	closed := make(chan struct{})
	c.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return fmt.Errorf("corral: nats connection closed")
		case m := <-ch:
			idx, err := Index(m)
			if err != nil {
				continue
			}
			fn(idx, m.Data)
		}
	}
}

// Close drains and closes the connection.
func (c *Conn) Close() {
	c.nc.Drain()
	c.nc.Close()
}

// Serve answers every request on subject with handler's reply until ctx
// ends or the connection closes. Requests are handled one at a time, on
// Serve's goroutine; the subscription survives reconnects.
func (c *Conn) Serve(ctx context.Context, subject string, handler func(req []byte) []byte) error {
	sub, err := c.nc.SubscribeSync(subject)
	if err == nil {
		err = c.nc.Flush() // the server has the subscription before we serve
	}
	if err != nil {
		return fmt.Errorf("corral: subscribe to %s: %w", subject, err)
	}
	defer sub.Unsubscribe()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("corral: serve %s: %w", subject, err)
		}
		if m.Reply == "" {
			continue
		}
		if err := m.Respond(handler(m.Data)); err != nil && ctx.Err() == nil && c.nc.IsClosed() {
			return fmt.Errorf("corral: serve %s: %w", subject, err)
		}
	}
}
