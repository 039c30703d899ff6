package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// A server joins as a non-voter and the leader promotes it to voter once
// it has caught up, as raft's autopilot does: a server that never comes
// (a wrong address, a host that died) then never counts towards quorum,
// and a join cannot cost the cluster its leader.
const (
	// membershipCheck is how often the leader asks each non-voter how far
	// it has applied the log.
	membershipCheck = 250 * time.Millisecond
	// promoteLag is how many entries behind the leader's last a non-voter
	// may be and still count as caught up.
	promoteLag = 64
	// promoteChecks is how many checks in a row must find a non-voter
	// caught up before it is promoted.
	promoteChecks = 2
	// statusTimeout bounds one status request to a non-voter.
	statusTimeout = 2 * time.Second
	// maxMembershipBody bounds a join or remove-peer request.
	maxMembershipBody = 4 << 10
	// maxAddrLen bounds an address a joining server gives.
	maxAddrLen = 255
)

// join adds a server to the raft configuration as a non-voter and records
// its addresses; membershipLoop promotes it once it has caught up. It runs
// on the leader. A server already a member at the same raft address is
// only recorded again, so a retried join is harmless; an ID that is a
// member at another address, or an address another ID holds, is refused.
func (s *Server) join(ctx context.Context, m events.ServerRegistered) error {
	if err := validateJoin(m); err != nil {
		return err
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	id, addr := raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr)
	present := false
	for _, srv := range cf.Configuration().Servers {
		switch {
		case srv.ID == id && srv.Address == addr:
			present = true
		case srv.ID == id:
			return fmt.Errorf("%w: server %s is a member at raft address %s, not %s: join it with that address, or remove it first (corral cluster remove-peer %s)",
				api.ErrConflict, m.ID, srv.Address, m.RaftAddr, m.ID)
		case srv.Address == addr:
			return fmt.Errorf("%w: raft address %s belongs to server %s: give server %s an address of its own, or remove %s first (corral cluster remove-peer %s)",
				api.ErrConflict, m.RaftAddr, srv.ID, m.ID, srv.ID, srv.ID)
		}
	}
	if !present {
		if err := s.raft.AddNonvoter(id, addr, 0, applyTimeout).Error(); err != nil {
			return fmt.Errorf("%w: add server %s: %v; retry", api.ErrUnavailable, m.ID, err)
		}
		s.log.Info("server joined as a non-voter; it becomes a voter once it has caught up", "id", m.ID, "raft_addr", m.RaftAddr, "http_addr", m.HTTPAddr)
	}
	_, err := s.Submit(ctx, "", "server:"+s.cfg.ID, &cluster.RegisterServer{ServerRegistered: m})
	return err
}

// validateJoin checks what a joining server says of itself.
func validateJoin(m events.ServerRegistered) error {
	if err := events.ValidateID("server id", m.ID); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"raft_addr", m.RaftAddr}, {"http_addr", m.HTTPAddr}} {
		if len(f.v) > maxAddrLen {
			return badRequest(f.name, f.v[:maxAddrLen]+"…", fmt.Sprintf("at most %d characters", maxAddrLen))
		}
	}
	if host, port, err := net.SplitHostPort(m.RaftAddr); err != nil || host == "" || port == "0" {
		return badRequest("raft_addr", m.RaftAddr, "host:port the other servers reach this one's raft at")
	}
	hostPort := m.HTTPAddr
	if strings.Contains(hostPort, "://") {
		u, err := url.Parse(hostPort)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" && u.Path != "/" {
			return badRequest("http_addr", m.HTTPAddr, "host:port, http://host:port or https://host:port of this server's API")
		}
		hostPort = u.Host
	}
	if host, port, err := net.SplitHostPort(hostPort); err != nil || host == "" || port == "0" {
		return badRequest("http_addr", m.HTTPAddr, "host:port, http://host:port or https://host:port of this server's API")
	}
	return nil
}

// removePeer takes a server out of the raft configuration. It runs on the
// leader (ErrNotLeader elsewhere) and refuses to remove the leader itself,
// the last voter, or a server that is not a member.
func (s *Server) removePeer(ctx context.Context, id string) error {
	if err := events.ValidateID("server id", id); err != nil {
		return err
	}
	if s.raft.State() != raft.Leader {
		return api.ErrNotLeader
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	var (
		found  *raft.Server
		voters int
	)
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
		if srv.ID == raft.ServerID(id) {
			found = &srv
		}
	}
	switch {
	case found == nil:
		return fmt.Errorf("%w: server %q is not a member of the cluster: corral cluster members lists them", api.ErrNotFound, id)
	case id == s.cfg.ID:
		return fmt.Errorf("%w: server %s is the leader and cannot remove itself: transfer leadership first (stop %s; once another server leads, remove it through that one)", api.ErrConflict, id, id)
	case found.Suffrage == raft.Voter && voters == 1:
		return fmt.Errorf("%w: server %s is the last voter: add another server before removing it", api.ErrConflict, id)
	}
	if err := waitFuture(ctx, s.raft.RemoveServer(found.ID, 0, applyTimeout)); err != nil {
		return fmt.Errorf("%w: remove server %s: %v; retry", api.ErrUnavailable, id, err)
	}
	s.log.Info("removed server from the cluster", "id", id, "raft_addr", found.Address, "suffrage", strings.ToLower(found.Suffrage.String()))
	return nil
}

// waitFuture waits for f or for ctx to end; f may still complete after.
func waitFuture(ctx context.Context, f raft.Future) error {
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handleRemovePeer answers POST /v1/cluster/remove-peer {"id": "s3"},
// forwarding to the leader when this server does not lead.
func (s *Server) handleRemovePeer(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMembershipBody))
	if err != nil {
		writeError(w, badRequest("body", "", fmt.Sprintf("at most %d bytes: %v", maxMembershipBody, err)))
		return
	}
	var req api.RemovePeer
	if err := events.DecodeStrict(body, &req); err != nil {
		writeError(w, fmt.Errorf("%w: remove-peer request: %v", events.ErrInvalid, err))
		return
	}
	err = s.removePeer(r.Context(), req.ID)
	if errors.Is(err, api.ErrNotLeader) {
		s.forward(w, r, body)
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.RemovedPeer{Removed: req.ID})
}

// handleRaftStatus answers GET /v1/internal/raft-status with this
// server's raft status; the leader asks it of non-voters.
func (s *Server) handleRaftStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.raftStatus())
}

func (s *Server) raftStatus() api.RaftStatus {
	state := s.raft.State()
	_, leader := s.raft.LeaderWithID()
	st := api.RaftStatus{
		ID:            s.cfg.ID,
		State:         strings.ToLower(state.String()),
		Leader:        string(leader),
		AppliedIndex:  s.raft.AppliedIndex(),
		CommitIndex:   s.raft.CommitIndex(),
		LastIndex:     s.raft.LastIndex(),
		LastContactMs: -1,
	}
	if state == raft.Leader {
		st.LastContactMs = 0
	} else if lc := s.raft.LastContact(); !lc.IsZero() {
		st.LastContactMs = max(0, time.Since(lc).Milliseconds())
	}
	return st
}

// membershipLoop promotes non-voters to voters once they have caught up.
// It runs on the leader until ctx ends.
func (s *Server) membershipLoop(ctx context.Context) {
	t := time.NewTicker(membershipCheck)
	defer t.Stop()
	p := newPromotion(s.cfg.ID, 4*s.cfg.Raft.HeartbeatTimeout)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.checkNonvoters(ctx, p)
	}
}

// checkNonvoters asks every non-voter for its status, at once, and
// promotes those p says have caught up.
func (s *Server) checkNonvoters(ctx context.Context, p *promotion) {
	cf := s.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	var nonvoters []raft.Server
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage == raft.Nonvoter {
			nonvoters = append(nonvoters, srv)
		}
	}
	commit, last := s.raft.CommitIndex(), s.raft.LastIndex()
	if len(nonvoters) == 0 {
		p.round(nil, commit)
		return
	}
	checks := make([]check, len(nonvoters))
	var wg sync.WaitGroup
	for i, srv := range nonvoters {
		checks[i] = check{ID: string(srv.ID), LeaderLast: last}
		wg.Add(1)
		go func() {
			defer wg.Done()
			checks[i].Status, checks[i].Err = s.askStatus(ctx, checks[i].ID)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for i, d := range p.round(checks, commit) {
		srv, c := nonvoters[i], checks[i]
		switch d {
		case decidePromote:
			if err := waitFuture(ctx, s.raft.AddVoter(srv.ID, srv.Address, 0, applyTimeout)); err != nil {
				s.log.Warn("promote non-voter: retrying at the next check", "id", srv.ID, "err", err)
				p.forget(c.ID)
				continue
			}
			s.log.Info("promoted server to voter: it has caught up", "id", srv.ID, "raft_addr", srv.Address, "applied_index", c.Status.AppliedIndex, "leader_last_index", last)
		case decideNotReady:
			s.log.Info("non-voter is not caught up; it stays a non-voter and does not count towards quorum", "id", srv.ID, "raft_addr", srv.Address, "why", c.reason)
		}
	}
}

// askStatus asks server id, at the HTTP address the log holds for it,
// for its raft status.
func (s *Server) askStatus(ctx context.Context, id string) (*api.RaftStatus, error) {
	var addr string
	s.fsm.read(func(st *cluster.State) {
		if m, ok := st.Servers[id]; ok {
			addr = m.HTTPAddr
		}
	})
	if addr == "" {
		return nil, errors.New("its HTTP address is not recorded yet")
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", s.peerURL(addr)+"/v1/internal/raft-status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMembershipBody))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, api.DecodeError(resp.StatusCode, b)
	}
	var st api.RaftStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("its raft status: %w", err)
	}
	return &st, nil
}

// check is one look at a non-voter: its status, or why there is none.
type check struct {
	ID         string
	Status     *api.RaftStatus
	Err        error
	LeaderLast uint64 // the leader's last log index when it asked
	reason     string // why it is not caught up, set by promotion.round
}

// decision is what a check leads to.
type decision int

const (
	decideWait     decision = iota // caught up, not yet for long enough; or not ready, said already
	decidePromote                  // promote it now
	decideNotReady                 // not caught up, and it was before (or never checked): say so
)

// promotion decides, from one check of every non-voter per round, which
// to promote: one whose status names it, follows this leader, heard from
// it recently and has applied the log to within promoteLag entries of the
// leader's last index (or to the leader's commit index at the previous
// round), promoteChecks rounds in a row. It does no I/O and reads no
// clock.
type promotion struct {
	leader     string
	maxContact time.Duration
	prevCommit uint64 // the leader's commit index at the previous round, 0 before the first
	streak     map[string]int
	notReady   map[string]string // the reason last said, to say each once
}

func newPromotion(leader string, maxContact time.Duration) *promotion {
	return &promotion{leader: leader, maxContact: maxContact, streak: map[string]int{}, notReady: map[string]string{}}
}

// round takes this round's checks and the leader's commit index now, and
// returns a decision per check. Non-voters that are not in checks are
// forgotten.
func (p *promotion) round(checks []check, commit uint64) []decision {
	out := make([]decision, len(checks))
	seen := map[string]bool{}
	for i := range checks {
		c := &checks[i]
		seen[c.ID] = true
		c.reason = p.lag(*c)
		if c.reason == "" {
			delete(p.notReady, c.ID)
			p.streak[c.ID]++
			if p.streak[c.ID] >= promoteChecks {
				out[i] = decidePromote
				delete(p.streak, c.ID)
			}
			continue
		}
		delete(p.streak, c.ID)
		// The reason's wording changes with indexes and times: say it
		// again only when the kind of reason changes.
		kind, _, _ := strings.Cut(c.reason, ":")
		if p.notReady[c.ID] != kind {
			p.notReady[c.ID] = kind
			out[i] = decideNotReady
		}
	}
	for id := range p.streak {
		if !seen[id] {
			delete(p.streak, id)
		}
	}
	for id := range p.notReady {
		if !seen[id] {
			delete(p.notReady, id)
		}
	}
	p.prevCommit = commit
	return out
}

// forget starts id's count again, after a promotion failed.
func (p *promotion) forget(id string) { delete(p.streak, id) }

// lag returns why c's non-voter is not caught up, "" when it is.
func (p *promotion) lag(c check) string {
	st := c.Status
	switch {
	case c.Err != nil:
		return "unreachable: " + c.Err.Error()
	case st == nil:
		return "unreachable: no status"
	case st.ID != c.ID:
		return fmt.Sprintf("another server answers: its HTTP address answers as %q", st.ID)
	case st.Leader != p.leader:
		return fmt.Sprintf("not following this leader: it follows %q", st.Leader)
	case st.LastContactMs < 0:
		return "no contact: it never heard from the leader"
	case time.Duration(st.LastContactMs)*time.Millisecond > p.maxContact:
		return fmt.Sprintf("no recent contact: it last heard from the leader %dms ago", st.LastContactMs)
	case st.AppliedIndex+promoteLag >= c.LeaderLast:
		return ""
	case p.prevCommit > 0 && st.AppliedIndex >= p.prevCommit:
		return ""
	}
	return fmt.Sprintf("behind: it applied index %d, the leader's last is %d", st.AppliedIndex, c.LeaderLast)
}
