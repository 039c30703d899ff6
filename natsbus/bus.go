package natsbus

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

// EventPrefix is the subject prefix of committed events. An event of type
// guest.defined travels on corral.events.guest.defined, so
// "corral.events.>" receives them all.
const EventPrefix = "corral.events."

// EventSubject returns the subject events of type t are published on.
func EventSubject(t events.Type) string { return EventPrefix + t.String() }

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

// StartEmbedded starts a nats-server in this process and waits until it
// accepts connections.
func StartEmbedded(c EmbeddedConfig) (*server.Server, error) {
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
	return ns, nil
}

// Connect connects to NATS at urls (comma-separated), reconnecting forever.
func Connect(urls, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(urls,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(64<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("corral: connect to nats %s: %w", urls, err)
	}
	return nc, nil
}

// PublishEvent publishes one encoded event with its index.
func PublishEvent(nc *nats.Conn, index uint64, t events.Type, data []byte) error {
	m := nats.NewMsg(EventSubject(t))
	m.Header.Set(HeaderIndex, strconv.FormatUint(index, 10))
	m.Data = data
	return nc.PublishMsg(m)
}

// Index returns the event index a message carries.
func Index(m *nats.Msg) (uint64, error) {
	v := m.Header.Get(HeaderIndex)
	i, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("corral: message on %s has no valid %s header (%q)", m.Subject, HeaderIndex, v)
	}
	return i, nil
}

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
