package bus

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

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
	return nil
}

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
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("corral: nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("corral: embedded nats server did not become ready in 10s (is the port free?)")
	}
	return &Embedded{ns: ns, cluster: c.ClusterPort != 0}, nil
}

// ClientURL is the URL clients connect to.
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

// connect connects to NATS at urls (comma-separated), reconnecting forever.
func connect(urls, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{
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
	}, extra...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("corral: connect to nats %s: %w", urls, err)
	}
	return nc, nil
}

// NumRoutes is how many other servers this one is routed to.
func (e *Embedded) NumRoutes() int { return e.ns.NumRoutes() }
