package coordinator

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/pki"
)

// testPKI is a cluster CA with certificates for servers s1..s3 and node
// n1, and a second CA with a server certificate of its own.
type testPKI struct {
	loaded map[pki.Identity]*pki.Loaded
	other  *pki.Loaded // server x1 of another CA
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ids := []pki.Identity{
		{Role: pki.RoleServer, Name: "s1"}, {Role: pki.RoleServer, Name: "s2"}, {Role: pki.RoleServer, Name: "s3"},
		{Role: pki.RoleNode, Name: "n1"},
	}
	p := &testPKI{loaded: map[pki.Identity]*pki.Loaded{}}
	files, err := pki.EnsureDir(t.TempDir(), ids...)
	if err != nil {
		t.Fatal(err)
	}
	for id, f := range files {
		if p.loaded[id], err = f.Load(); err != nil {
			t.Fatal(err)
		}
	}
	x1 := pki.Identity{Role: pki.RoleServer, Name: "x1"}
	other, err := pki.EnsureDir(t.TempDir(), x1)
	if err != nil {
		t.Fatal(err)
	}
	if p.other, err = other[x1].Load(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *testPKI) server(name string) *pki.Loaded {
	return p.loaded[pki.Identity{Role: pki.RoleServer, Name: name}]
}

func (p *testPKI) node() *pki.Loaded { return p.loaded[pki.Identity{Role: pki.RoleNode, Name: "n1"}] }

// listFSM keeps the data of every applied entry.
type listFSM struct {
	mu   sync.Mutex
	data []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data = append(f.data, string(l.Data))
	return nil
}

func (f *listFSM) has(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.data, s)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	return nil, errors.New("no snapshots in this test")
}
func (f *listFSM) Restore(io.ReadCloser) error { return errors.New("no snapshots in this test") }

// attacker is a client that must never reach raft; tls nil is plain TCP.
type attacker struct {
	what string
	tls  *tls.Config
}

// attackers are a client with a node certificate of the cluster, one with
// a server certificate of another CA, and plain TCP sending an HTTP
// request.
func attackers(p *testPKI) []attacker {
	return []attacker{
		{"node certificate", p.node().DialConfig()},
		// It does not check the server: the server's check is under test.
		{"another CA", &tls.Config{Certificates: []tls.Certificate{*p.other.Cert}, InsecureSkipVerify: true}},
		{"plain TCP", nil},
	}
}

// requireRefused connects as a to addr and checks that the server ends
// the connection, within 5s, without taking what it sends.
func requireRefused(t *testing.T, addr string, a attacker) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", a.what, err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	c := raw
	if a.tls != nil {
		tc := tls.Client(raw, a.tls)
		// TLS 1.2 refuses in the handshake, 1.3 after it, on first read.
		if err := tc.Handshake(); err != nil {
			requireNotTimeout(t, a.what, err)
			return
		}
		c = tc
	}
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_, err = io.ReadAll(c)
	requireNotTimeout(t, a.what, err)
}

func requireNotTimeout(t *testing.T, what string, err error) {
	t.Helper()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the server did not end the connection within 5s", what)
	}
}

func TestTransportTLSRaft(t *testing.T) {
	p := newTestPKI(t)
	names := []string{"s1", "s2", "s3"}
	trans := make([]*raft.NetworkTransport, 3)
	for i, n := range names {
		tr, err := newTLSTransport("127.0.0.1:0", nil, p.server(n), &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 2 * time.Second, Logger: hclog.NewNullLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(string(tr.LocalAddr()), ":0") {
			t.Fatalf("transport advertises %s, want the bound port", tr.LocalAddr())
		}
		trans[i] = tr
		t.Cleanup(func() { tr.Close() })
	}
	var conf raft.Configuration
	for i, n := range names {
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(n), Address: trans[i].LocalAddr()})
	}
	rafts := make([]*raft.Raft, 3)
	fsms := make([]*listFSM, 3)
	for i, n := range names {
		rc := raft.DefaultConfig()
		rc.LocalID = raft.ServerID(n)
		rc.HeartbeatTimeout = 200 * time.Millisecond
		rc.ElectionTimeout = 200 * time.Millisecond
		rc.LeaderLeaseTimeout = 100 * time.Millisecond
		rc.Logger = hclog.NewNullLogger()
		store := raft.NewInmemStore()
		fsms[i] = &listFSM{}
		r, err := raft.NewRaft(rc, fsms[i], store, store, raft.NewInmemSnapshotStore(), trans[i])
		if err != nil {
			t.Fatal(err)
		}
		rafts[i] = r
		t.Cleanup(func() { r.Shutdown().Error() })
		if err := r.BootstrapCluster(conf).Error(); err != nil {
			t.Fatal(err)
		}
	}
	leader := func(skip int) int {
		l := -1
		WaitFor(t, 10*time.Second, "a leader", func() bool {
			for i, r := range rafts {
				if i != skip && r.State() == raft.Leader {
					l = i
					return true
				}
			}
			return false
		})
		return l
	}
	replicated := func(entry string, skip int) {
		t.Helper()
		l := leader(skip)
		if err := rafts[l].Apply([]byte(entry), 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %s on %s: %v", entry, names[l], err)
		}
		WaitFor(t, 10*time.Second, entry+" on every live server", func() bool {
			for i, f := range fsms {
				if i != skip && !f.has(entry) {
					return false
				}
			}
			return true
		})
	}
	replicated("one", -1)

	// Every listener gets the refused kinds, and a plain TCP connection
	// that says nothing and stays open: its handshake must not hold up
	// the servers' own connections.
	for _, tr := range trans {
		idle, err := net.Dial("tcp", string(tr.LocalAddr()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { idle.Close() })
		for _, a := range attackers(p) {
			requireRefused(t, string(tr.LocalAddr()), a)
		}
	}
	replicated("two", -1)

	// Without the leader, the other two must connect to each other anew
	// (votes, then replication) through their attacked listeners.
	old := leader(-1)
	if err := rafts[old].Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	trans[old].Close()
	replicated("three", old)
}

func TestTransportAcceptNotWedged(t *testing.T) {
	p := newTestPKI(t)
	st, err := newTLSStream("127.0.0.1:0", nil, p.server("s1"), 10*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	peer, err := newTLSStream("127.0.0.1:0", nil, p.server("s2"), 10*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	addr := st.Addr().String()

	for range 3 {
		idle, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
	}
	for _, a := range attackers(p) {
		requireRefused(t, addr, a)
	}
	// Two dials in a row: were a refused connection handed on, Accept
	// would return it before the peer's.
	for i := range 2 {
		errc := make(chan error, 1)
		go func() {
			c, err := peer.Dial(raft.ServerAddress(addr), 5*time.Second)
			if err == nil {
				// Raft speaks first; the server's Accept needs no byte.
				defer c.Close()
				_, err = c.Write([]byte{0})
			}
			errc <- err
		}()
		accepted := make(chan net.Conn, 1)
		go func() {
			if c, err := st.Accept(); err == nil {
				accepted <- c
			}
		}()
		select {
		case c := <-accepted:
			cs := c.(*tls.Conn).ConnectionState()
			id, ok := pki.PeerIdentity(&cs)
			if !ok || id != (pki.Identity{Role: pki.RoleServer, Name: "s2"}) {
				t.Fatalf("dial %d: Accept returned a connection from %v (ok %v), want server:s2", i, id, ok)
			}
			c.Close()
		case <-time.After(5 * time.Second):
			t.Fatalf("dial %d: Accept returned nothing within 5s while idle connections were open", i)
		}
		if err := <-errc; err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
	}
}

func TestTransportHandshakeLimit(t *testing.T) {
	p := newTestPKI(t)
	st, err := newTLSStream("127.0.0.1:0", nil, p.server("s1"), 10*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for range maxPendingHandshakes {
		c, err := net.Dial("tcp", st.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	WaitFor(t, 5*time.Second, "the handshakes to be under way", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.inflight) == maxPendingHandshakes
	})
	requireRefused(t, st.Addr().String(), attacker{what: "a connection past the limit"})
	// Closing the stream ends the handshakes under way at once.
	st.Close()
	WaitFor(t, 5*time.Second, "no handshake under way", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.inflight) == 0
	})
}

func TestTransportDialRequiresServer(t *testing.T) {
	p := newTestPKI(t)
	st, err := newTLSStream("127.0.0.1:0", nil, p.server("s1"), 5*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for what, cert := range map[string]*tls.Certificate{"a node certificate": p.node().Cert, "another CA's server certificate": p.other.Cert} {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.(*tls.Conn).Handshake()
				}()
			}
		}()
		c, err := st.Dial(raft.ServerAddress(ln.Addr().String()), 5*time.Second)
		ln.Close()
		if err == nil {
			c.Close()
			t.Fatalf("dial a peer presenting %s: succeeded, want refused", what)
		}
	}
}

func TestTransportConfigErrors(t *testing.T) {
	p := newTestPKI(t)
	for _, tc := range []struct {
		name string
		bind string
		l    *pki.Loaded
		want string
	}{
		{"no certificate", "127.0.0.1:0", nil, "needs the server's certificate"},
		{"node certificate", "127.0.0.1:0", p.node(), "needs a server certificate"},
		{"unspecified address", "0.0.0.0:0", p.server("s1"), "cannot be advertised"},
		{"bad address", "127.0.0.1", p.server("s1"), "raft listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := newTLSTransport(tc.bind, nil, tc.l, &raft.NetworkTransportConfig{MaxPool: 3, Timeout: time.Second})
			if err == nil {
				tr.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}
