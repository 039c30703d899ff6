package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
)

// This file makes reads tell the truth. A default read reflects every
// write acknowledged before it began, on any server: the leader confirms
// it still leads (a heartbeat round) and answers from its state, which
// holds every acknowledged write once it applied what earlier leaders
// committed; a follower asks the leader for that state's index and waits
// until its own state has it. A server that cannot get there in time, or
// is still replaying its log, answers 503 catching_up with the indexes,
// never a partial state. A stale read (?stale=1) is served from the local
// state at once and says how far behind it may be; one that names the
// client's last index (X-Corral-Min-Index) first waits until the local
// state has it, so the client still reads its own writes.

// readWait bounds how long a read waits for this server to catch up.
const readWait = 5 * time.Second

// Headers of a read's answer.
const (
	headerLastContact = "X-Corral-Last-Contact"
	headerKnownLeader = "X-Corral-Known-Leader"
)

// ReadIndex returns the index a consistent read must see: on the leader,
// after confirming it still leads, the index of its state. It fails on a
// server that is not a ready leader.
func (s *Server) ReadIndex(ctx context.Context) (uint64, error) {
	if s.raft.State() != raft.Leader {
		return 0, api.ErrNotLeader
	}
	if !s.leaderReady.Load() {
		return 0, fmt.Errorf("%w: this server was just elected and is still applying what earlier leaders committed; retry in a moment", api.ErrUnavailable)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.raft.VerifyLeader().Error() }()
	select {
	case err := <-errc:
		if err != nil {
			return 0, fmt.Errorf("%w: this server could not confirm it still leads (%v); retry", api.ErrUnavailable, err)
		}
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: confirming leadership: %v", api.ErrUnavailable, ctx.Err())
	}
	return s.AppliedIndex(), nil
}

// readBarrier makes r a consistent read (or, with ?stale=1, a stale one)
// and sets the headers that say what the answer reflects. It answers the
// error itself and returns false when the read cannot be served.
func (s *Server) readBarrier(w http.ResponseWriter, r *http.Request) bool {
	if err := s.storeBroken(); err != nil {
		writeError(w, err)
		return false
	}
	stale := r.URL.Query().Get("stale")
	switch stale {
	case "", "0", "false":
	case "1", "true":
		if !s.waitMinIndex(w, r) {
			return false
		}
		w.Header().Set(headerLastContact, strconv.FormatInt(s.lastContact().Milliseconds(), 10))
		_, id := s.raft.LeaderWithID()
		w.Header().Set(headerKnownLeader, strconv.FormatBool(id != ""))
		w.Header().Set(api.HeaderIndex, strconv.FormatUint(s.AppliedIndex(), 10))
		return true
	default:
		writeError(w, badRequest("stale", stale, "use 1 for a read served by this server at once, or leave it out"))
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), readWait)
	defer cancel()
	idx, err := s.ReadIndex(ctx)
	if err == api.ErrNotLeader {
		idx, err = s.leaderReadIndex(ctx, r)
	}
	if err == nil {
		if err = s.WaitIndex(ctx, idx); err != nil && s.storeBroken() == nil {
			err = &api.APIError{Code: api.CodeCatchingUp, Index: s.AppliedIndex(), Want: idx,
				Message: fmt.Sprintf("server %s holds the log up to index %d and is catching up to %d; retry, or read with ?stale=1 (--stale) to see its state as it is", s.cfg.ID, s.AppliedIndex(), idx)}
		}
	}
	if err != nil {
		writeError(w, err)
		return false
	}
	w.Header().Set(api.HeaderIndex, strconv.FormatUint(s.AppliedIndex(), 10))
	return true
}

// waitMinIndex holds a stale read until this server has applied the
// index the client asks for in X-Corral-Min-Index (its own last write),
// bounded by readWait. It answers the error itself and returns false
// when the index is bad or not reached in time.
func (s *Server) waitMinIndex(w http.ResponseWriter, r *http.Request) bool {
	v := r.Header.Get(api.HeaderMinIndex)
	if v == "" {
		return true
	}
	want, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		writeError(w, badRequest(api.HeaderMinIndex, v, "give the log index of the client's last write or read, a decimal number, or leave it out"))
		return false
	}
	if _, last := s.store.Bounds(); last >= want {
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), readWait)
	defer cancel()
	if err := s.WaitIndex(ctx, want); err != nil {
		if s.storeBroken() == nil {
			err = &api.APIError{Code: api.CodeCatchingUp, Index: s.AppliedIndex(), Want: want,
				Message: fmt.Sprintf("server %s holds the log up to index %d, before the client's last write or read at %d; retry, maybe on another server", s.cfg.ID, s.AppliedIndex(), want)}
		}
		writeError(w, err)
		return false
	}
	return true
}

// lastContact is how long ago this server heard from the leader; zero on
// the leader.
func (s *Server) lastContact() time.Duration {
	if s.raft.State() == raft.Leader {
		return 0
	}
	lc := s.raft.LastContact()
	if lc.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(lc)
}

// leaderReadIndex asks the leader for the read index.
func (s *Server) leaderReadIndex(ctx context.Context, r *http.Request) (uint64, error) {
	addr, id := s.leaderHTTP()
	if addr == "" {
		return 0, fmt.Errorf("%w: no leader is known yet, so a consistent read cannot be served; retry in a moment, or read with ?stale=1 (--stale)", api.ErrUnavailable)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", s.peerURL(addr)+"/v1/internal/read-index", nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w: ask leader %s for the read index: %v", api.ErrUnavailable, id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, api.MaxBody))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%w: leader %s: %s", api.ErrUnavailable, id, api.DecodeError(resp.StatusCode, b).Error())
	}
	var out readIndexReply
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, fmt.Errorf("%w: leader %s answered the read index with %q", api.ErrUnavailable, id, b)
	}
	return out.Index, nil
}

type readIndexReply struct {
	Index uint64 `json:"index"`
}

// leaderHTTP returns the leader's HTTP address and ID, "" when unknown.
func (s *Server) leaderHTTP() (addr, id string) {
	_, lid := s.raft.LeaderWithID()
	s.fsm.read(func(st *cluster.State) {
		if m, ok := st.Servers[string(lid)]; ok {
			addr = m.HTTPAddr
		}
	})
	return addr, string(lid)
}

func (s *Server) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	idx, err := s.ReadIndex(r.Context())
	if err != nil {
		if err == api.ErrNotLeader {
			err = fmt.Errorf("%w: this server is not the leader", api.ErrUnavailable)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, readIndexReply{Index: idx})
}
