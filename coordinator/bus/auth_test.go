package bus

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

var (
	idS1    = pki.Identity{Role: pki.RoleServer, Name: "s1"}
	idS2    = pki.Identity{Role: pki.RoleServer, Name: "s2"}
	idS3    = pki.Identity{Role: pki.RoleServer, Name: "s3"}
	idN1    = pki.Identity{Role: pki.RoleNode, Name: "n1"}
	idN2    = pki.Identity{Role: pki.RoleNode, Name: "n2"}
	idAlice = pki.Identity{Role: pki.RoleClient, Name: "alice"}
)

// testCerts holds the cluster's certificates and, to pose with, some of
// another CA's.
type testCerts struct {
	ca      *pki.Loaded // the CA alone
	of      map[pki.Identity]*pki.Loaded
	foreign map[pki.Identity]*pki.Loaded
}

func makeCerts(t *testing.T) testCerts {
	t.Helper()
	load := func(dir string, ids ...pki.Identity) map[pki.Identity]*pki.Loaded {
		files, err := pki.EnsureDir(dir, ids...)
		if err != nil {
			t.Fatal(err)
		}
		out := map[pki.Identity]*pki.Loaded{}
		for id, f := range files {
			if out[id], err = f.Load(); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	dir := t.TempDir()
	tc := testCerts{
		of:      load(dir, idS1, idS2, idS3, idN1, idN2, idAlice),
		foreign: load(t.TempDir(), idS1, idN1),
	}
	ca, _ := pki.CAFileNames(dir)
	var err error
	if tc.ca, err = (pki.Files{CA: ca}).Load(); err != nil {
		t.Fatal(err)
	}
	return tc
}

// errLog is a slog handler keeping the errors logged, so a test can see
// that an asynchronous refusal was reported.
type errLog struct {
	mu       sync.Mutex
	errs     []error
	warnings int // records at warning or above
}

func (l *errLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *errLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *errLog) WithGroup(string) slog.Handler            { return l }
func (l *errLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		l.mu.Lock()
		l.warnings++
		l.mu.Unlock()
	}
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok {
			l.mu.Lock()
			l.errs = append(l.errs, err)
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *errLog) warned() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.warnings
}

func (l *errLog) has(target error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func startTLS(t *testing.T, c EmbeddedConfig) *Embedded {
	t.Helper()
	if c.Port == 0 {
		c.Port = -1
	}
	e, err := StartEmbedded(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func dialAs(t *testing.T, url string, l *pki.Loaded, log *errLog) *Conn {
	t.Helper()
	opts := []DialOption{WithTLS(l.DialConfig())}
	if log != nil {
		opts = append(opts, WithLogger(slog.New(log)))
	}
	c, err := Dial(url, l.Identity.String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.nc.Flush(); err != nil { // connected, and accepted
		t.Fatalf("%s could not connect: %v", l.Identity, err)
	}
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var seq atomic.Uint64

// published reports whether a publish by from on subject reaches all, a
// server's subscription to everything. from then publishes a marker on
// marker, a subject it may publish on: NATS keeps one publisher's order,
// so once the marker is in, a publish that was let through is too.
func published(t *testing.T, all <-chan Msg, from *Conn, subject, marker string) bool {
	t.Helper()
	row, mark := publishWithMarker(t, from, subject, marker)
	seen := false
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-all:
			switch string(m.Data) {
			case row:
				if m.Subject != subject {
					t.Fatalf("published on %s, arrived on %s", subject, m.Subject)
				}
				seen = true
			case mark:
				return seen
			}
		case <-deadline:
			t.Fatalf("the marker after a publish on %s never arrived", subject)
		}
	}
}

// delivered reports whether a server's publish on sample reaches to's
// subscription to subject, as nats-server decides it: the subscription
// is made with nats.go directly, bypassing Conn's own refusal check. A
// marker on marker, which to may subscribe to, follows on the same
// channel in order.
func delivered(t *testing.T, to, from *Conn, subject, sample, marker string) bool {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	for _, s := range []string{subject, marker} {
		sub, err := to.nc.ChanSubscribe(s, ch)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := to.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	row, mark := publishWithMarker(t, from, sample, marker)
	seen := false
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-ch:
			switch string(m.Data) {
			case row:
				seen = true
			case mark:
				return seen
			}
		case <-deadline:
			t.Fatalf("the marker after a publish on %s never arrived", sample)
		}
	}
}

// publishWithMarker publishes a numbered row on subject and then a marker
// on marker, and returns both payloads.
func publishWithMarker(t *testing.T, from *Conn, subject, marker string) (row, mark string) {
	t.Helper()
	n := seq.Add(1)
	row, mark = fmt.Sprintf("row-%d", n), fmt.Sprintf("mark-%d", n)
	if err := from.Publish(subject, n, 0, []byte(row)); err != nil {
		t.Fatal(err)
	}
	if err := from.Publish(marker, n, 0, []byte(mark)); err != nil {
		t.Fatal(err)
	}
	return row, mark
}

func TestPermissionsBySubjectAndIdentity(t *testing.T) {
	certs := makeCerts(t)
	e := startTLS(t, EmbeddedConfig{TLS: certs.of[idS1]})
	if !strings.HasPrefix(e.ClientURL(), "tls://") {
		t.Fatalf("client URL %s, want tls://", e.ClientURL())
	}
	watcher := dialAs(t, e.ClientURL(), certs.of[idS1], nil)
	all, stopAll, err := watcher.Subscribe(">")
	if err != nil {
		t.Fatal(err)
	}
	defer stopAll()
	var n1Log errLog
	n1 := dialAs(t, e.ClientURL(), certs.of[idN1], &n1Log)
	s2 := dialAs(t, e.ClientURL(), certs.of[idS2], nil)

	// The node's own updates keep arriving through every refusal below: a
	// refused publish or subscription costs the connection nothing.
	updates := make(chan Msg, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watching := make(chan struct{})
	go n1.Watch(ctx, NodeSubject("n1"), func() { close(watching) }, func(m Msg) { updates <- m })
	<-watching

	type row struct {
		name    string
		subject string
		sample  string // a subject matching it, to publish on; "" for subject
		// What node n1 may do; a server may do everything.
		n1Pub, n1Sub bool
	}
	rows := []row{
		{name: "event", subject: EventSubject(events.TypeGuestDefined)},
		{name: "all events", subject: EventPrefix + ">", sample: EventSubject(events.TypeNodeDown)},
		{name: "event gap", subject: EventGapSubject},
		{name: "published", subject: PublishedSubject},
		{name: "own updates", subject: NodeSubject("n1"), n1Sub: true},
		{name: "other's updates", subject: NodeSubject("n2")},
		{name: "all updates", subject: NodePrefix + "*", sample: NodeSubject("n2")},
		{name: "own heartbeat", subject: HeartbeatSubject("n1"), n1Pub: true},
		{name: "other's heartbeat", subject: HeartbeatSubject("n2")},
		{name: "own log reads", subject: LogsSubject("n1"), n1Sub: true},
		{name: "other's log reads", subject: LogsSubject("n2")},
		{name: "own inbox", subject: NodeInboxPrefix("n1") + ".abc.1", n1Sub: true},
		{name: "own inboxes", subject: NodeInboxPrefix("n1") + ".>", sample: NodeInboxPrefix("n1") + ".x.2", n1Sub: true},
		{name: "other's inbox", subject: NodeInboxPrefix("n2") + ".abc.1"},
		{name: "server inbox", subject: "_INBOX.abc.1"},
		{name: "everything", subject: ">", sample: "corral.anything"},
	}
	actors := []struct {
		name         string
		conn         *Conn
		pubMarker    string
		subMarker    string
		node         bool
		expectPubSub func(row) (bool, bool)
	}{
		{"node n1", n1, HeartbeatSubject("n1"), NodeSubject("n1"), true, func(r row) (bool, bool) { return r.n1Pub, r.n1Sub }},
		{"server s2", s2, PublishedSubject, PublishedSubject, false, func(row) (bool, bool) { return true, true }},
	}
	for _, a := range actors {
		for _, r := range rows {
			wantPub, wantSub := a.expectPubSub(r)
			sample := r.sample
			if sample == "" {
				sample = r.subject
			}
			t.Run(a.name+"/"+r.name, func(t *testing.T) {
				if r.sample == "" { // a publish names one subject
					if got := published(t, all, a.conn, r.subject, a.pubMarker); got != wantPub {
						t.Errorf("publish on %s delivered: %v, want %v", r.subject, got, wantPub)
					}
				}
				if got := delivered(t, a.conn, watcher, r.subject, sample, a.subMarker); got != wantSub {
					t.Errorf("subscription to %s delivered %s: %v, want %v", r.subject, sample, got, wantSub)
				}
				_, stop, err := a.conn.Subscribe(r.subject)
				switch {
				case wantSub && err != nil:
					t.Errorf("Subscribe(%s): %v, want it accepted", r.subject, err)
				case !wantSub && !errors.Is(err, ErrNotPermitted):
					t.Errorf("Subscribe(%s): %v, want ErrNotPermitted", r.subject, err)
				}
				if stop != nil {
					stop()
				}
			})
		}
	}

	waitFor(t, "n1's refused publishes reported to its logger", func() bool { return n1Log.has(nats.ErrPermissionViolation) })
	if err := watcher.Publish(NodeSubject("n1"), 99, 0, []byte("still there")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case m := <-updates:
			if m.Index == 99 {
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatal("n1's own updates stopped arriving after the refusals")
		}
	}
}

func TestRefusedConnections(t *testing.T) {
	certs := makeCerts(t)
	e := startTLS(t, EmbeddedConfig{TLS: certs.of[idS1]})
	u, err := url.Parse(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	watcher := dialAs(t, e.ClientURL(), certs.of[idS1], nil)
	all, stopAll, err := watcher.Subscribe(">")
	if err != nil {
		t.Fatal(err)
	}
	defer stopAll()

	subjects := []string{
		EventSubject(events.TypeGuestDefined), EventGapSubject, PublishedSubject,
		NodeSubject("n1"), HeartbeatSubject("n1"), LogsSubject("n1"), NodeInboxPrefix("n1") + ".x.1", "_INBOX.x.1",
	}
	posing := func(cert *pki.Loaded) *tls.Config {
		// Trusts the real CA, so only the server can refuse.
		c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: certs.ca.Pool, ServerName: pki.ServerName}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert.Cert}
		}
		return c
	}
	cases := []struct {
		name string
		tls  *tls.Config // nil: plain TCP
		// authErr: the handshake passes and certAuth refuses the identity.
		authErr bool
	}{
		{name: "plain TCP"},
		{name: "TLS without a certificate", tls: posing(nil)},
		{name: "node certificate of another CA", tls: posing(certs.foreign[idN1])},
		{name: "server certificate of another CA", tls: posing(certs.foreign[idS1])},
		{name: "client certificate", tls: posing(certs.of[idAlice]), authErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, closed := probe(t, u.Host, c.tls, subjects)
			if !closed {
				t.Fatalf("the server kept the connection open; it answered %q", got)
			}
			if strings.Contains(got, "PONG") || strings.Contains(got, "MSG ") {
				t.Fatalf("the server served the connection: %q", got)
			}
			if c.authErr && !strings.Contains(got, "Authorization Violation") {
				t.Fatalf("the server answered %q, want an authorization violation", got)
			}
		})
	}
	// Nothing any of them tried to publish got through: the watcher, which
	// would have had it long before, sees only its own marker.
	if err := watcher.Publish("corral.probe.marker", 1, 0, []byte("marker")); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		select {
		case m := <-all:
			if string(m.Data) == "bad!" {
				t.Fatalf("a refused connection published on %s", m.Subject)
			}
			done = string(m.Data) == "marker"
		case <-time.After(5 * time.Second):
			t.Fatal("the watcher's marker never arrived")
		}
	}

	// Dial refuses at once what every server would refuse.
	if _, err := Dial(e.ClientURL(), "alice", WithTLS(certs.of[idAlice].DialConfig())); err == nil {
		t.Fatal("Dial accepted a client certificate")
	}
	if _, err := Dial(e.ClientURL(), "nobody", WithTLS(certs.ca.DialConfig())); err == nil {
		t.Fatal("Dial accepted a TLS configuration without a certificate")
	}
}

// probe talks NATS by hand to the client port at addr, over TLS with cfg
// or plain TCP when cfg is nil: it tries to subscribe and publish on every
// subject and pings, and returns what the server answered and whether the
// server closed the connection (rather than leaving it open).
func probe(t *testing.T, addr string, cfg *tls.Config, subjects []string) (answer string, closed bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("the server's first line: %q, %v; want INFO", info, err)
	}
	var rw interface {
		Read([]byte) (int, error)
		Write([]byte) (int, error)
	} = c
	if cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return "", !isTimeout(err)
		}
		rw = tc
	}
	var b strings.Builder
	b.WriteString(`CONNECT {"verbose":false,"pedantic":false,"tls_required":true,"headers":true,"protocol":1}` + "\r\n")
	for i, s := range subjects {
		fmt.Fprintf(&b, "SUB %s %d\r\nPUB %s 4\r\nbad!\r\n", s, i+1, s)
	}
	b.WriteString("PING\r\n")
	rw.Write([]byte(b.String()))
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := rw.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String(), !isTimeout(err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func TestNodeRequests(t *testing.T) {
	certs := makeCerts(t)
	e := startTLS(t, EmbeddedConfig{TLS: certs.of[idS1]})
	srv := dialAs(t, e.ClientURL(), certs.of[idS1], nil)
	n1 := dialAs(t, e.ClientURL(), certs.of[idN1], nil)

	stop, err := srv.Handle(HeartbeatPrefix+"*", func(subject string, data []byte) []byte {
		return []byte("ok " + subject + " " + string(data))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := n1.Request(ctx, HeartbeatSubject("n1"), []byte("beat"))
	if err != nil || string(got) != "ok corral.heartbeat.n1 beat" {
		t.Fatalf("n1's heartbeat: %q, %v; want the server's answer", got, err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if got, err := n1.Request(short, HeartbeatSubject("n2"), []byte("forged")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("n1's heartbeat for n2: %q, %v; want ErrTimeout", got, err)
	}

	// n1 answers the server's log reads for n1, not for n2.
	serving, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	served := make(chan error, 1)
	go func() {
		served <- n1.Serve(serving, LogsSubject("n1"), func(req []byte) []byte { return []byte("log of " + string(req)) })
	}()
	var reply []byte
	waitFor(t, "n1 answering log reads", func() bool {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		reply, err = srv.Request(rctx, LogsSubject("n1"), []byte("g1"))
		if err != nil && !errors.Is(err, ErrNoResponders) {
			t.Fatal(err)
		}
		return err == nil
	})
	if string(reply) != "log of g1" {
		t.Fatalf("n1's log reply %q, want %q", reply, "log of g1")
	}
	if err := n1.Serve(ctx, LogsSubject("n2"), func([]byte) []byte { return nil }); !errors.Is(err, ErrNotPermitted) {
		t.Fatalf("n1 serving n2's log reads: %v, want ErrNotPermitted", err)
	}
	if _, err := srv.Request(ctx, LogsSubject("n2"), []byte("g2")); !errors.Is(err, ErrNoResponders) {
		t.Fatalf("a log read for n2: %v, want ErrNoResponders", err)
	}
	for _, s := range []string{NodeSubject("n2"), EventPrefix + ">"} {
		if err := n1.Watch(ctx, s, nil, func(Msg) {}); !errors.Is(err, ErrNotPermitted) {
			t.Fatalf("n1 watching %s: %v, want ErrNotPermitted", s, err)
		}
	}
	stopServing()
	if err := <-served; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve after its context ended: %v", err)
	}
}

func TestTLSRoutes(t *testing.T) {
	certs := makeCerts(t)
	var aLog errLog
	a := startTLS(t, EmbeddedConfig{TLS: certs.of[idS1], ClusterPort: -1, Log: slog.New(&aLog)})
	b := startTLS(t, EmbeddedConfig{TLS: certs.of[idS2], ClusterPort: -1, Routes: []string{a.ClusterURL()}})
	waitFor(t, "the two servers routed", func() bool { return a.NumRoutes() > 0 && b.NumRoutes() > 0 })

	// A node on one server gets what a server publishes on the other.
	srv := dialAs(t, a.ClientURL(), certs.of[idS1], nil)
	n1 := dialAs(t, b.ClientURL(), certs.of[idN1], nil)
	msgs, stop, err := n1.Subscribe(NodeSubject("n1"))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitFor(t, "n1 on b receiving a's publish", func() bool {
		// The subscription reaches a over the route a moment later.
		if err := srv.Publish(NodeSubject("n1"), 1, 0, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case <-msgs:
			return true
		case <-time.After(20 * time.Millisecond):
			return false
		}
	})

	// Accepting: only a server of the cluster gets a's route INFO.
	host := strings.TrimPrefix(a.ClusterURL(), "nats-route://")
	posing := func(cert *pki.Loaded) *tls.Config {
		c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: certs.ca.Pool, ServerName: pki.ServerName}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert.Cert}
		}
		return c
	}
	for _, c := range []struct {
		name string
		cert *pki.Loaded
		want bool
	}{
		{"server of the cluster", certs.of[idS3], true},
		{"node certificate", certs.of[idN1], false},
		{"client certificate", certs.of[idAlice], false},
		{"server certificate of another CA", certs.foreign[idS1], false},
		{"no certificate", nil, false},
	} {
		t.Run("accept/"+c.name, func(t *testing.T) {
			if got := routeGreeted(t, host, posing(c.cert)); got != c.want {
				t.Fatalf("route from a %s greeted: %v, want %v", c.name, got, c.want)
			}
		})
	}

	// a said why it refused them.
	waitFor(t, "a logging the refused routes", func() bool { return aLog.warned() >= 4 })

	// Dialling: a route leads only to a server of the cluster.
	for _, c := range []struct {
		name string
		cert *pki.Loaded
		want bool
	}{
		{"server of the cluster", certs.of[idS3], true},
		{"node certificate", certs.of[idN1], false},
		{"server certificate of another CA", certs.foreign[idS1], false},
	} {
		t.Run("dial/"+c.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
				Certificates: []tls.Certificate{*c.cert.Cert},
				ClientAuth:   tls.RequireAnyClientCert,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				if conn, err := ln.Accept(); err == nil {
					accepted <- conn
				}
			}()
			startTLS(t, EmbeddedConfig{TLS: certs.of[idS2], ClusterPort: -1, Routes: []string{"nats-route://" + ln.Addr().String()}})
			var conn net.Conn
			select {
			case conn = <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("the server never dialled its route")
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			tc := conn.(*tls.Conn)
			got := tc.Handshake() == nil
			if got {
				// The dialling server goes on with its CONNECT.
				line, err := bufio.NewReader(tc).ReadString(' ')
				got = err == nil && line == "CONNECT "
			}
			if got != c.want {
				t.Fatalf("the server routed to a %s: %v, want %v", c.name, got, c.want)
			}
		})
	}
}

// routeGreeted dials a route port with cfg and reports whether the server
// sent its route INFO, which it does only once it has accepted the
// handshake.
func routeGreeted(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false // refused in the handshake (TLS 1.2 or a verification error)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString(' ')
	if isTimeout(err) {
		t.Fatal("the server neither greeted nor closed the route")
	}
	return err == nil && line == "INFO "
}

func TestPermissionsFor(t *testing.T) {
	for _, c := range []struct {
		id      pki.Identity
		refused bool
	}{
		{idS1, false},
		{idN1, false},
		{pki.Identity{Role: pki.RoleNode, Name: "n1.x"}, true}, // would reach into n1's inbox
		{idAlice, true},
		{pki.Identity{Role: "admin", Name: "root"}, true},
		{pki.Identity{}, true},
	} {
		p, err := permissionsFor(c.id)
		if (err != nil) != c.refused {
			t.Errorf("%s: %v, want refused %v", c.id, err, c.refused)
		}
		if c.id == idS1 && p != nil {
			t.Errorf("a server is restricted: %+v", p)
		}
		if c.id == idN1 && (p == nil || p.Publish == nil || p.Subscribe == nil || p.Response == nil || p.Response.MaxMsgs < 1 || p.Response.Expires <= 0) {
			t.Errorf("node n1's permissions are incomplete: %+v", p)
		}
	}
}

func TestEmbeddedTLSNeedsServerCertificate(t *testing.T) {
	certs := makeCerts(t)
	for name, l := range map[string]*pki.Loaded{"node": certs.of[idN1], "CA only": certs.ca, "client": certs.of[idAlice]} {
		if _, err := StartEmbedded(EmbeddedConfig{Port: -1, TLS: l}); err == nil {
			t.Errorf("the embedded server started with a %s certificate", name)
		}
	}
}
