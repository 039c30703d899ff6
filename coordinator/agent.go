package coordinator

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/natsbus"
)

// This file is the coordinator's side of the node agents: registration
// with a node secret, reports that become events, the desired state an
// agent reconciles to, and heartbeats that keep a node up.

// HeaderNodeSecret carries the secret a node's agent proves itself with.
const HeaderNodeSecret = "X-Corral-Node-Secret"

// ErrPermission is returned when a request does not come from the agent
// of the node it is about.
var ErrPermission = errors.New("corral: permission denied")

// SecretHash returns the hex SHA-256 of a node secret, as the log keeps it.
func SecretHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// checkSecret verifies that secret belongs to node n. Nodes registered
// without a secret (static nodes, with no agent) accept any report.
func checkSecret(n *Node, secret string) error {
	if n.SecretHash == "" {
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(SecretHash(secret)), []byte(n.SecretHash)) != 1 {
		return fmt.Errorf("%w: the request for node %q does not carry that node's agent secret", ErrPermission, n.ID)
	}
	return nil
}

// agentReportable lists the event types an agent may report.
var agentReportable = map[events.Type]bool{
	events.TypeGuestStarted: true, events.TypeGuestExited: true, events.TypeNodeUsage: true,
	events.TypeGuestLimitHit: true, events.TypeGuestTuningApplied: true, events.TypeGuestDrift: true,
	events.TypeNodeCleanup: true,
}

// ReportItem is one thing an agent reports: an event payload, about one of
// its guests or about the node.
type ReportItem struct {
	Guest   string          `json:"guest,omitempty"`
	Type    events.Type     `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// AgentReport is a batch of reports from one node's agent. Each item is
// checked and committed on its own: a late report about an old generation
// is refused without losing the others.
type AgentReport struct {
	Node   string       `json:"-"`
	Secret string       `json:"-"`
	Items  []ReportItem `json:"items"`
}

func (c *AgentReport) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	n, err := s.node(c.Node)
	if err != nil {
		return nil, err
	}
	if err := checkSecret(n, c.Secret); err != nil {
		return nil, err
	}
	if len(c.Items) == 0 {
		return nil, &events.FieldError{Field: "items", Value: "", Want: "report at least one item"}
	}
	out := make([]events.Event, 0, len(c.Items))
	for i, it := range c.Items {
		if !agentReportable[it.Type] {
			return nil, &events.FieldError{Field: fmt.Sprintf("items[%d].type", i), Value: it.Type.String(), Want: "an agent reports guest.started, guest.exited, node.usage, guest.limit_hit, guest.tuning_applied, guest.drift or node.cleanup"}
		}
		p, _ := events.NewPayload(it.Type)
		if err := events.DecodeStrict(it.Payload, p); err != nil {
			return nil, fmt.Errorf("%w: items[%d] payload: %v", events.ErrInvalid, i, err)
		}
		if it.Guest != "" {
			if err := events.ValidateID("guest", it.Guest); err != nil {
				return nil, err
			}
		}
		if node := payloadNode(p); node != "" && node != c.Node {
			return nil, &events.FieldError{Field: fmt.Sprintf("items[%d].node", i), Value: node, Want: "a node reports only about itself: " + c.Node}
		}
		out = append(out, subject(events.New(now, actor, p), it.Guest, c.Node))
	}
	return out, nil
}

func payloadNode(p events.Payload) string {
	switch x := p.(type) {
	case *events.GuestStarted:
		return x.Node
	case *events.GuestExited:
		return x.Node
	case *events.GuestLimitHit:
		return x.Node
	case *events.GuestTuningApplied:
		return x.Node
	case *events.GuestDrift:
		return x.Node
	}
	return ""
}

// Desired is a node's desired state at an index: the guests the log
// places on it, with their definitions, desired states and tuning.
type Desired struct {
	Index  uint64   `json:"index"`
	Node   *Node    `json:"node"`
	Guests []*Guest `json:"guests"`
}

func (st *State) desired(id string) (*Desired, error) {
	n, err := st.node(id)
	if err != nil {
		return nil, err
	}
	c := *n
	d := &Desired{Index: st.Index, Node: &c, Guests: []*Guest{}}
	for _, name := range st.GuestsOn(id) {
		g := *st.Guests[name]
		d.Guests = append(d.Guests, &g)
	}
	return d, nil
}

func (s *Server) agentRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/nodes/{id}/report", func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (Command, error) {
			c := AgentReport{Node: r.PathValue("id"), Secret: r.Header.Get(HeaderNodeSecret)}
			return &c, events.DecodeStrict(body, &c)
		})
	})
	mux.HandleFunc("GET /v1/nodes/{id}/desired", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := events.ValidateID("node id", id); err != nil {
			writeError(w, err)
			return
		}
		var d *Desired
		var err error
		s.fsm.read(func(st *State) { d, err = st.desired(id) })
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
}

// checkFence refuses an agent whose self-fencing would not surely happen
// before this cluster declares its node down and places its guests
// elsewhere: that would allow two running copies of a guest.
func (s *Server) checkFence(n *events.NodeRegistered) error {
	if n.FenceTimeoutMs == 0 && n.HeartbeatMs == 0 {
		return nil
	}
	fence := time.Duration(n.FenceTimeoutMs) * time.Millisecond
	beat := time.Duration(n.HeartbeatMs) * time.Millisecond
	if fence <= 0 || beat <= 0 {
		return &events.FieldError{Field: "fence_timeout_ms", Value: fmt.Sprint(n.FenceTimeoutMs), Want: "give both a positive fence timeout and heartbeat interval"}
	}
	if limit := s.cfg.NodeDownTimeout - 2*beat; fence >= limit {
		return &events.FieldError{Field: "fence_timeout_ms", Value: fence.String(),
			Want: fmt.Sprintf("the agent's fence timeout must be below the cluster's node-down timeout (%v) minus two heartbeats (%v): lower --fence-timeout or raise the servers' --node-down-timeout", s.cfg.NodeDownTimeout, 2*beat)}
	}
	return nil
}

// HeartbeatReply answers an agent's heartbeat.
type HeartbeatReply struct {
	Index uint64 `json:"index"`
	Error string `json:"error,omitempty"`
}

// liveness tracks, on the leader, when each agent last sent a heartbeat.
type liveness struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// heartbeats answers agents' heartbeats and declares nodes down when their
// agent stops sending them, and up when it comes back. It runs on the
// leader only.
func (s *Server) heartbeats(ctx context.Context) {
	lv := &liveness{seen: map[string]time.Time{}}
	start := time.Now()
	sub, err := s.nc.Subscribe(natsbus.HeartbeatPrefix+"*", func(m *nats.Msg) {
		id := strings.TrimPrefix(m.Subject, natsbus.HeartbeatPrefix)
		var req struct {
			Secret string `json:"secret"`
		}
		reply := HeartbeatReply{}
		var n *Node
		json.Unmarshal(m.Data, &req)
		s.fsm.read(func(st *State) {
			reply.Index = st.Index
			if x, ok := st.Nodes[id]; ok {
				c := *x
				n = &c
			}
		})
		switch {
		case n == nil:
			reply.Error = fmt.Sprintf("node %q is not registered", id)
		case checkSecret(n, req.Secret) != nil:
			reply.Error = fmt.Sprintf("wrong secret for node %q", id)
		default:
			lv.mu.Lock()
			lv.seen[id] = time.Now()
			lv.mu.Unlock()
			if n.Status == NodeStatusDown {
				go s.Submit(ctx, "", "server:"+s.cfg.ID, &SetNodeStatus{ID: id, Status: NodeStatusUp, Reason: "heartbeat resumed"})
			}
		}
		b, _ := json.Marshal(reply)
		m.Respond(b)
	})
	if err == nil {
		err = s.nc.Flush() // the subscription is in place before we lead
	}
	if err != nil {
		s.log.Error("heartbeat subscription", "err", err)
		return
	}
	defer sub.Unsubscribe()
	tick := time.NewTicker(max(s.cfg.NodeDownTimeout/20, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			var late []string
			s.fsm.read(func(st *State) {
				for id, n := range st.Nodes {
					if n.SecretHash == "" || n.Status != NodeStatusUp {
						continue
					}
					lv.mu.Lock()
					last, ok := lv.seen[id]
					lv.mu.Unlock()
					if !ok {
						last = start // a new leader gives every agent a full timeout
					}
					if now.Sub(last) > s.cfg.NodeDownTimeout {
						late = append(late, id)
					}
				}
			})
			for _, id := range late {
				reason := fmt.Sprintf("no heartbeat for %v", s.cfg.NodeDownTimeout)
				if _, err := s.Submit(ctx, "", "server:"+s.cfg.ID, &SetNodeStatus{ID: id, Status: NodeStatusDown, Reason: reason}); err != nil {
					s.log.Warn("declare node down", "node", id, "err", err)
				}
			}
		}
	}
}
