package simtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
)

// Net is the cluster's HTTP network, in memory: requests go from a named
// client (a server forwarding to the leader, an agent, a test) straight
// to the handler of the server whose address is the URL's host, on a
// goroutine of their own, with the response streamed back through a pipe.
// A host that is not serving refuses the connection; taking a host down
// cancels the requests it is serving, as a crash would. Net counts every
// request by client, method and path.
type Net struct {
	mu       sync.Mutex
	hosts    map[string]*netHost
	requests map[string]Requests // client -> requests
	// refuse, when set, decides whether from may reach host: the hook
	// partitions build on.
	refuse func(from, host string) bool
}

// Requests counts HTTP requests by "METHOD /path" (no query).
type Requests map[string]int

// Sub returns the counts in r that are not in before: what was asked
// between two snapshots. Keys with no new request are left out.
func (r Requests) Sub(before Requests) Requests {
	out := Requests{}
	for k, n := range r {
		if d := n - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

type netHost struct {
	handler  http.Handler
	wg       sync.WaitGroup
	inflight map[*context.CancelFunc]struct{}
}

// NewNet returns a network with no hosts.
func NewNet() *Net {
	return &Net{hosts: map[string]*netHost{}, requests: map[string]Requests{}}
}

// Serve makes handler answer requests to addr (host:port).
func (n *Net) Serve(addr string, handler http.Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[addr] = &netHost{handler: handler, inflight: map[*context.CancelFunc]struct{}{}}
}

// Unserve takes addr off the network: new requests are refused, the ones
// in flight are cancelled, and Unserve returns once their handlers have.
func (n *Net) Unserve(addr string) {
	n.mu.Lock()
	h := n.hosts[addr]
	delete(n.hosts, addr)
	if h != nil {
		for cancel := range h.inflight {
			(*cancel)()
		}
	}
	n.mu.Unlock()
	if h != nil {
		h.wg.Wait()
	}
}

// SetRefuse installs a function that decides whether a client may reach
// a host; nil lets everyone reach everyone.
func (n *Net) SetRefuse(f func(from, host string) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.refuse = f
}

// Requests returns a copy of the counts of client from's requests.
func (n *Net) Requests(from string) Requests {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.requests[from])
}

// Client returns an HTTP client whose requests go over this network as
// from.
func (n *Net) Client(from string) *http.Client {
	return &http.Client{Transport: roundTripper{n: n, from: from}}
}

type roundTripper struct {
	n    *Net
	from string
}

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	return rt.n.roundTrip(rt.from, req)
}

func (n *Net) roundTrip(from string, req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	host := req.URL.Host
	// The handler's context is the connection's: it ends when the client
	// gives up, closes the body, or the server goes away.
	ctx, cancel := context.WithCancel(context.Background())
	stopAfter := context.AfterFunc(req.Context(), cancel)

	n.mu.Lock()
	h := n.hosts[host]
	if h == nil || (n.refuse != nil && n.refuse(from, host)) {
		n.mu.Unlock()
		stopAfter()
		cancel()
		return nil, &net.OpError{Op: "dial", Net: "sim", Err: fmt.Errorf("%s from %s: %w", host, from, syscall.ECONNREFUSED)}
	}
	if n.requests[from] == nil {
		n.requests[from] = Requests{}
	}
	n.requests[from][req.Method+" "+req.URL.Path]++
	h.inflight[&cancel] = struct{}{}
	h.wg.Add(1)
	n.mu.Unlock()

	sreq := req.Clone(ctx)
	sreq.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	sreq.RequestURI = req.URL.RequestURI()
	sreq.Host = host
	sreq.RemoteAddr = from + ":1"
	sreq.Proto, sreq.ProtoMajor, sreq.ProtoMinor = "HTTP/1.1", 1, 1
	sreq.Body = io.NopCloser(bytes.NewReader(body))
	sreq.ContentLength = int64(len(body))

	pr, pw := io.Pipe()
	// A client that stops reading must not hold the handler forever.
	context.AfterFunc(ctx, func() { pr.CloseWithError(context.Canceled) })
	w := &responseWriter{header: http.Header{}, pw: pw, started: make(chan struct{})}
	go func() {
		defer func() {
			n.mu.Lock()
			delete(h.inflight, &cancel)
			n.mu.Unlock()
			h.wg.Done()
		}()
		defer pw.Close()
		defer w.WriteHeader(http.StatusOK) // a no-op once the handler wrote
		h.handler.ServeHTTP(w, sreq)
	}()

	select {
	case <-w.started:
	case <-ctx.Done():
		stopAfter()
		err := req.Context().Err()
		if err == nil {
			err = syscall.ECONNRESET // the server went away
		}
		return nil, fmt.Errorf("simtest: %s %s from %s: %w", req.Method, req.URL, from, err)
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &responseBody{pr: pr, done: func() { stopAfter(); cancel() }},
		ContentLength: -1,
		Request:       req,
	}, nil
}

// responseWriter streams a handler's answer into a pipe. Only the
// handler's goroutine calls it; the round trip reads status and sent once
// started is closed.
type responseWriter struct {
	header  http.Header
	sent    http.Header
	status  int
	started chan struct{}
	pw      *io.PipeWriter
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.sent != nil || code < 200 {
		return
	}
	w.status, w.sent = code, w.header.Clone()
	close(w.started)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(b)
}

// Flush is a no-op: every write reaches the reader at once.
func (w *responseWriter) Flush() {}

type responseBody struct {
	pr   *io.PipeReader
	once sync.Once
	done func()
}

func (b *responseBody) Read(p []byte) (int, error) { return b.pr.Read(p) }

func (b *responseBody) Close() error {
	b.once.Do(func() {
		b.pr.Close()
		b.done()
	})
	return nil
}

// listener is a net.Listener that never accepts: the servers are reached
// through [Net], not through connections, but coordinator.Server wants a
// listener to serve and to name its address.
type listener struct {
	addr   simAddr
	once   sync.Once
	closed chan struct{}
}

func newListener(addr string) *listener {
	return &listener{addr: simAddr(addr), closed: make(chan struct{})}
}

func (l *listener) Accept() (net.Conn, error) {
	<-l.closed
	return nil, net.ErrClosed
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

type simAddr string

func (a simAddr) Network() string { return "sim" }
func (a simAddr) String() string  { return string(a) }
