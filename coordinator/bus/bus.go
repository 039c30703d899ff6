package bus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// HeaderIndex carries an event's log index.
const HeaderIndex = "Corral-Index"

// HeaderPrev carries, on a node's subject, the index of the previous
// update to that node.
const HeaderPrev = "Corral-Prev"

// EventPrefix is the subject prefix of committed events. An event of type
// guest.defined travels on corral.events.guest.defined, so
// "corral.events.>" receives them all.
const EventPrefix = "corral.events."

// EventGapSubject carries an explicit notice that committed events were
// never published and are no longer in the event store, so a subscriber
// knows to read what it can from the API (GET /v1/events) or do without.
// Its Corral-Index header is the last lost index; its body an
// api.PublishGap. A subscriber to "corral.events.>" receives it too and
// must look at the subject before decoding a message as an event.
const EventGapSubject = EventPrefix + "gap"

// PublishedSubject carries, from the leader after each batch it published,
// an empty message whose Corral-Index is the last index it published: every
// server follows it (instead of every event) to know where a new leader
// must resume.
const PublishedSubject = "corral.published"

// EventSubject returns the subject events of type t are published on.
func EventSubject(t events.Type) string { return EventPrefix + t.String() }

// NodePrefix is the subject prefix of per-node updates: the leader sends
// node n every event that concerns it on corral.node.n, and nothing else.
const NodePrefix = "corral.node."

// NodeSubject returns the subject node's updates travel on.
func NodeSubject(node string) string { return NodePrefix + node }

// HeartbeatPrefix is the subject prefix of agents' heartbeats: the agent of
// node n sends requests on corral.heartbeat.n and the leader answers.
const HeartbeatPrefix = "corral.heartbeat."

// HeartbeatSubject returns the subject node's agent sends heartbeats on.
func HeartbeatSubject(node string) string { return HeartbeatPrefix + node }

// LogsPrefix is the subject prefix of guest log reads: the agent of node n
// answers requests on corral.logs.n.
const LogsPrefix = "corral.logs."

// LogsSubject returns the subject node's agent answers log reads on.
func LogsSubject(node string) string { return LogsPrefix + node }

// ConsoleSubject returns the subject node's agent relays guests' serial
// consoles on.
func ConsoleSubject(node string) string { return "corral.console." + node }

// Errors of a request, matched with errors.Is.
var (
	// ErrNoResponders: nobody listens on the subject.
	ErrNoResponders = errors.New("corral: no responder on the bus")
	// ErrTimeout: nobody answered in time.
	ErrTimeout = errors.New("corral: bus request timed out")
)

// EmbeddedConfig configures the embedded nats-server.
type EmbeddedConfig struct {
	Host string // default 127.0.0.1
	Port int    // -1 picks a free port
	// Cluster joins several embedded servers (one per coordinator) into one
	// NATS cluster; leave ClusterPort 0 for a lone server.
	ClusterName string
	ClusterHost string
	ClusterPort int
	Routes      []string // nats-route://host:port of the other servers

	// TLS, when set, secures the bus with the server's certificate: the
	// client port speaks only TLS and takes only clients proving a
	// certificate of the cluster's CA, each allowed what its role may (the
	// package doc says what); routes speak TLS both ways and join only
	// other servers. Nil leaves the bus open to anyone who reaches it, for
	// tests and simulations.
	TLS *pki.Loaded
	// Log receives nats-server's warnings and errors (a refused route or
	// client, a failed handshake); nil discards them.
	Log *slog.Logger
}

// Validate checks the configuration.
func (c EmbeddedConfig) Validate() error {
	if c.Port < -1 || c.Port > 65535 {
		return fmt.Errorf("corral: nats port %d is out of range: use -1 (any free port) to 65535", c.Port)
	}
	if c.ClusterPort < -1 || c.ClusterPort > 65535 {
		return fmt.Errorf("corral: nats cluster port %d is out of range: use -1 (any free port), 0 (no cluster) to 65535", c.ClusterPort)
	}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return fmt.Errorf("corral: nats route %q is not a URL like nats-route://127.0.0.1:6222", r)
		}
	}
	switch {
	case c.TLS == nil:
	case c.TLS.Cert == nil:
		return errors.New("corral: the embedded nats server was given only the CA: give the server's certificate and key too")
	case c.TLS.Identity.Role != pki.RoleServer:
		return fmt.Errorf("corral: the embedded nats server needs a server certificate, not %s's: make one with corral tls cert create --server ID", c.TLS.Identity)
	}
	return nil
}

// tlsTimeout bounds a client's or a route's TLS handshake, in seconds as
// nats-server counts; it is nats-server's default, said here because a
// peer that never finishes its handshake must not hold a connection.
const tlsTimeout = 2

// Embedded is a nats-server running in this process.
type Embedded struct {
	ns      *server.Server
	cluster bool
}

// StartEmbedded starts a nats-server in this process and waits until it
// accepts connections.
func StartEmbedded(c EmbeddedConfig) (*Embedded, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	host := c.Host
	if host == "" {
		host = "127.0.0.1"
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &server.Options{
		ServerName: "corral-" + strconv.Itoa(c.Port),
		Host:       host,
		Port:       c.Port,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	if c.ClusterPort != 0 {
		opts.ServerName = ""
		opts.Cluster = server.ClusterOpts{Name: c.ClusterName, Host: c.ClusterHost, Port: c.ClusterPort}
		if opts.Cluster.Name == "" {
			opts.Cluster.Name = "corral"
		}
		if opts.Cluster.Host == "" {
			opts.Cluster.Host = host
		}
		for _, r := range c.Routes {
			u, _ := url.Parse(r)
			opts.Routes = append(opts.Routes, u)
		}
	}
	if c.TLS != nil {
		if err := secure(opts, c.TLS, log); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("corral: nats server: %w", err)
	}
	if c.Log != nil {
		ns.SetLoggerV2(natsLogger{c.Log}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("corral: embedded nats server did not become ready in 10s (is the port free?)")
	}
	return &Embedded{ns: ns, cluster: c.ClusterPort != 0}, nil
}

// secure sets opts up for mutual TLS with l, a server's certificate.
func secure(opts *server.Options, l *pki.Loaded, log *slog.Logger) error {
	// Clients: every one proves a certificate of the CA during the
	// handshake; certAuth then turns its role and name into what it may
	// publish and subscribe to. nats-server reads "verify" from ClientAuth.
	client, err := l.ListenConfig(tls.RequireAndVerifyClientCert)
	if err != nil {
		return err
	}
	opts.TLSConfig = client
	opts.TLSVerify = true
	opts.TLSTimeout = tlsTimeout
	opts.CustomClientAuthentication = certAuth{log: log}
	if opts.Cluster.Port == 0 {
		return nil
	}
	// Routes: nats-server uses one configuration for the routes it accepts
	// (as a TLS server) and those it dials (as a TLS client), so it holds
	// both sides' settings; see routeTLS.
	route, err := routeTLS(l)
	if err != nil {
		return err
	}
	opts.Cluster.TLSConfig = route
	opts.Cluster.TLSTimeout = tlsTimeout
	opts.CustomRouterAuthentication = routeAuth{log: log}
	return nil
}

// ClientURL is the URL clients connect to: tls://host:port when the bus
// runs with TLS, nats://host:port otherwise.
func (e *Embedded) ClientURL() string { return e.ns.ClientURL() }

// ClusterURL is the route URL other embedded servers join, or "" when the
// server is not clustered.
func (e *Embedded) ClusterURL() string {
	if !e.cluster {
		return ""
	}
	a := e.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + a.String()
}

// Close shuts the server down and waits until it has.
func (e *Embedded) Close() {
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
}

// NumRoutes is how many other servers this one is routed to.
func (e *Embedded) NumRoutes() int { return e.ns.NumRoutes() }

// natsLogger hands nats-server's log lines to slog: its notices are
// chatty (listening, ready, routes joined), so they go to debug.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  {}
func (l natsLogger) Tracef(format string, v ...any)  {}
