package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// headerForwarded marks a write a follower forwards to the leader.
const headerForwarded = "X-Corral-Forwarded"

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	s.handle(mux, "POST /v1/guests", token(acl.GuestWrite), func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("dry_run") == "1" {
			var c cluster.CreateGuest
			body, err := io.ReadAll(r.Body)
			if err == nil {
				err = events.DecodeStrict(body, &c)
			}
			if err != nil {
				writeError(w, fmt.Errorf("%w: request body: %v", events.ErrInvalid, err))
				return
			}
			s.dryRun(w, &c)
			return
		}
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var c cluster.CreateGuest
			return &c, events.DecodeStrict(body, &c)
		})
	})
	for _, action := range []string{"start", "stop", "suspend", "resume"} {
		s.handle(mux, "POST /v1/guests/{name}/"+action, token(acl.GuestWrite), func(w http.ResponseWriter, r *http.Request) {
			s.write(w, r, func(body []byte) (cluster.Command, error) {
				c := cluster.GuestAction{GuestAction: api.GuestAction{Name: r.PathValue("name"), Action: action}}
				return &c, decodeOptional(body, &c)
			})
		})
	}
	s.handle(mux, "DELETE /v1/guests/{name}", token(acl.GuestWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			c := cluster.GuestAction{GuestAction: api.GuestAction{Name: r.PathValue("name"), Action: "destroy"}}
			return &c, decodeOptional(body, &c)
		})
	})
	s.handle(mux, "POST /v1/guests/{name}/tune", token(acl.GuestWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var c cluster.TuneGuest
			err := events.DecodeStrict(body, &c)
			if c.Name != "" && c.Name != r.PathValue("name") {
				return nil, &events.FieldError{Field: "name", Value: c.Name, Want: "must match the guest in the path"}
			}
			c.Name = r.PathValue("name")
			return &c, err
		})
	})
	s.handle(mux, "POST /v1/nodes", access{kind: needNodeSelf, cap: acl.NodeWrite}, func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			c := cluster.RegisterNode{Secret: r.Header.Get(api.HeaderNodeSecret)}
			if err := events.DecodeStrict(body, &c.NodeRegistered); err != nil {
				return nil, err
			}
			if err := s.authorizeNode(r, acl.NodeWrite, c.ID); err != nil {
				return nil, err
			}
			return &c, s.checkFence(&c.NodeRegistered)
		})
	})
	s.handle(mux, "GET /v1/guests", token(acl.GuestRead), s.listGuests)
	s.handle(mux, "GET /v1/guests/{name}", token(acl.GuestRead), s.getGuest)
	s.handle(mux, "GET /v1/guests/{name}/history", token(acl.GuestRead), s.guestHistory)
	s.handle(mux, "GET /v1/guests/{name}/logs", token(acl.GuestRead), s.guestLogs)
	s.handle(mux, "POST /v1/guests/{name}/console", token(acl.GuestWrite), s.guestConsole)
	s.handle(mux, "GET /v1/nodes", token(acl.NodeRead), s.listNodes)
	s.handle(mux, "GET /v1/events", token(acl.EventRead), s.streamEvents)
	s.handle(mux, "GET /v1/state", token(acl.EventRead), s.getState)
	s.handle(mux, "GET /v1/cluster/members", token(acl.ClusterRead), s.members)
	s.handle(mux, "POST /v1/cluster/join", access{kind: needServer}, s.handleJoin)
	s.handle(mux, "GET /v1/internal/read-index", access{kind: needServer}, s.handleReadIndex)
	s.handle(mux, "GET /v1/internal/raft-status", access{kind: needServer}, s.handleRaftStatus)
	s.handle(mux, "POST /v1/cluster/remove-peer", token(acl.ClusterWrite), s.handleRemovePeer)
	s.schedRoutes(mux)
	s.agentRoutes(mux)
	s.aclRoutes(mux)
	s.partitionRoutes(mux)
	s.migrateRoutes(mux)
	s.uiRoutes(mux)
	metricsAccess := access{kind: needPeer}
	if s.cfg.MetricsRequireToken {
		metricsAccess = token(acl.ClusterRead)
	}
	s.handle(mux, "GET /metrics", metricsAccess, s.metrics.handler().ServeHTTP)
	return mux
}

func decodeOptional(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return events.DecodeStrict(body, v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	// As json.Encoder with SetIndent("", "  ") writes it, faster.
	out := appendIndented(make([]byte, 0, 2*len(b)+1), b, "  ")
	w.Write(append(out, '\n'))
}

func writeError(w http.ResponseWriter, err error) {
	ae := api.ErrorOf(err)
	writeJSON(w, api.HTTPStatus(ae.Code), map[string]any{"error": ae})
}

var badRequest = api.BadRequest

// validHeader checks a free-text header value used as request ID or actor.
func validHeader(name, v string, max int) error {
	if len(v) > max {
		return badRequest(name, v[:max]+"…", fmt.Sprintf("at most %d characters", max))
	}
	for _, c := range v {
		if c < 0x20 || c == 0x7f {
			return badRequest(name, v, "no control characters")
		}
	}
	return nil
}

// write decodes a command, submits it on the leader or forwards it there,
// and answers with the committed indexes.
func (s *Server) write(w http.ResponseWriter, r *http.Request, parse func([]byte) (cluster.Command, error)) {
	s.writeWith(w, r, parse, nil)
}

// writeWith is write answering reply(result) instead, when reply is set:
// for commands that hand the caller something made on the leader (a
// token's secret, a certificate). Such commands ignore the request ID: a
// retry must not be answered with a secret that was never committed.
func (s *Server) writeWith(w http.ResponseWriter, r *http.Request, parse func([]byte) (cluster.Command, error), reply func(api.WriteResult) any) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, badRequest("body", "", fmt.Sprintf("at most %d bytes (the servers' --max-body): %v", s.limits.MaxBodyBytes, err)))
		return
	}
	reqID, label := r.Header.Get(api.HeaderRequestID), r.Header.Get(api.HeaderActor)
	if err := errors.Join(validHeader(api.HeaderRequestID, reqID, 128), validHeader(api.HeaderActor, label, 128)); err != nil {
		writeError(w, err)
		return
	}
	actor := callerOf(r).actor()
	cmd, err := parse(body)
	if errors.Is(err, api.ErrPermission) || errors.Is(err, api.ErrUnauthenticated) {
		s.refused(w, r, r.Pattern, callerOf(r), err)
		return
	}
	if err != nil {
		if !errors.Is(err, events.ErrInvalid) {
			err = fmt.Errorf("%w: request body: %v", events.ErrInvalid, err)
		}
		writeError(w, err)
		return
	}
	if reply != nil {
		reqID = ""
	}
	o, err := s.Submit(r.Context(), reqID, actor, cmd)
	if errors.Is(err, api.ErrNotLeader) {
		s.forward(w, r, body)
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if o.Err != nil && (errors.Is(o.Err, api.ErrPermission) || errors.Is(o.Err, api.ErrUnauthenticated)) {
		if len(o.Indexes) == 0 {
			s.refused(w, r, r.Pattern, callerOf(r), o.Err)
			return
		}
		s.recordRefusal(r, r.Pattern, callerOf(r), o.Err)
	}
	if o.Err != nil && len(o.Indexes) == 0 {
		writeError(w, o.Err)
		return
	}
	res := api.WriteResult{Indexes: o.Indexes}
	if len(o.Indexes) > 0 {
		res.Index = o.Indexes[len(o.Indexes)-1]
	} else {
		_, res.Index = s.store.Bounds()
	}
	if reply != nil {
		writeJSON(w, http.StatusOK, reply(res))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// forward sends a write to the leader and answers what the leader
// answered, as soon as it has: the write is committed then, and a client
// reading from here next still sees it, since a default read waits for
// the leader's read index and a stale one for the client's X-Corral-Min-Index.
// ACL writes alone wait until this server has applied them, so the next
// request authenticated here is checked against the tokens and policies
// just written.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Header.Get(headerForwarded) != "" {
		writeError(w, fmt.Errorf("%w: this server is not the leader either; retry", api.ErrUnavailable))
		return
	}
	_, id := s.raft.LeaderWithID()
	var addr string
	s.fsm.read(func(st *cluster.State) {
		if m, ok := st.Servers[string(id)]; ok {
			addr = m.HTTPAddr
		}
	})
	if addr == "" {
		writeError(w, fmt.Errorf("%w: no leader is known yet; retry in a moment", api.ErrUnavailable))
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, s.peerURL(addr)+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeError(w, err)
		return
	}
	for _, h := range []string{api.HeaderRequestID, api.HeaderActor, api.HeaderNodeSecret, api.HeaderToken, "Authorization", "Content-Type"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(headerForwarded, s.cfg.ID)
	// The leader authorizes the caller again, as the identity this server
	// authenticated; it believes the header only from a server.
	if c := callerOf(r); !c.insecure {
		ob := "anonymous"
		if !c.id.IsZero() {
			ob = c.id.String()
		}
		req.Header.Set(headerOnBehalf, ob)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		writeError(w, fmt.Errorf("%w: forward to leader %s: %v", api.ErrUnavailable, id, err))
		return
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		writeError(w, fmt.Errorf("%w: read leader's answer: %v", api.ErrUnavailable, err))
		return
	}
	var res api.WriteResult
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(r.URL.Path, "/v1/acl/") && json.Unmarshal(out, &res) == nil && res.Index > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		s.WaitIndex(ctx, res.Index)
		cancel()
	}
	for _, h := range []string{"Content-Type", "Retry-After", api.HeaderIndex} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(out)
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	var m events.ServerRegistered
	if err := events.DecodeStrict(body, &m); err != nil {
		writeError(w, fmt.Errorf("%w: join request: %v", events.ErrInvalid, err))
		return
	}
	if c := callerOf(r); !c.insecure && c.id != (pki.Identity{Role: pki.RoleServer, Name: m.ID}) {
		s.refused(w, r, r.Pattern, c, fmt.Errorf("%w: %s may join only as itself, not as server %q", api.ErrPermission, c.who(), m.ID))
		return
	}
	if s.raft.State() != raft.Leader {
		s.forward(w, r, body)
		return
	}
	if err := s.join(r.Context(), m); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"joined": m.ID})
}

func (s *Server) listGuests(w http.ResponseWriter, r *http.Request) {
	if !s.readBarrier(w, r) {
		return
	}
	out := []*api.Guest{}
	s.fsm.read(func(st *cluster.State) {
		for _, name := range slices.Sorted(maps.Keys(st.Guests)) {
			out = append(out, cluster.View(st.Guests[name]))
		}
	})
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getGuest(w http.ResponseWriter, r *http.Request) {
	if !s.readBarrier(w, r) {
		return
	}
	name := r.PathValue("name")
	if err := events.ValidateID("guest name", name); err != nil {
		writeError(w, err)
		return
	}
	var g *api.GuestView
	s.fsm.read(func(st *cluster.State) {
		if x, ok := st.Guests[name]; ok {
			g = &api.GuestView{Guest: *cluster.View(x)}
			if x.Status == cluster.StatusPending {
				if prev, err := cluster.Explain(st, x); err == nil {
					g.Unplaced = prev.Unplaced
				}
			}
		}
	})
	if g == nil {
		writeError(w, api.NotFound("guest", name))
		return
	}
	writeJSON(w, http.StatusOK, g)
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	if !s.readBarrier(w, r) {
		return
	}
	out := []api.NodeView{}
	s.fsm.read(func(st *cluster.State) {
		for _, id := range slices.Sorted(maps.Keys(st.Nodes)) {
			out = append(out, st.NodeView(st.Nodes[id]))
		}
	})
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		writeError(w, fmt.Errorf("%w: %v", api.ErrUnavailable, err))
		return
	}
	_, leader := s.raft.LeaderWithID()
	var out []api.Member
	s.fsm.read(func(st *cluster.State) {
		for _, srv := range cf.Configuration().Servers {
			m := api.Member{ID: string(srv.ID), RaftAddr: string(srv.Address), Suffrage: strings.ToLower(srv.Suffrage.String()), Leader: srv.ID == leader}
			if info, ok := st.Servers[m.ID]; ok {
				m.HTTPAddr = info.HTTPAddr
			}
			out = append(out, m)
		}
	})
	writeJSON(w, http.StatusOK, out)
}

func parseIndex(r *http.Request, name string) (uint64, bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, badRequest(name, v, "give a whole number ≥ 0")
	}
	return n, true, nil
}

// getState answers the state as of ?at=N, or the current state.
func (s *Server) getState(w http.ResponseWriter, r *http.Request) {
	at, given, err := parseIndex(r, "at")
	if err != nil {
		writeError(w, err)
		return
	}
	if !given && !s.readBarrier(w, r) {
		return
	}
	var view *api.State
	if given {
		var st *cluster.State
		if st, err = s.StateAt(at); err == nil {
			view = st.View()
		}
	} else {
		s.fsm.read(func(cur *cluster.State) { view = cur.View() })
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, view)
}

// eventFilter selects events by type, guest and node.
type eventFilter struct {
	types       map[events.Type]bool
	guest, node string
}

func parseFilter(r *http.Request) (eventFilter, error) {
	q := r.URL.Query()
	f := eventFilter{guest: q.Get("guest"), node: q.Get("node")}
	if t := q.Get("type"); t != "" {
		f.types = map[events.Type]bool{}
		for _, name := range strings.Split(t, ",") {
			typ, err := events.ParseType(strings.TrimSpace(name))
			if err != nil {
				return f, fmt.Errorf("%w: type filter: %v", events.ErrInvalid, err)
			}
			f.types[typ] = true
		}
	}
	if f.guest != "" {
		if err := events.ValidateID("guest", f.guest); err != nil {
			return f, err
		}
	}
	if f.node != "" {
		if err := events.ValidateID("node", f.node); err != nil {
			return f, err
		}
	}
	return f, nil
}

func (f eventFilter) match(data []byte) bool {
	if f.types == nil && f.guest == "" && f.node == "" {
		return true
	}
	var e struct {
		Type  events.Type `json:"type"`
		Guest string      `json:"guest"`
		Node  string      `json:"node"`
	}
	if json.Unmarshal(data, &e) != nil {
		return false
	}
	return (f.types == nil || f.types[e.Type]) && (f.guest == "" || e.Guest == f.guest) && (f.node == "" || e.Node == f.node)
}

// streamEvents answers GET /v1/events?since=N&follow=1&type=&guest=&node=
// with newline-delimited JSON, one event per line, index > since.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	since, _, err := parseIndex(r, "since")
	if err != nil {
		writeError(w, err)
		return
	}
	follow := r.URL.Query().Get("follow")
	if follow != "" && follow != "0" && follow != "1" && follow != "true" && follow != "false" {
		writeError(w, badRequest("follow", follow, "use 1 or 0"))
		return
	}
	following := follow == "1" || follow == "true"
	f, err := parseFilter(r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.streamFrom(w, r, since, following, f)
}

func (s *Server) streamFrom(w http.ResponseWriter, r *http.Request, since uint64, follow bool, f eventFilter) {
	if err := s.storeBroken(); err != nil {
		writeError(w, err)
		return
	}
	// The store may trail the state by what its writer has queued: wait
	// for it, so that the stream shows every write acknowledged here.
	if err := s.waitStored(r.Context()); err != nil {
		if s.storeBroken() == nil && r.Context().Err() == nil {
			err = fmt.Errorf("%w: server %s's event store is still catching up with its state; retry", api.ErrUnavailable, s.cfg.ID)
		}
		writeError(w, err)
		return
	}
	if c := callerOf(r); follow && !c.insecure && c.id.Role != pki.RoleServer {
		done, err := s.limiter.openStream(c.key())
		if err != nil {
			s.refused(w, r, "GET /v1/events", c, err)
			return
		}
		defer done()
	}
	cursor := since
	recs, through, err := s.readFiltered(cursor, f)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	_, last := s.store.Bounds()
	w.Header().Set(api.HeaderIndex, strconv.FormatUint(last, 10))
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	for {
		for _, rec := range recs {
			cursor = rec.Index
			if !f.match(rec.Data) {
				continue
			}
			if _, err := w.Write(append(rec.Data, '\n')); err != nil {
				return
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
		cursor = max(cursor, through)
		if len(recs) == 0 {
			if !follow {
				return
			}
			if err := s.waitStore(r.Context(), cursor); err != nil {
				if r.Context().Err() == nil {
					b, _ := json.Marshal(map[string]any{"error": api.ErrorOf(err)})
					w.Write(append(b, '\n'))
				}
				return
			}
		}
		recs, through, err = s.readFiltered(cursor, f)
		if err != nil {
			// Retention overtook a slow follower: say so in-band and stop.
			b, _ := json.Marshal(map[string]any{"error": api.ErrorOf(err)})
			w.Write(append(b, '\n'))
			return
		}
	}
}

// readFiltered reads the next records after cursor for a stream with
// filter f: through the subject index when f names a guest or a node, so
// that one guest's history costs its own events, not the log's. through
// is how far the read looked (see Store.ReadSubject).
func (s *Server) readFiltered(cursor uint64, f eventFilter) (recs []Record, through uint64, err error) {
	switch {
	case f.guest != "":
		return s.store.ReadSubject(SubjectGuest, f.guest, cursor, 1024)
	case f.node != "":
		return s.store.ReadSubject(SubjectNode, f.node, cursor, 1024)
	}
	recs, err = s.store.Read(cursor, 1024)
	if len(recs) > 0 {
		through = recs[len(recs)-1].Index
	}
	return recs, through, err
}

func (s *Server) guestHistory(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := events.ValidateID("guest name", name); err != nil {
		writeError(w, err)
		return
	}
	first, _ := s.store.Bounds()
	s.streamFrom(w, r, first-1, false, eventFilter{guest: name})
}
