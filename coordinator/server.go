package coordinator

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// RaftConfig holds the raft settings corral exposes.
type RaftConfig struct {
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	LeaderLease      time.Duration
	// MaxAppendEntries is how many queued commands raft writes with one
	// fsync and sends in one message: the batching knob.
	MaxAppendEntries  int
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// CommitTimeout is how long a follower may go without hearing of the
	// latest commit when no new entry is sent: a consistent read on a
	// follower just after a write waits for it (README: raft's timers).
	CommitTimeout time.Duration
	// MaxRPCsInFlight is raft's replication pipelining: 1 (the default)
	// sends one batch to a follower at a time. hashicorp/raft's pipeline
	// (2 and more) can deadlock when a follower refuses an append, which
	// stops replication to that follower and hangs the leader's shutdown;
	// with MaxAppendEntries batching it gains little (raft PR #541).
	MaxRPCsInFlight int
}

// DefaultRaftConfig suits servers on one LAN.
func DefaultRaftConfig() RaftConfig {
	return RaftConfig{
		HeartbeatTimeout:  500 * time.Millisecond,
		ElectionTimeout:   500 * time.Millisecond,
		LeaderLease:       250 * time.Millisecond,
		MaxAppendEntries:  512,
		SnapshotThreshold: 8192,
		TrailingLogs:      10240,
		CommitTimeout:     5 * time.Millisecond,
		MaxRPCsInFlight:   1,
	}
}

// Config configures one coordinator server.
type Config struct {
	ID       string // server ID, [a-z0-9][a-z0-9-]{0,62}
	DataDir  string
	RaftAddr string // host:port raft binds and advertises; port 0 picks one
	HTTPAddr string // host:port of the HTTP API; port 0 picks one
	// Bootstrap makes a new server the first member of a new cluster. It is
	// ignored when the data directory already holds raft state.
	Bootstrap bool
	// Join lists HTTP addresses of existing servers to ask for membership.
	Join []string
	// NATSURL is an external NATS cluster; empty runs an embedded server
	// configured by NATS.
	NATSURL string
	NATS    bus.EmbeddedConfig
	Store   StoreConfig
	Raft    RaftConfig
	// Nodes are registered by the leader when missing: corral dev uses it
	// for its local host until the node agent registers itself.
	Nodes []events.NodeRegistered
	// NodeDownTimeout is how long the leader waits without a heartbeat from
	// a node's agent before declaring the node down and placing its guests
	// elsewhere. Agents must fence themselves well before it passes.
	NodeDownTimeout time.Duration
	// SchedulerAlgorithm, binpack or spread, is set by the leader when the
	// cluster has no scheduler configuration yet.
	SchedulerAlgorithm string
	Logger             *slog.Logger

	// TLS is the server's certificate and the cluster CA: the HTTP API,
	// raft and NATS (client port and routes) then speak only mutual TLS,
	// and every caller is the identity its certificate names. It is
	// required unless Insecure.
	TLS *pki.Loaded
	// CA, when set, lets this server sign node certificates for agents
	// that enroll with a one-time join token.
	CA *pki.CA
	// Insecure runs with no TLS and no authentication at all: for tests
	// and simulations in one process, never for a cluster on a network.
	Insecure bool
	// Limits bound what one caller may send.
	Limits Limits
	// MetricsRequireToken makes GET /metrics ask for a token with
	// cluster:read as well as a certificate; by default any certificate
	// of the cluster reads it, as the metrics carry no secrets.
	MetricsRequireToken bool
}

// DefaultConfig returns a single-server configuration under dataDir.
func DefaultConfig(dataDir string) Config {
	return Config{
		ID:        "s1",
		DataDir:   dataDir,
		RaftAddr:  "127.0.0.1:4647",
		HTTPAddr:  "127.0.0.1:4646",
		Bootstrap: true,
		NATS:      bus.EmbeddedConfig{Port: 4222},
		Store:     DefaultStoreConfig(),
		Raft:      DefaultRaftConfig(),

		NodeDownTimeout: 30 * time.Second,
		Limits:          DefaultLimits(),
	}
}

// Validate checks the configuration and says what to fix.
func (c *Config) Validate() error {
	if err := events.ValidateID("server id", c.ID); err != nil {
		return err
	}
	if c.DataDir == "" {
		return errors.New("corral: data dir is empty: give --data-dir")
	}
	for name, a := range map[string]string{"raft address": c.RaftAddr, "http address": c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("corral: %s %q is not host:port", name, a)
		}
	}
	if c.Bootstrap && len(c.Join) > 0 {
		return errors.New("corral: give either --bootstrap (first server) or --join (later servers), not both")
	}
	if c.SchedulerAlgorithm != "" && c.SchedulerAlgorithm != "binpack" && c.SchedulerAlgorithm != "spread" {
		return fmt.Errorf("corral: scheduler algorithm %q is not known: use binpack or spread", c.SchedulerAlgorithm)
	}
	if c.NodeDownTimeout < time.Second {
		return fmt.Errorf("corral: node-down timeout %v is too short: use at least 1s (default 30s)", c.NodeDownTimeout)
	}
	if c.Raft.MaxAppendEntries < 1 {
		return errors.New("corral: raft max append entries must be at least 1")
	}
	if c.NATSURL == "" {
		if err := c.NATS.Validate(); err != nil {
			return err
		}
	}
	if c.TLS == nil && !c.Insecure {
		return errors.New("corral: a server needs TLS: give --tls-ca, --tls-cert and --tls-key (make them with corral tls ca create and corral tls cert create --server ID)")
	}
	if c.TLS != nil && c.TLS.Cert == nil {
		return fmt.Errorf("corral: a server needs its own certificate as well as the CA's: give --tls-cert and --tls-key (corral tls cert create --server %s)", c.ID)
	}
	if c.TLS != nil && c.TLS.Identity != (pki.Identity{Role: pki.RoleServer, Name: c.ID}) {
		return fmt.Errorf("corral: the TLS certificate names %s, but this server is server:%s: use the certificate made with corral tls cert create --server %s", c.TLS.Identity, c.ID, c.ID)
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	return c.Store.Validate()
}

// Bus is what the server needs of the delivery bus: publishing committed
// events and node updates, answering agents' heartbeats, and asking an
// agent for a guest's log. *bus.Conn is the real one; simtest has an
// in-memory one.
type Bus interface {
	Publish(subject string, index, prev uint64, data []byte) error
	Handle(subject string, handler func(subject string, data []byte) []byte) (stop func(), err error)
	Request(ctx context.Context, subject string, data []byte) ([]byte, error)
}

// Clock tells the time events are stamped with.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Deps are the server's collaborators. Every nil field gets the real one
// corral server uses: raft's TCP transport on Config.RaftAddr (mutual TLS
// when Config.TLS is set), raft-boltdb
// in DataDir/raft.db as log and stable store, file snapshots in DataDir,
// NATS (embedded unless Config.NATSURL), a listener on Config.HTTPAddr, a
// plain HTTP client for forwarding, and the wall clock. raft's in-memory
// transport and stores work through the same path.
type Deps struct {
	Transport   raft.Transport
	LogStore    raft.LogStore
	StableStore raft.StableStore
	Snapshots   raft.SnapshotStore
	Bus         Bus
	Listener    net.Listener
	HTTPClient  *http.Client
	Clock       Clock
}

// Server is one coordinator: raft, the state machine, the event store,
// publishing to the bus and the HTTP API. Create it with New, start it
// with Run, wait for Ready, stop it with Close.
type Server struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	raft  *raft.Raft
	trans raft.Transport
	fsm   *fsm
	// proposer commits what Submit proposes, coalescing what arrives
	// together.
	proposer *proposer
	store    *Store
	clock    Clock

	closers []func() error // what New opened that Close must close, in order

	nats   *bus.Embedded // nil unless embedded
	bus    Bus
	httpLn net.Listener
	http   *http.Server
	client *http.Client

	// baseCtx is the parent of every request's context; Close cancels it
	// first so that event streams end at once instead of holding Shutdown.
	baseCtx    context.Context
	cancelBase context.CancelFunc

	limits    Limits
	limiter   *limiter
	metrics   *metrics
	routeList []Route
	denials   atomic.Uint64 // requests refused since start

	skippedNodes sync.Map // reasons already logged by reportSkipped
	// leaderReady is set while this server leads and has applied what
	// earlier leaders committed (see read.go); leading while raft says it
	// leads.
	leaderReady atomic.Bool
	leading     atomic.Bool
	// lastAppendWarn is when waitForRoom last logged; only raft's
	// goroutine touches it.
	lastAppendWarn time.Time

	leaderNotify chan bool
	ready        chan struct{}
	readyOnce    sync.Once
	closeOnce    sync.Once
	closeErr     error
	done         chan struct{}
	wg           sync.WaitGroup
}

// New opens the data directory and sets up raft, the bus and the HTTP
// listener from deps (the real ones where nil). It serves nothing until
// Run.
func New(cfg Config, deps Deps) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("server", cfg.ID)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("corral: data dir: %w", err)
	}
	s := &Server{cfg: cfg, deps: deps, log: log, ready: make(chan struct{}), done: make(chan struct{}),
		leaderNotify: make(chan bool, 16), client: deps.HTTPClient, clock: deps.Clock, bus: deps.Bus}
	s.limits = cfg.Limits.withDefaults()
	s.metrics = newMetrics()
	s.limiter = newLimiter(s.limits)
	if s.client == nil {
		// Servers reach each other (forwarded writes, read indexes,
		// joins) keeping up to 256 connections to each: the default
		// pool's 2 per host (100 in all) would make a follower forwarding
		// many clients' writes dial anew for most of them.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 0, 256
		if cfg.TLS != nil {
			// With their own certificate, verifying the peer's.
			tr.TLSClientConfig = cfg.TLS.DialConfig()
		}
		s.client = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	if s.clock == nil {
		s.clock = wallClock{}
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	disk := newDiskGuard(cfg.ID, cfg.DataDir)
	if s.store, err = OpenStore(filepath.Join(cfg.DataDir, "events.db"), cfg.Store); err != nil {
		return nil, disk.opening(err)
	}
	s.store.disk = disk
	disk.onChange = func(full bool, err error) {
		if full {
			log.Error("disk full: refusing writes until there is room", "err", err)
			go s.handOffWhileDiskFull()
		} else {
			log.Info("disk has room again: accepting writes", "dir", cfg.DataDir)
		}
	}
	if d := s.store.Damage(); d != nil {
		log.Warn("event store was damaged: moved it aside and started an empty one; raft replays its log into it",
			"found", d.Err, "moved_to", d.MovedTo)
	}
	s.fsm = newFSM(s.store, cfg.Store.CheckpointEvery, log)
	s.fsm.onApply = s.metrics.committed
	s.fsm.onStored = func(n int) { s.metrics.appended.Add(float64(n)) }

	if s.bus == nil {
		url := cfg.NATSURL
		if url == "" {
			ncfg := cfg.NATS
			ncfg.TLS = cfg.TLS
			ncfg.Log = log.With("component", "nats")
			if s.nats, err = bus.StartEmbedded(ncfg); err != nil {
				return nil, err
			}
			url = s.nats.ClientURL()
		}
		opts := []bus.DialOption{bus.WithLogger(log)}
		if cfg.TLS != nil {
			opts = append(opts, bus.WithTLS(cfg.TLS.DialConfig()))
		}
		c, err := bus.Dial(url, "corral-server-"+cfg.ID, opts...)
		if err != nil {
			return nil, err
		}
		s.bus = c
		s.closers = append(s.closers, func() error { c.Close(); return nil })
	}

	if s.httpLn = deps.Listener; s.httpLn == nil {
		if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("corral: http listen %s: %w (is another corral running? use --http-addr)", cfg.HTTPAddr, err)
		}
	}
	if cfg.TLS != nil {
		// Certificates are verified when given; a request without one
		// reaches only enrollment, which carries a join token instead.
		tc, err := cfg.TLS.ListenConfig(tls.VerifyClientCertIfGiven)
		if err != nil {
			s.httpLn.Close()
			return nil, err
		}
		// HTTP/1.1 only: a Go client would put all its concurrent
		// requests on one HTTP/2 connection, which at 256 clients served a
		// third fewer creates than a pool of HTTP/1.1 connections.
		tc.NextProtos = []string{"http/1.1"}
		s.httpLn = tls.NewListener(s.httpLn, tc)
	}
	if err = s.startRaft(); err != nil {
		return nil, err
	}
	s.metrics.watch(s)
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second,
		// An idle connection is closed after two minutes, so nobody holds
		// connections open for free.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: s.limits.MaxHeaderBytes,
		// Failed handshakes (plain HTTP, unknown certificates) are
		// attacks or mistakes of the caller: logged, not printed raw.
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return s.baseCtx }}
	return s, nil
}

// Handler is the server's HTTP API, for serving it without a listener.
func (s *Server) Handler() http.Handler { return s.http.Handler }

func (s *Server) startRaft() error {
	cfg := s.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Raft.LeaderLease
	rc.MaxAppendEntries = cfg.Raft.MaxAppendEntries
	// No BatchApplyCh: the leader's proposer already puts what arrives
	// together into one entry, and raft does not answer the futures left
	// in a buffered apply channel when it shuts down, which would hold the
	// proposer's entry in flight for good.
	rc.BatchApplyCh = false
	rc.SnapshotThreshold = cfg.Raft.SnapshotThreshold
	rc.TrailingLogs = cfg.Raft.TrailingLogs
	if cfg.Raft.CommitTimeout > 0 {
		rc.CommitTimeout = cfg.Raft.CommitTimeout
	}
	rc.NotifyCh = s.leaderNotify
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{s.log}})
	rc.Logger = hl

	logStore, stable := s.deps.LogStore, s.deps.StableStore
	if logStore == nil || stable == nil {
		bs, err := openRaftLog(cfg.DataDir)
		if err != nil {
			return s.store.disk.opening(err)
		}
		s.closers = append(s.closers, bs.Close)
		if logStore == nil {
			logStore = bs
		}
		if stable == nil {
			stable = diskStableStore{bs, s.store.disk}
		}
	}
	logStore = diskLogStore{LogStore: logStore, g: s.store.disk, wait: s.waitForRoom}
	logs, err := raft.NewLogCache(1024, logStore)
	if err != nil {
		return err
	}
	snaps := s.deps.Snapshots
	if snaps == nil {
		if snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hl); err != nil {
			return fmt.Errorf("corral: raft snapshot store: %w", err)
		}
	}
	if s.trans = s.deps.Transport; s.trans == nil {
		addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
		if err != nil {
			return fmt.Errorf("corral: raft address %q: %w", cfg.RaftAddr, err)
		}
		var adv net.Addr
		if addr.Port != 0 {
			adv = addr
		}
		var nt *raft.NetworkTransport
		tc := &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, Logger: hl, MaxRPCsInFlight: max(cfg.Raft.MaxRPCsInFlight, 1)}
		if cfg.TLS != nil {
			nt, err = newTLSTransport(cfg.RaftAddr, adv, cfg.TLS, tc)
		} else if nt, err = raft.NewTCPTransportWithConfig(cfg.RaftAddr, adv, tc); err != nil {
			err = fmt.Errorf("corral: raft transport on %s: %w", cfg.RaftAddr, err)
		}
		if err != nil {
			return err
		}
		s.trans = nt
		s.closers = append(s.closers, nt.Close)
	}
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return err
	}
	if last, err := logs.LastIndex(); err == nil {
		s.fsm.replayTo.Store(last) // what NewRaft replays is not news
	}
	if s.raft, err = raft.NewRaft(rc, s.fsm, logs, stable, snaps, s.trans); err != nil {
		return fmt.Errorf("corral: start raft: %w", err)
	}
	s.proposer = newProposer(s.raft.Apply)
	if s.store.Damage() != nil {
		// NewRaft restored the newest snapshot, if any: the store starts there.
		if first, _ := s.store.Bounds(); first > 1 {
			s.log.Warn("the rebuilt event store starts after raft's newest snapshot: events before it are gone from this server, and the event stream answers 410 Gone for them; the state is whole",
				"first_retained_index", first)
		}
	}
	if cfg.Bootstrap && !existing {
		f := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: s.trans.LocalAddr(),
		}}})
		if err := f.Error(); err != nil {
			return fmt.Errorf("corral: bootstrap: %w", err)
		}
	}
	return nil
}

// HTTPAddr returns the address the API listens on.
func (s *Server) HTTPAddr() string {
	if _, ok := s.httpLn.Addr().(*net.TCPAddr); !ok && s.cfg.HTTPAddr != "" {
		return s.cfg.HTTPAddr
	}
	return s.httpLn.Addr().String()
}

// RaftAddr returns the address raft listens on.
func (s *Server) RaftAddr() string { return string(s.trans.LocalAddr()) }

// NATSURL returns the URL of the NATS the server publishes to, "" when it
// was given another bus.
func (s *Server) NATSURL() string {
	if s.nats != nil {
		return s.nats.ClientURL()
	}
	return s.cfg.NATSURL
}

// NATSClusterURL returns the route URL of the embedded NATS server, or ""
// when it is not clustered.
func (s *Server) NATSClusterURL() string {
	if s.nats == nil {
		return ""
	}
	return s.nats.ClusterURL()
}

// ID returns the server's ID.
func (s *Server) ID() string { return s.cfg.ID }

// Ready is closed once the server knows a leader and has applied what was
// committed when it learned of it.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// IsLeader reports whether this server is the raft leader.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// Run serves the API and runs the background loops until ctx ends or Close
// is called. It returns nil on a clean stop.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.goLoop(func() { s.readyLoop(ctx) })
	s.goLoop(func() { s.leaderLoop(ctx) })
	s.goLoop(func() { s.publishLoop(ctx) })
	s.goLoop(func() { s.retentionLoop(ctx) })
	s.goLoop(func() { s.backfillLoop(ctx) })
	if len(s.cfg.Join) > 0 {
		s.goLoop(func() { s.joinLoop(ctx) })
	}
	select {
	case <-ctx.Done():
	case <-s.done:
	case err := <-errc:
		cancel()
		s.Close()
		return fmt.Errorf("corral: http: %w", err)
	}
	cancel()
	return s.Close()
}

func (s *Server) goLoop(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops the server: HTTP, loops, raft, NATS and the stores. It is
// safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		if s.http != nil {
			s.cancelBase()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s.http.Shutdown(ctx)
			cancel()
			s.http.Close()
		} else if s.httpLn != nil {
			s.httpLn.Close()
		}
		s.wg.Wait()
		var errs []error
		if s.raft != nil {
			errs = append(errs, s.raft.Shutdown().Error())
		}
		for _, c := range s.closers {
			errs = append(errs, c())
		}
		if s.fsm != nil {
			s.fsm.close()
		}
		if s.store != nil {
			errs = append(errs, s.store.Close())
		}
		if s.nats != nil {
			s.nats.Close()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func (s *Server) readyLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if _, id := s.raft.LeaderWithID(); id != "" && s.raft.AppliedIndex() >= s.raft.CommitIndex() {
			s.readyOnce.Do(func() { close(s.ready) })
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// joinLoop asks the configured servers to add this one until one accepts.
func (s *Server) joinLoop(ctx context.Context) {
	body, _ := json.Marshal(events.ServerRegistered{ID: s.cfg.ID, RaftAddr: s.RaftAddr(), HTTPAddr: s.HTTPAddr()})
	backoff := 50 * time.Millisecond
	for {
		for _, addr := range s.cfg.Join {
			req, err := http.NewRequestWithContext(ctx, "POST", s.peerURL(addr)+"/v1/cluster/join", bytes.NewReader(body))
			if err != nil {
				s.log.Error("join", "addr", addr, "err", err)
				continue
			}
			resp, err := s.client.Do(req)
			if err == nil {
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					s.log.Info("joined cluster", "via", addr)
					return
				}
				err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
			}
			s.log.Warn("join failed; retrying", "addr", addr, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// peerURL is the base URL of another server's API at addr (host:port).
func (s *Server) peerURL(addr string) string {
	if s.cfg.TLS != nil {
		// Never plain HTTP between servers that speak TLS: forwards carry
		// tokens.
		if _, rest, ok := strings.Cut(addr, "://"); ok {
			addr = rest
		}
		return "https://" + strings.TrimRight(addr, "/")
	}
	return api.BaseURL(addr)
}

// slogWriter feeds raft's hclog lines into slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}
