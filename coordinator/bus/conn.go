package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Conn is a NATS connection, for code that must not import nats.go: the
// coordinator's publishing, heartbeats and log reads, and the node agent's
// subscriptions.
type Conn struct {
	nc     *nats.Conn
	closed chan struct{} // closed when the connection is closed for good
}

// Dial connects to NATS at urls (comma-separated), reconnecting forever.
func Dial(urls, name string) (*Conn, error) {
	closed := make(chan struct{})
	nc, err := connect(urls, name, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return nil, err
	}
	return &Conn{nc: nc, closed: closed}, nil
}

// Msg is one message as a subscriber receives it.
type Msg struct {
	Subject string
	// Index and Prev are the Corral-Index and Corral-Prev headers, 0 when
	// absent or unreadable.
	Index, Prev uint64
	Data        []byte
}

// Publish sends data on subject with its log index (and, when prev > 0,
// the index of the previous message for the same receiver).
func (c *Conn) Publish(subject string, index, prev uint64, data []byte) error {
	m := nats.NewMsg(subject)
	m.Header.Set(HeaderIndex, strconv.FormatUint(index, 10))
	if prev > 0 {
		m.Header.Set(HeaderPrev, strconv.FormatUint(prev, 10))
	}
	m.Data = data
	return c.nc.PublishMsg(m)
}

func header(m *nats.Msg, name string) uint64 {
	if m.Header == nil {
		return 0
	}
	n, _ := strconv.ParseUint(m.Header.Get(name), 10, 64)
	return n
}

// Request sends data on subject and returns the first reply. It fails with
// ErrNoResponders when nobody listens and ErrTimeout when ctx ends first.
func (c *Conn) Request(ctx context.Context, subject string, data []byte) ([]byte, error) {
	m, err := c.nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%w: %s", ErrNoResponders, subject)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return nil, fmt.Errorf("%w: %s", ErrTimeout, subject)
	case err != nil:
		return nil, fmt.Errorf("corral: nats request on %s: %w", subject, err)
	}
	return m.Data, nil
}

// Watch calls fn with every message on subject (wildcards allowed) until
// ctx ends or the connection closes. The subscription is in place when
// ready is called (nil: not told). NATS may drop, duplicate or reorder:
// fn must cope.
func (c *Conn) Watch(ctx context.Context, subject string, ready func(), fn func(Msg)) error {
	ch := make(chan *nats.Msg, 4096)
	sub, err := c.nc.ChanSubscribe(subject, ch)
	if err == nil {
		err = c.nc.Flush()
	}
	if err != nil {
		return fmt.Errorf("corral: subscribe to %s: %w", subject, err)
	}
	defer sub.Unsubscribe()
	if ready != nil {
		ready()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return fmt.Errorf("corral: nats connection closed")
		case m := <-ch:
			fn(Msg{Subject: m.Subject, Index: header(m, HeaderIndex), Prev: header(m, HeaderPrev), Data: m.Data})
		}
	}
}

// Handle answers every request on subject (wildcards allowed) with
// handler's reply, on NATS's goroutine, until the returned stop is called.
// The subscription is in place when Handle returns.
func (c *Conn) Handle(subject string, handler func(subject string, data []byte) []byte) (stop func(), err error) {
	sub, err := c.nc.Subscribe(subject, func(m *nats.Msg) {
		if m.Reply != "" {
			m.Respond(handler(m.Subject, m.Data))
		}
	})
	if err == nil {
		err = c.nc.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("corral: subscribe to %s: %w", subject, err)
	}
	return func() { sub.Unsubscribe() }, nil
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

// Subscribe delivers every message on subject to the returned channel
// (buffered; messages beyond the buffer are dropped, as NATS may) until
// stop is called. The subscription is in place when it returns.
func (c *Conn) Subscribe(subject string) (msgs <-chan Msg, stop func(), err error) {
	ch := make(chan Msg, 4096)
	sub, err := c.nc.Subscribe(subject, func(m *nats.Msg) {
		select {
		case ch <- Msg{Subject: m.Subject, Index: header(m, HeaderIndex), Prev: header(m, HeaderPrev), Data: m.Data}:
		default:
		}
	})
	if err == nil {
		err = c.nc.Flush()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("corral: subscribe to %s: %w", subject, err)
	}
	return ch, func() { sub.Unsubscribe() }, nil
}
