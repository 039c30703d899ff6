package nodeagent

import (
	"context"
	"time"

	"github.com/corral-dev/corral/events"
)

// heartbeat tells the coordinator the agent is alive every heartbeat
// interval and fences the node when no heartbeat has succeeded for longer
// than the fence timeout (invariant 6). The first success after fencing
// unfences it and asks for a pass, which thaws what the log still assigns
// here and destroys the rest.
func (a *Agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	lastOK := time.Now()
	for {
		// A slow answer is still an answer: fencing is decided by the time
		// since the last success, not by one request's timeout.
		hctx, cancel := context.WithTimeout(ctx, max(a.cfg.HeartbeatInterval, a.cfg.FenceTimeout/3))
		idx, err := a.deps.Coordinator.Heartbeat(hctx, a.cfg.NodeID, a.secret)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			lastOK = time.Now()
			if a.fenced.Swap(false) {
				a.log.Info("coordinator reachable again: unfencing")
				a.poke()
			} else if idx > a.lastIndex.Load() {
				// The log moved past what the agent has accounted for;
				// a pass is cheap and catches notifications NATS lost.
				a.poke()
			}
		case time.Since(lastOK) > a.cfg.FenceTimeout:
			if !a.fenced.Swap(true) {
				a.log.Warn("no heartbeat for longer than the fence timeout: fencing", "since", lastOK, "err", err)
				a.poke()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watch follows the event stream and asks for a pass on every event that
// may concern the node, on a gap in the indexes and on every (re)connect.
func (a *Agent) watch(ctx context.Context) {
	for {
		a.poke()
		err := a.deps.Notifier.Watch(ctx, a.notify)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("event stream broke; resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.cfg.HeartbeatInterval): // back off before resubscribing
		}
	}
}

// notify handles one delivered event. Events at or below the index the
// agent has accounted for are duplicates or late and are dropped.
func (a *Agent) notify(e events.Event) {
	for {
		last := a.lastIndex.Load()
		if e.Index <= last {
			return
		}
		if a.lastIndex.CompareAndSwap(last, e.Index) {
			if e.Index > last+1 || e.Node == a.cfg.NodeID || (e.Guest != "" && a.concerns(e.Guest)) {
				a.poke()
			}
			return
		}
	}
}
