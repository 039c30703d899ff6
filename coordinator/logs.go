package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// This file serves guests' output logs. The log lives on the guest's node
// (the driver writes it there, size-capped); any server answers
// GET /v1/guests/{name}/logs by reading the node from its local state and
// asking that node's agent for the bytes over NATS, on
// bus.LogsSubject(node), one api.LogRequest per chunk.

// Timing of log reads: how long one agent may take to answer, and how
// often a follower asks for new output.
const (
	logRequestTimeout = 3 * time.Second
	logPollInterval   = 200 * time.Millisecond
)

// guestLogs answers GET /v1/guests/{name}/logs?offset=N&tail=BYTES&follow=1
// with the guest's raw output as text/plain. With follow it keeps the
// response open and sends new output as the guest writes it, until the
// client goes away or the guest is undefined.
func (s *Server) guestLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := events.ValidateID("guest name", name); err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	offset, err := parseBytes(q.Get("offset"), "offset")
	if err != nil {
		writeError(w, err)
		return
	}
	tail, err := parseBytes(q.Get("tail"), "tail")
	if err != nil {
		writeError(w, err)
		return
	}
	follow := q.Get("follow")
	if follow != "" && follow != "0" && follow != "1" && follow != "true" && follow != "false" {
		writeError(w, badRequest("follow", follow, "use 1 or 0"))
		return
	}
	following := follow == "1" || follow == "true"
	if c := callerOf(r); following && !c.insecure && c.id.Role != pki.RoleServer {
		done, err := s.limiter.openStream(c.key())
		if err != nil {
			s.refused(w, r, r.Pattern, c, err)
			return
		}
		defer done()
	}

	ctx := r.Context()
	node, err := s.guestNode(name)
	if err != nil {
		writeError(w, err)
		return
	}
	rep, err := s.readLog(ctx, node, api.LogRequest{Guest: name, Offset: offset, Tail: tail, Max: api.LogChunkMax})
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set(api.HeaderLogOffset, strconv.FormatInt(rep.Next-int64(len(rep.Data)), 10))
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	// Without follow, stop at the end the first read saw, so a guest that
	// writes fast cannot keep the answer open.
	end := rep.Size
	var tick *time.Ticker
	for {
		if len(rep.Data) > 0 {
			if _, err := w.Write(rep.Data); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		offset = rep.Next
		if !following && (offset >= end || len(rep.Data) == 0) {
			return
		}
		if offset >= rep.Size {
			if !following {
				return
			}
			if tick == nil {
				tick = time.NewTicker(logPollInterval)
				defer tick.Stop()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		// The guest may have been undefined, or placed elsewhere, where
		// its new run writes a new log.
		now, err := s.guestNode(name)
		switch {
		case errors.Is(err, api.ErrNotFound):
			return
		case err != nil:
			rep = api.LogReply{Next: offset, Size: offset}
			continue
		case now != node:
			node, offset = now, 0
		}
		rep, err = s.readLog(ctx, node, api.LogRequest{Guest: name, Offset: offset, Max: api.LogChunkMax})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The agent may be restarting: keep polling.
			rep = api.LogReply{Next: offset, Size: offset}
		}
	}
}

// parseBytes reads a byte count query parameter; empty is 0.
func parseBytes(v, name string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest(name, v, "give a whole number of bytes ≥ 0")
	}
	return n, nil
}

// guestNode returns the node the guest is placed on.
func (s *Server) guestNode(name string) (string, error) {
	var g *cluster.Guest
	s.fsm.read(func(st *cluster.State) {
		if x, ok := st.Guests[name]; ok {
			c := *x
			g = &c
		}
	})
	switch {
	case g == nil:
		return "", api.NotFound("guest", name)
	case g.Node == "":
		return "", fmt.Errorf("%w: guest %q is not placed on any node (status %s), so it has no log yet; retry once it is placed", api.ErrUnavailable, name, g.Status)
	}
	return g.Node, nil
}

// readLog asks node's agent for one chunk of a guest's log.
func (s *Server) readLog(ctx context.Context, node string, req api.LogRequest) (api.LogReply, error) {
	b, _ := json.Marshal(req)
	rctx, cancel := context.WithTimeout(ctx, logRequestTimeout)
	defer cancel()
	data, err := s.bus.Request(rctx, bus.LogsSubject(node), b)
	switch {
	case ctx.Err() != nil:
		return api.LogReply{}, ctx.Err()
	case errors.Is(err, bus.ErrNoResponders):
		return api.LogReply{}, fmt.Errorf("%w: the agent of node %q is not connected, so guest %q's log cannot be read; check that corral agent runs there", api.ErrUnavailable, node, req.Guest)
	case errors.Is(err, bus.ErrTimeout):
		return api.LogReply{}, fmt.Errorf("%w: the agent of node %q did not answer within %v; retry, or check that corral agent runs there", api.ErrUnavailable, node, logRequestTimeout)
	case err != nil:
		return api.LogReply{}, fmt.Errorf("%w: ask node %q for guest %q's log: %v", api.ErrUnavailable, node, req.Guest, err)
	}
	var rep api.LogReply
	if err := json.Unmarshal(data, &rep); err != nil {
		return api.LogReply{}, fmt.Errorf("corral: node %q answered a log read with something unreadable: %w", node, err)
	}
	if rep.Error != "" {
		code := rep.Code
		if code == api.CodeNotFound {
			// The log knows the guest; its agent does not hold it yet.
			code = api.CodeUnavailable
		}
		return api.LogReply{}, &api.APIError{Code: code, Message: fmt.Sprintf("node %q: %s", node, rep.Error)}
	}
	if rep.Next < 0 || rep.Size < 0 || len(rep.Data) > api.LogChunkMax {
		return api.LogReply{}, fmt.Errorf("corral: node %q answered a log read out of bounds (next %d, size %d, %d bytes)", node, rep.Next, rep.Size, len(rep.Data))
	}
	return rep, nil
}
