package nodeagent

import (
	"context"
	"time"
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
		if a.fence != nil {
			a.fence.check()
		}
		// The lease runs from when the heartbeat was sent: the coordinator
		// cannot have heard it earlier, so it cannot count the node-down
		// timeout from earlier either.
		sent, sentBoot := time.Now(), now()
		// A slow answer is still an answer: fencing is decided by the time
		// since the last success, not by one request's timeout.
		hctx, cancel := context.WithTimeout(ctx, max(a.cfg.HeartbeatInterval, a.cfg.FenceTimeout/3))
		nodeIdx, err := a.deps.Coordinator.Heartbeat(hctx, a.cfg.NodeID, a.secret)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			lastOK = sent
			if a.fence != nil && a.fence.renew(sentBoot+a.cfg.FenceTimeout.Nanoseconds()) {
				a.poke()
			}
			if a.fenced.Swap(false) {
				// List before thawing anything: what moved away while we
				// were cut off may never have reached us.
				a.log.Info("coordinator reachable again: unfencing")
				a.relist()
			}
			a.checkBehind(nodeIdx)
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

// checkBehind lists again when the node's last event, as a heartbeat
// reported it, is still missing from the desired state one heartbeat
// later: its update was lost on the way.
func (a *Agent) checkBehind(nodeIdx uint64) {
	a.dmu.Lock()
	lost := false
	switch {
	case !a.listed || nodeIdx <= a.desired.Index:
		a.behind = 0
	case a.behind > a.desired.Index:
		lost = true
	default:
		a.behind = nodeIdx
	}
	a.dmu.Unlock()
	if lost {
		a.log.Info("an update for this node never arrived: listing again")
		a.relist()
	}
}

// watch follows the node's updates; each (re)subscription lists the
// desired state again, since updates may have been missed meanwhile.
// subscribed is closed on the first subscription, so the first list comes
// after it and sees everything the updates will not.
func (a *Agent) watch(ctx context.Context, subscribed chan<- struct{}) {
	first := true
	ready := func() {
		// Before the first list this only marks one as due, which the
		// first pass does anyway; after it, the list is done again.
		a.relist()
		if first {
			first = false
			close(subscribed)
		}
	}
	for {
		err := a.deps.Notifier.Watch(ctx, a.cfg.NodeID, ready, a.update)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("node updates broke; resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.cfg.HeartbeatInterval): // back off before resubscribing
		}
	}
}
