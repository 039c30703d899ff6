package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/corral-dev/corral/events"
)

// Client talks to the HTTP API of one or more servers. Writes carry a
// request ID and are retried on other servers when one is unreachable or
// has no leader, so a retry never applies a command twice.
type Client struct {
	addrs []string
	http  *http.Client
	// Actor is a label sent with every request. Servers that authenticate
	// callers record the authenticated identity instead; the label is kept
	// only where nothing is authenticated (tests, simtest).
	Actor string
	// Token is the ACL token's secret sent with every request.
	Token string
	// Retry bounds how long a write keeps trying when servers are
	// unavailable.
	Retry time.Duration
	// Stale makes reads be served by the first server that answers, from
	// its own state at once, instead of reflecting every write
	// acknowledged before them (?stale=1). A stale read still reflects
	// the client's own writes and never goes back before what an earlier
	// answer reflected: it sends the highest index seen (X-Corral-Min-Index).
	Stale bool
	// FailFast makes a request fail at once, without waiting out Retry,
	// when every address refused the connection: no server listens
	// there, which more tries will not change (the CLI; agents keep
	// trying).
	FailFast bool

	seen atomic.Uint64 // highest log index an answer reflected
}

// NewClient returns a client for a comma-separated list of addresses
// (host:port or http://host:port).
func NewClient(addrs string) (*Client, error) {
	return newClient(addrs, "http://", &http.Client{})
}

// NewClientTLS returns a client that speaks HTTPS with cfg (the cluster
// CA, and the client's certificate when it has one) to a comma-separated
// list of addresses: host:port means https://host:port.
func NewClientTLS(addrs string, cfg *tls.Config) (*Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.MaxIdleConnsPerHost = 64
	return newClient(addrs, "https://", &http.Client{Transport: tr})
}

func newClient(addrs, scheme string, hc *http.Client) (*Client, error) {
	c := &Client{http: hc, Retry: 15 * time.Second}
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = scheme + a
		}
		u, err := url.Parse(BaseURL(a))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("corral: address %q is not host:port or http://host:port", a)
		}
		c.addrs = append(c.addrs, u.String())
	}
	if len(c.addrs) == 0 {
		return nil, errors.New("corral: no server address given: use --addr or CORRAL_ADDR")
	}
	return c, nil
}

// NewClientWith is NewClient sending every request through hc: a client
// with its own timeouts or transport (simtest routes requests to servers
// in memory this way).
func NewClientWith(addrs string, hc *http.Client) (*Client, error) {
	c, err := NewClient(addrs)
	if err != nil {
		return nil, err
	}
	c.http = hc
	return c, nil
}

// NewRequestID returns a random request ID.
func NewRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// DecodeError turns an error answer of the API into its *APIError.
func DecodeError(status int, body []byte) error { return decodeAPIError(status, body) }

func decodeAPIError(status int, body []byte) error {
	var e struct {
		Error *APIError `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil {
		return e.Error
	}
	return &APIError{Code: CodeInternal, Message: fmt.Sprintf("server answered %d: %s", status, strings.TrimSpace(string(body)))}
}

// retryable reports whether another try, maybe on another server, may
// succeed.
func retryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code == CodeUnavailable || ae.Code == CodeCatchingUp
	}
	return err != nil // transport errors
}

// do sends one request, trying each address in turn and retrying
// unavailable answers until c.Retry passes.
func (c *Client) do(ctx context.Context, method, path, reqID string, in, out any) error {
	return c.doHeaders(ctx, method, path, reqID, nil, in, out)
}

func (c *Client) doHeaders(ctx context.Context, method, path, reqID string, headers map[string]string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	if c.Stale && method == "GET" {
		path = withQuery(path, "stale=1")
		if n := c.seen.Load(); n > 0 {
			h := map[string]string{HeaderMinIndex: strconv.FormatUint(n, 10)}
			for k, v := range headers {
				h[k] = v
			}
			headers = h
		}
	}
	deadline := time.Now().Add(c.Retry)
	backoff := 50 * time.Millisecond
	refused := 0 // addresses of this round that refused the connection
	for attempt := 0; ; attempt++ {
		addr := c.addrs[attempt%len(c.addrs)]
		err := c.once(ctx, method, addr+path, reqID, headers, body, out)
		if err == nil || !retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			refused++
		}
		if attempt%len(c.addrs) == len(c.addrs)-1 {
			if c.FailFast && refused == len(c.addrs) {
				return err
			}
			refused = 0
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}

func (c *Client) once(ctx context.Context, method, u, reqID string, headers map[string]string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if reqID != "" {
		req.Header.Set(HeaderRequestID, reqID)
	}
	c.setAuth(req)
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("corral: %s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("corral: read answer of %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return decodeAPIError(resp.StatusCode, b)
	}
	if n, err := strconv.ParseUint(resp.Header.Get(HeaderIndex), 10, 64); err == nil {
		c.saw(n)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return err
	}
	if w, ok := out.(*WriteResult); ok {
		c.saw(w.Index)
	}
	return nil
}

// saw raises the highest index the client has seen to n.
func (c *Client) saw(n uint64) {
	for {
		old := c.seen.Load()
		if n <= old || c.seen.CompareAndSwap(old, n) {
			return
		}
	}
}

// setAuth puts the client's token and actor label on a request.
func (c *Client) setAuth(req *http.Request) {
	if c.Actor != "" {
		req.Header.Set(HeaderActor, c.Actor)
	}
	if c.Token != "" {
		req.Header.Set(HeaderToken, c.Token)
	}
}

func (c *Client) writeCmd(ctx context.Context, method, path string, in any) (WriteResult, error) {
	var res WriteResult
	err := c.do(ctx, method, path, NewRequestID(), in, &res)
	return res, err
}

// CreateGuest defines a guest (and starts it unless NoStart).
func (c *Client) CreateGuest(ctx context.Context, g CreateGuest) (WriteResult, error) {
	return c.writeCmd(ctx, "POST", "/v1/guests", g)
}

// GuestAction starts, stops or destroys a guest.
func (c *Client) GuestAction(ctx context.Context, name, action string) (WriteResult, error) {
	if err := events.ValidateID("guest name", name); err != nil {
		return WriteResult{}, err
	}
	switch action {
	case "start", "stop", "suspend", "resume":
		return c.writeCmd(ctx, "POST", "/v1/guests/"+name+"/"+action, nil)
	case "destroy":
		return c.writeCmd(ctx, "DELETE", "/v1/guests/"+name, nil)
	}
	return WriteResult{}, BadRequest("action", action, "use start, stop, suspend, resume or destroy")
}

// Tune changes knobs of a guest.
func (c *Client) Tune(ctx context.Context, t TuneGuest) (WriteResult, error) {
	if err := events.ValidateID("guest name", t.Name); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "POST", "/v1/guests/"+t.Name+"/tune", t)
}

// RegisterNode registers or re-registers a node. An agent gives its node
// secret; the same secret must then come with its reports and heartbeats.
func (c *Client) RegisterNode(ctx context.Context, n events.NodeRegistered, secret string) (WriteResult, error) {
	var res WriteResult
	return res, c.doHeaders(ctx, "POST", "/v1/nodes", NewRequestID(), map[string]string{HeaderNodeSecret: secret}, n, &res)
}

// Report sends an agent's reports about its node and guests.
func (c *Client) Report(ctx context.Context, node, secret string, items []ReportItem) (WriteResult, error) {
	if err := events.ValidateID("node id", node); err != nil {
		return WriteResult{}, err
	}
	var res WriteResult
	return res, c.doHeaders(ctx, "POST", "/v1/nodes/"+node+"/report", NewRequestID(), map[string]string{HeaderNodeSecret: secret}, AgentReport{Items: items}, &res)
}

// Desired returns a node's desired state.
func (c *Client) Desired(ctx context.Context, node string) (*Desired, error) {
	if err := events.ValidateID("node id", node); err != nil {
		return nil, err
	}
	var out Desired
	return &out, c.do(ctx, "GET", "/v1/nodes/"+node+"/desired", "", nil, &out)
}

// Guests lists every guest.
func (c *Client) Guests(ctx context.Context) ([]*Guest, error) {
	var out []*Guest
	return out, c.do(ctx, "GET", "/v1/guests", "", nil, &out)
}

// Guest returns one guest and, while it is pending, why no node takes it.
func (c *Client) Guest(ctx context.Context, name string) (*GuestView, error) {
	if err := events.ValidateID("guest name", name); err != nil {
		return nil, err
	}
	var out GuestView
	return &out, c.do(ctx, "GET", "/v1/guests/"+name, "", nil, &out)
}

// DryRun validates a create and returns where the guest would be placed,
// committing nothing.
func (c *Client) DryRun(ctx context.Context, g CreateGuest) (*PlacementPreview, error) {
	var out PlacementPreview
	return &out, c.do(ctx, "POST", "/v1/guests?dry_run=1", "", g, &out)
}

// Node returns one node with the guests it holds.
func (c *Client) Node(ctx context.Context, id string) (*NodeDetail, error) {
	if err := events.ValidateID("node id", id); err != nil {
		return nil, err
	}
	var out NodeDetail
	return &out, c.do(ctx, "GET", "/v1/nodes/"+id, "", nil, &out)
}

// SetEligibility makes a node eligible or ineligible, or drains it.
func (c *Client) SetEligibility(ctx context.Context, e SetEligibility) (WriteResult, error) {
	if err := events.ValidateID("node id", e.ID); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "POST", "/v1/nodes/"+e.ID+"/eligibility", e)
}

// SetNodeStatus declares a node up or down.
func (c *Client) SetNodeStatus(ctx context.Context, id, status, reason string) (WriteResult, error) {
	if err := events.ValidateID("node id", id); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "POST", "/v1/nodes/"+id+"/status", SetNodeStatus{ID: id, Status: status, Reason: reason})
}

// SchedulerConfig returns the placement policy in force.
func (c *Client) SchedulerConfig(ctx context.Context) (events.SchedulerConfig, error) {
	var out events.SchedulerConfig
	return out, c.do(ctx, "GET", "/v1/operator/scheduler", "", nil, &out)
}

// SetSchedulerConfig changes the placement policy.
func (c *Client) SetSchedulerConfig(ctx context.Context, cfg events.SchedulerConfig) (WriteResult, error) {
	return c.writeCmd(ctx, "POST", "/v1/operator/scheduler", cfg)
}

// Nodes lists every node.
func (c *Client) Nodes(ctx context.Context) ([]NodeView, error) {
	var out []NodeView
	return out, c.do(ctx, "GET", "/v1/nodes", "", nil, &out)
}

// Members lists the coordinator servers.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	return out, c.do(ctx, "GET", "/v1/cluster/members", "", nil, &out)
}

// State returns the state after index at, or the current state when at is
// nil.
func (c *Client) State(ctx context.Context, at *uint64) (*State, error) {
	path := "/v1/state"
	if at != nil {
		path += "?at=" + strconv.FormatUint(*at, 10)
	}
	var out State
	return &out, c.do(ctx, "GET", path, "", nil, &out)
}

// EventQuery selects events for Events.
type EventQuery struct {
	Since  uint64
	Follow bool
	Types  []string
	Guest  string
	Node   string
}

func (q EventQuery) path(since uint64) string {
	v := url.Values{}
	v.Set("since", strconv.FormatUint(since, 10))
	if q.Follow {
		v.Set("follow", "1")
	}
	if len(q.Types) > 0 {
		v.Set("type", strings.Join(q.Types, ","))
	}
	if q.Guest != "" {
		v.Set("guest", q.Guest)
	}
	if q.Node != "" {
		v.Set("node", q.Node)
	}
	return "/v1/events?" + v.Encode()
}

// History calls fn for every retained event about a guest, trying the
// next server when one cannot be reached.
func (c *Client) History(ctx context.Context, name string, fn func(events.Event) error) error {
	if err := events.ValidateID("guest name", name); err != nil {
		return err
	}
	var err error
	for _, addr := range c.addrs {
		if err = c.stream(ctx, addr+"/v1/guests/"+name+"/history", fn); !retryable(err) {
			return err
		}
	}
	return err
}

// Events calls fn for each event the query selects, in index order. When a
// server goes away mid-stream it moves to the next one, resuming after the
// last index it delivered, so no event is delivered twice and none is
// skipped. Without Follow it gives up once every server failed; with Follow
// it keeps going until ctx ends.
func (c *Client) Events(ctx context.Context, q EventQuery, fn func(events.Event) error) error {
	last := q.Since
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		addr := c.addrs[attempt%len(c.addrs)]
		err := c.stream(ctx, addr+q.path(last), func(e events.Event) error {
			if e.Index <= last {
				return nil
			}
			last = e.Index
			return fn(e)
		})
		if ctx.Err() != nil {
			if q.Follow {
				return nil
			}
			return ctx.Err()
		}
		if err != nil && !retryable(err) {
			return err
		}
		if !q.Follow && (err == nil || attempt+1 >= len(c.addrs)) {
			return err
		}
		if q.Follow && attempt%len(c.addrs) == len(c.addrs)-1 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}

var errStreamEnded = errors.New("corral: event stream ended")

func (c *Client) stream(ctx context.Context, u string, fn func(events.Event) error) error {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	c.setAuth(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("corral: GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return decodeAPIError(resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte(`{"error"`)) {
			return decodeAPIError(http.StatusGone, line)
		}
		e, err := events.Unmarshal(line)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %v", errStreamEnded, err)
	}
	return nil
}

// BaseURL turns host:port into http://host:port; a URL is kept as given.
func BaseURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimRight(addr, "/")
	}
	return "http://" + addr
}

// Do sends one request to the API (path with its query), retrying on
// other servers like every call of the client, and decodes the answer into
// out. reqID makes a write idempotent: a retry with the same ID gets the
// first call's answer.
func (c *Client) Do(ctx context.Context, method, path, reqID string, in, out any) error {
	return c.do(ctx, method, path, reqID, in, out)
}

func withQuery(path, q string) string {
	if strings.Contains(path, "?") {
		return path + "&" + q
	}
	return path + "?" + q
}
