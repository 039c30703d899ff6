package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// This file is the coordinator's side of the node agents: registration
// with a node secret, reports that become events, the desired state an
// agent reconciles to, and heartbeats that keep a node up.

func (s *Server) agentRoutes(mux *http.ServeMux) {
	s.handle(mux, "POST /v1/nodes/{id}/report", access{kind: needNodeSelf}, func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			c := cluster.AgentReport{Node: r.PathValue("id"), Secret: r.Header.Get(api.HeaderNodeSecret)}
			return &c, events.DecodeStrict(body, &c)
		})
	})
	s.handle(mux, "GET /v1/nodes/{id}/desired", access{kind: needNodeSelf, cap: acl.NodeRead}, func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := events.ValidateID("node id", id); err != nil {
			writeError(w, err)
			return
		}
		if !s.readBarrier(w, r) {
			return
		}
		var d *api.Desired
		var err error
		s.fsm.read(func(st *cluster.State) { d, err = st.Desired(id) })
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
}

// checkFence refuses an agent whose self-fencing would not surely happen
// before this cluster declares its node down and places its guests
// elsewhere: that would allow two running copies of a guest. The rule:
//
//	node-down timeout > fence timeout + margin,
//	margin = 2 heartbeat intervals + the fencer's longest poll interval
//
// The agent's lease runs from when it sent its last heartbeat that
// succeeded, which the leader heard no earlier; its fencer freezes the
// guests at most one poll after the lease ran out; the two heartbeats
// cover a heartbeat the leader heard late and the leader's own check.
func (s *Server) checkFence(n *events.NodeRegistered) error {
	// fencerPoll is nodeagent.MaxFencerPoll, which the agent enforces on
	// --fence-poll; the server must not import the agent.
	const fencerPoll = 100 * time.Millisecond
	if n.FenceTimeoutMs == 0 && n.HeartbeatMs == 0 {
		return nil
	}
	fence := time.Duration(n.FenceTimeoutMs) * time.Millisecond
	beat := time.Duration(n.HeartbeatMs) * time.Millisecond
	if fence <= 0 || beat <= 0 {
		return &events.FieldError{Field: "fence_timeout_ms", Value: fmt.Sprint(n.FenceTimeoutMs), Want: "give both a positive fence timeout and heartbeat interval"}
	}
	margin := 2*beat + fencerPoll
	if down := s.cfg.NodeDownTimeout; fence+margin >= down {
		return &events.FieldError{Field: "fence_timeout_ms", Value: fence.String(),
			Want: fmt.Sprintf("the agent's fence timeout (%v) plus a margin of two heartbeats and the fencer's poll (2×%v + %v = %v) must be below this cluster's node-down timeout (%v), or a dead agent's guests could still run when they start elsewhere: lower the agent's --fence-timeout to below %v (or its --heartbeat-interval), or raise the servers' --node-down-timeout above %v",
				fence, beat, fencerPoll, margin, down, down-margin, fence+margin)}
	}
	return nil
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
	stop, err := s.bus.Handle(bus.HeartbeatPrefix+"*", func(subject string, data []byte) []byte {
		id := strings.TrimPrefix(subject, bus.HeartbeatPrefix)
		var req api.HeartbeatRequest
		reply := api.HeartbeatReply{}
		var n *cluster.Node
		json.Unmarshal(data, &req)
		s.fsm.read(func(st *cluster.State) {
			reply.Index = st.Index
			reply.NodeIndex = st.NodeIndex(id)
			if x, ok := st.Nodes[id]; ok {
				c := *x
				n = &c
			}
		})
		switch {
		case n == nil:
			reply.Error = fmt.Sprintf("node %q is not registered", id)
		case cluster.CheckSecret(n, req.Secret) != nil:
			reply.Error = fmt.Sprintf("wrong secret for node %q", id)
		default:
			lv.mu.Lock()
			lv.seen[id] = time.Now()
			lv.mu.Unlock()
			if n.Status == cluster.NodeStatusDown {
				go s.Submit(ctx, "", "server:"+s.cfg.ID, &cluster.SetNodeStatus{SetNodeStatus: api.SetNodeStatus{ID: id, Status: cluster.NodeStatusUp, Reason: "heartbeat resumed"}})
			}
		}
		b, _ := json.Marshal(reply)
		return b
	})
	if err != nil {
		s.log.Error("heartbeat subscription", "err", err)
		return
	}
	defer stop()
	tick := time.NewTicker(max(s.cfg.NodeDownTimeout/20, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			var late []string
			s.fsm.read(func(st *cluster.State) {
				for id, n := range st.Nodes {
					if n.SecretHash == "" || n.Status != cluster.NodeStatusUp {
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
				cmd := &cluster.SetNodeStatus{SetNodeStatus: api.SetNodeStatus{ID: id, Status: cluster.NodeStatusDown, Reason: reason}}
				if _, err := s.Submit(ctx, "", "server:"+s.cfg.ID, cmd); err != nil {
					s.log.Warn("declare node down", "node", id, "err", err)
				}
			}
		}
	}
}
