package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// This file fills in the events a server's store lacks below its first
// index: after the store was rebuilt from a raft snapshot (it was torn, or
// lost) or the server joined through one, raft no longer holds them, but
// a peer's store usually does. The events are the same bytes on every
// server, so they are copied, checked and prepended; history and the
// event stream then reach back as far as the peer's, and `state --at` as
// far as a checkpoint or index 1 allows.

// backfillChunk is how many events one request asks a peer for.
const backfillChunk = 4096

// backfillRetry is how often the loop looks at the store's first index,
// and how long it waits before asking again when no peer could help.
const backfillRetry = 5 * time.Second

// backfillLoop copies older events whenever this server's store starts
// after index 1 and its retention would keep them: after a rebuild at
// start, and after a snapshot raft installs later on. It runs until ctx
// ends, looking every backfillRetry.
func (s *Server) backfillLoop(ctx context.Context) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return
	}
	for {
		first, last := s.store.Bounds()
		if first > 1 && (s.cfg.Store.MaxEvents == 0 || last-first+1 < s.cfg.Store.MaxEvents) {
			n, err := s.backfillOnce(ctx, first)
			switch {
			case ctx.Err() != nil:
				return
			case n > 0:
				s.log.Info("event store: copied older events from a peer", "events", n, "first", first-uint64(n))
				continue
			case err != nil:
				s.log.Warn("event store: cannot copy older events from a peer yet", "first", first, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backfillRetry):
		}
	}
}

// backfillOnce copies up to backfillChunk events before first from the
// first peer that has them, and returns how many it stored.
func (s *Server) backfillOnce(ctx context.Context, first uint64) (int, error) {
	var peers []string
	s.fsm.read(func(st *cluster.State) {
		for id, m := range st.Servers {
			if id != s.cfg.ID && m.HTTPAddr != "" {
				peers = append(peers, m.HTTPAddr)
			}
		}
	})
	since := uint64(0)
	if first-1 > backfillChunk {
		since = first - 1 - backfillChunk
	}
	var errs []error
	for _, addr := range peers {
		recs, err := s.fetchEvents(ctx, addr, since, first-1)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(recs) == 0 {
			continue
		}
		if err := s.store.Prepend(recs); err != nil {
			return 0, err
		}
		return len(recs), nil
	}
	if len(errs) == 0 {
		return 0, errors.New("no peer holds older events")
	}
	return 0, errors.Join(errs...)
}

// fetchEvents reads the events after since up to end from a peer's store.
// A peer that no longer retains since+1 gives what it has from its own
// first index on, when that is still below end.
func (s *Server) fetchEvents(ctx context.Context, addr string, since, end uint64) ([]Record, error) {
	for range 2 {
		recs, gone, err := s.fetchEventsFrom(ctx, addr, since, end)
		if gone == 0 {
			return recs, err
		}
		if gone > end {
			return nil, nil // the peer retains nothing we lack
		}
		since = gone - 1
	}
	return nil, nil
}

func (s *Server) fetchEventsFrom(ctx context.Context, addr string, since, end uint64) (recs []Record, gone uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := s.peerURL(addr) + "/v1/events?since=" + strconv.FormatUint(since, 10)
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		var ae *api.APIError
		if err := api.DecodeError(resp.StatusCode, b.Bytes()); errors.As(err, &ae) && ae.Code == api.CodeGone {
			return nil, ae.FirstIndex, nil
		} else {
			return nil, 0, fmt.Errorf("%s: %w", addr, err)
		}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	next := since + 1
	for sc.Scan() && next <= end {
		line := sc.Bytes()
		e, err := events.Unmarshal(line)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: event %d: %w", addr, next, err)
		}
		if e.Index != next {
			return nil, 0, fmt.Errorf("%s: sent event %d where %d was due", addr, e.Index, next)
		}
		recs = append(recs, Record{Index: e.Index, Data: bytes.Clone(line)})
		next++
	}
	if next <= end && sc.Err() != nil {
		return nil, 0, fmt.Errorf("%s: %w", addr, sc.Err())
	}
	if next <= end {
		return nil, 0, fmt.Errorf("%s: stream ended at %d before %d", addr, next-1, end)
	}
	return recs, 0, nil
}
