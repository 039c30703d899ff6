package coordinator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/pki"
)

// maxPendingHandshakes bounds the inbound raft connections that have not
// yet proved a server certificate: past it, new ones are closed at once,
// so a flood of idle or hostile connections costs a bounded number of
// goroutines and descriptors.
const maxPendingHandshakes = 64

// newTLSTransport is raft's network transport over mutual TLS: it listens
// on bind and hands raft only connections whose peer proved a server
// certificate of the cluster CA, and it dials peers presenting this
// server's certificate and requiring theirs to be a server's. advertise
// is the address the other servers reach this one at; nil advertises the
// bound address, so a bind to port 0 works.
func newTLSTransport(bind string, advertise net.Addr, l *pki.Loaded, tc *raft.NetworkTransportConfig) (*raft.NetworkTransport, error) {
	st, err := newTLSStream(bind, advertise, l, tc.Timeout, tc.Logger)
	if err != nil {
		return nil, err
	}
	c := *tc
	c.Stream, c.Logger = st, st.log
	return raft.NewNetworkTransportWithConfig(&c), nil
}

// newTLSStream listens on bind and starts accepting; timeout bounds each
// inbound handshake.
func newTLSStream(bind string, advertise net.Addr, l *pki.Loaded, timeout time.Duration, logger hclog.Logger) (*tlsStream, error) {
	if l == nil {
		return nil, errors.New("corral: raft over TLS needs the server's certificate and the cluster CA")
	}
	listen, err := l.ListenConfig(tls.RequireAndVerifyClientCert, pki.RoleServer)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("corral: raft transport timeout %v: give a positive duration", timeout)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("corral: raft listen %s: %w (is another corral running? use --raft-addr)", bind, err)
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if a, ok := advertise.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() || a.Port == 0 {
		ln.Close()
		return nil, fmt.Errorf("corral: raft address %s cannot be advertised to other servers: bind to a specific IP address and port, not %s, or give the address to advertise", advertise, bind)
	}
	st := &tlsStream{
		ln:        ln,
		advertise: advertise,
		listen:    listen,
		dial:      l.DialConfig(),
		handshake: timeout,
		log:       logger,
		conns:     make(chan net.Conn),
		closed:    make(chan struct{}),
		inflight:  map[net.Conn]struct{}{},
	}
	go st.acceptLoop()
	return st, nil
}

// tlsStream is a raft.StreamLayer over mutual TLS. Handshakes of inbound
// connections run on their own goroutines under a deadline, so a peer
// that connects and says nothing, or fails the handshake, never holds up
// Accept for the servers behind it.
type tlsStream struct {
	ln        net.Listener
	advertise net.Addr
	listen    *tls.Config
	dial      *tls.Config
	handshake time.Duration // the deadline of one handshake
	log       hclog.Logger

	conns  chan net.Conn // verified connections, for Accept
	closed chan struct{}

	mu       sync.Mutex
	shut     bool
	inflight map[net.Conn]struct{} // connections still in their handshake
}

var errStreamClosed = errors.New("corral: raft transport is closed")

func (t *tlsStream) acceptLoop() {
	backoff := 5 * time.Millisecond
	for {
		c, err := t.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !t.isClosed() {
				// Out of descriptors and the like: wait, as net/http does.
				t.log.Warn("raft accept failed; retrying", "error", err, "in", backoff)
				select {
				case <-t.closed:
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			// Closed, or the listener is gone: Accept says so to raft.
			t.Close()
			return
		}
		backoff = 5 * time.Millisecond
		if !t.track(c) {
			continue
		}
		go t.verify(c)
	}
}

// track records c as in its handshake, or closes it when the stream is
// closed or too many handshakes are under way.
func (t *tlsStream) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.shut {
		c.Close()
		return false
	}
	if len(t.inflight) >= maxPendingHandshakes {
		t.log.Warn("raft connection refused: too many handshakes under way", "remote", c.RemoteAddr().String(), "limit", maxPendingHandshakes)
		c.Close()
		return false
	}
	t.inflight[c] = struct{}{}
	return true
}

func (t *tlsStream) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.inflight, c)
	t.mu.Unlock()
}

func (t *tlsStream) isClosed() bool {
	select {
	case <-t.closed:
		return true
	default:
		return false
	}
}

// verify runs the server side of the handshake with c and passes it to
// Accept when the peer proved a server certificate.
func (t *tlsStream) verify(c net.Conn) {
	defer t.untrack(c)
	tc := tls.Server(c, t.listen)
	tc.SetDeadline(time.Now().Add(t.handshake))
	if err := tc.Handshake(); err != nil {
		if !t.isClosed() {
			t.log.Warn("raft connection refused: the peer did not prove a server certificate of this cluster", "remote", c.RemoteAddr().String(), "error", err)
		}
		c.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	select {
	case t.conns <- tc:
	case <-t.closed:
		tc.Close()
	}
}

// Accept returns the next inbound connection whose peer is a server of
// this cluster.
func (t *tlsStream) Accept() (net.Conn, error) {
	select {
	case c := <-t.conns:
		return c, nil
	case <-t.closed:
		return nil, errStreamClosed
	}
}

// Close stops accepting and ends the handshakes under way; connections
// already handed to raft are raft's to close.
func (t *tlsStream) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.shut {
		return nil
	}
	t.shut = true
	close(t.closed)
	for c := range t.inflight {
		c.Close()
	}
	return t.ln.Close()
}

// Addr is the advertised address, the one the other servers dial.
func (t *tlsStream) Addr() net.Addr { return t.advertise }

// Dial connects to a peer and completes the handshake within timeout;
// the peer must prove a server certificate of this cluster.
func (t *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(address), t.dial)
	if err != nil {
		return nil, fmt.Errorf("corral: raft dial %s: %w", address, err)
	}
	return c, nil
}
