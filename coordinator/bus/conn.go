package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corral-dev/corral/coordinator/pki"
)

// Errors of a connection, matched with errors.Is.
var (
	// ErrNotPermitted: the server refused a subscription the connection's
	// certificate does not allow.
	ErrNotPermitted = errors.New("corral: the bus does not permit this connection")
	// ErrClosed: the connection, or the subscription, was closed.
	ErrClosed = errors.New("corral: the bus connection is closed")
)

// Conn is a NATS connection, for code that must not import nats.go: the
// coordinator's publishing, heartbeats and log reads, and the node agent's
// subscriptions.
type Conn struct {
	nc  *nats.Conn
	log *slog.Logger
}

// A DialOption changes how Dial connects.
type DialOption func(*dialOptions)

type dialOptions struct {
	tls   *tls.Config
	inbox string
	log   *slog.Logger
}

// WithTLS makes the connection speak TLS with cfg: pki.Loaded.DialConfig
// of a server's or a node's certificate, which proves who the connection
// is and verifies that what it reaches is a server of the cluster. With a
// node's certificate the inbox defaults to NodeInboxPrefix(node), the only
// one a node may subscribe to.
func WithTLS(cfg *tls.Config) DialOption { return func(o *dialOptions) { o.tls = cfg } }

// WithInboxPrefix makes replies to the connection's requests come back on
// subjects under prefix instead of NATS's _INBOX: a node's agent gives
// NodeInboxPrefix(node).
func WithInboxPrefix(prefix string) DialOption { return func(o *dialOptions) { o.inbox = prefix } }

// WithLogger sends what NATS reports asynchronously to log: a publish or
// subscription the server refused, a lost connection, a failed reconnect.
// Without it they are discarded.
func WithLogger(log *slog.Logger) DialOption { return func(o *dialOptions) { o.log = log } }

// Dial connects to NATS at urls (comma-separated), reconnecting forever:
// it returns at once even when no server answers yet, and a server that
// refuses the connection's certificate is retried like one that is down
// (and reported to the logger).
func Dial(urls, name string, opts ...DialOption) (*Conn, error) {
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("nats", name)
	var retries retryLog
	nopts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(64 << 20),
		// A server that stops answering (paused, cut off) is left within
		// about two seconds, not NATS's default two minutes, so an agent's
		// heartbeats move to another server well before its fence timeout.
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(2),
		// subscribe learns of a refused subscription from the
		// subscription itself; see there.
		nats.PermissionErrOnSubscribe(true),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("nats reported an error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("nats reported an error", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats connection lost; reconnecting", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { retries.failed(log, err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			retries.reset()
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
	inbox := o.inbox
	if o.tls != nil {
		id, err := dialIdentity(o.tls)
		if err != nil {
			return nil, err
		}
		if id.Role == pki.RoleNode && inbox == "" {
			inbox = NodeInboxPrefix(id.Name)
		}
		nopts = append(nopts, nats.Secure(o.tls))
	}
	if inbox != "" {
		nopts = append(nopts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(urls, nopts...)
	if err != nil {
		return nil, fmt.Errorf("corral: connect to nats %s: %w", urls, err)
	}
	return &Conn{nc: nc, log: log}, nil
}

// dialIdentity returns the identity cfg's certificate names, zero when it
// cannot tell (a certificate chosen at handshake), and refuses at once
// what every server would refuse.
func dialIdentity(cfg *tls.Config) (pki.Identity, error) {
	if len(cfg.Certificates) == 0 {
		if cfg.GetClientCertificate == nil {
			return pki.Identity{}, errors.New("corral: the bus needs a certificate, not only the CA: give the node's or the server's certificate and key")
		}
		return pki.Identity{}, nil
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		return pki.Identity{}, nil
	}
	id, err := pki.IdentityOf(leaf)
	if err != nil {
		return pki.Identity{}, fmt.Errorf("corral: the bus certificate: %w", err)
	}
	if _, err := permissionsFor(id); err != nil {
		return pki.Identity{}, err
	}
	return id, nil
}

// retryLog logs a failed reconnect once per distinct error, not every
// 100ms while a server stays down or keeps refusing the certificate.
type retryLog struct {
	mu   sync.Mutex
	last string
}

func (r *retryLog) failed(log *slog.Logger, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil || err.Error() == r.last {
		return
	}
	r.last = err.Error()
	log.Warn("nats connect failed; retrying", "err", err)
}

func (r *retryLog) reset() {
	r.mu.Lock()
	r.last = ""
	r.mu.Unlock()
}

// Msg is one message as a subscriber receives it.
type Msg struct {
	Subject string
	// Index and Prev are the Corral-Index and Corral-Prev headers, 0 when
	// absent or unreadable.
	Index, Prev uint64
	Data        []byte
}

func toMsg(m *nats.Msg) Msg {
	return Msg{Subject: m.Subject, Index: header(m, HeaderIndex), Prev: header(m, HeaderPrev), Data: m.Data}
}

// Publish sends data on subject with its log index (and, when prev > 0,
// the index of the previous message for the same receiver). A publish the
// server refuses (a subject the certificate does not allow) is dropped and
// reported to the logger, not here: NATS says so asynchronously.
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
// A request the server refuses (a node's heartbeat for another node) is
// never answered, so ctx must end: give it a deadline.
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
// ready is called (nil: not told); a subject the certificate does not
// allow fails with ErrNotPermitted. NATS may drop, duplicate or reorder:
// fn must cope.
func (c *Conn) Watch(ctx context.Context, subject string, ready func(), fn func(Msg)) error {
	sub, err := c.subscribe(subject)
	if err != nil {
		return err
	}
	defer sub.close()
	defer context.AfterFunc(ctx, sub.close)()
	if ready != nil {
		ready()
	}
	for {
		m, err := sub.next()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		fn(toMsg(m))
	}
}

// Handle answers every request on subject (wildcards allowed) with
// handler's reply, one at a time on a goroutine of its own, until the
// returned stop is called. The subscription is in place when Handle
// returns; a subject the certificate does not allow fails with
// ErrNotPermitted. stop waits for a handler in progress, so the handler
// must not call it.
func (c *Conn) Handle(subject string, handler func(subject string, data []byte) []byte) (stop func(), err error) {
	sub, err := c.subscribe(subject)
	if err != nil {
		return nil, err
	}
	return c.pump(sub, func(m *nats.Msg) {
		if m.Reply != "" {
			m.Respond(handler(m.Subject, m.Data))
		}
	}), nil
}

// Close drains and closes the connection.
func (c *Conn) Close() {
	c.nc.Drain()
	c.nc.Close()
}

// Serve answers every request on subject with handler's reply until ctx
// ends or the connection closes. Requests are handled one at a time, on
// Serve's goroutine; the subscription survives reconnects. A subject the
// certificate does not allow fails with ErrNotPermitted.
func (c *Conn) Serve(ctx context.Context, subject string, handler func(req []byte) []byte) error {
	sub, err := c.subscribe(subject)
	if err != nil {
		return err
	}
	defer sub.close()
	defer context.AfterFunc(ctx, sub.close)()
	for {
		m, err := sub.next()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
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
// stop is called. The subscription is in place when it returns; a subject
// the certificate does not allow fails with ErrNotPermitted.
func (c *Conn) Subscribe(subject string) (msgs <-chan Msg, stop func(), err error) {
	sub, err := c.subscribe(subject)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan Msg, 4096)
	return ch, c.pump(sub, func(m *nats.Msg) {
		select {
		case ch <- toMsg(m):
		default:
		}
	}), nil
}

// subscription is a subscription the server accepted, read by one
// goroutine at a time and closed from any.
type subscription struct {
	s *nats.Subscription
	// head arrived while subscribe checked the subscription.
	head *nats.Msg
}

// idleWait is how long next waits in one NextMsg call; it only bounds a
// timer, since closing the subscription wakes next at once.
const idleWait = time.Minute

// subscribe subscribes to subject and returns once the server has the
// subscription, or has refused it (ErrNotPermitted).
//
// Every subscription is synchronous for this: nats-server answers a SUB it
// refuses with -ERR before the PONG that ends Flush, and nats.go, reading
// them in order, marks the subscription refused before Flush returns; with
// PermissionErrOnSubscribe only a synchronous subscription reports that
// mark, from NextMsg, before any message. A refusal seen later (after a
// reconnect to a server that refuses it) ends next with ErrNotPermitted.
func (c *Conn) subscribe(subject string) (*subscription, error) {
	s, err := c.nc.SubscribeSync(subject)
	if err != nil {
		return nil, fmt.Errorf("corral: subscribe to %s: %w", subject, err)
	}
	if err := c.nc.Flush(); err != nil {
		s.Unsubscribe()
		return nil, fmt.Errorf("corral: subscribe to %s: %w", subject, err)
	}
	m, err := s.NextMsg(0)
	switch {
	case err == nil || errors.Is(err, nats.ErrTimeout):
		return &subscription{s: s, head: m}, nil
	case errors.Is(err, nats.ErrPermissionViolation):
		s.Unsubscribe()
		return nil, notPermitted(subject)
	default:
		s.Unsubscribe()
		return nil, fmt.Errorf("corral: subscribe to %s: %w", subject, err)
	}
}

func notPermitted(subject string) error {
	return fmt.Errorf("%w to subscribe to %s: its certificate does not allow it (a node may subscribe only to its own %s<node>, %s<node> and inbox)",
		ErrNotPermitted, subject, NodePrefix, LogsPrefix)
}

// next returns the subscription's next message. It fails with ErrClosed
// once the subscription or the connection is closed, and ErrNotPermitted
// when the server refuses the subscription after a reconnect.
func (s *subscription) next() (*nats.Msg, error) {
	if m := s.head; m != nil {
		s.head = nil
		return m, nil
	}
	for {
		m, err := s.s.NextMsg(idleWait)
		switch {
		case err == nil:
			return m, nil
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrSlowConsumer):
			// Idle, or messages dropped beyond the pending limit (reported
			// to the logger): NATS may drop.
		case errors.Is(err, nats.ErrPermissionViolation):
			s.close()
			return nil, notPermitted(s.s.Subject)
		case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrBadSubscription):
			return nil, ErrClosed
		default:
			return nil, fmt.Errorf("corral: read %s: %w", s.s.Subject, err)
		}
	}
}

// close ends the subscription, waking a next in progress; closing twice
// is harmless.
func (s *subscription) close() { s.s.Unsubscribe() }

// pump hands each message of sub to fn, on a goroutine of its own, until
// the returned stop is called (which waits for fn to return) or the
// connection closes.
func (c *Conn) pump(sub *subscription, fn func(*nats.Msg)) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := sub.next()
			if err != nil {
				if !errors.Is(err, ErrClosed) {
					c.log.Warn("nats subscription ended", "subject", sub.s.Subject, "err", err)
				}
				return
			}
			fn(m)
		}
	}()
	return func() {
		sub.close()
		<-done
	}
}
