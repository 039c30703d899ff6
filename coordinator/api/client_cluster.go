package api

import (
	"context"

	"github.com/corral-dev/corral/events"
)

// RemovePeer is the body of POST /v1/cluster/remove-peer.
type RemovePeer struct {
	ID string `json:"id"`
}

// RemovedPeer answers a RemovePeer.
type RemovedPeer struct {
	Removed string `json:"removed"`
}

// RaftStatus is what GET /v1/internal/raft-status says of one server's
// raft: the leader asks a non-voter for it before promoting it to voter.
type RaftStatus struct {
	ID string `json:"id"`
	// State is leader, follower, candidate or shutdown.
	State string `json:"state"`
	// Leader is the ID of the leader this server follows, "" when it knows
	// none.
	Leader       string `json:"leader,omitempty"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastIndex    uint64 `json:"last_index"`
	// LastContactMs is how long ago this server last heard from the
	// leader, in milliseconds: 0 on the leader, -1 when it never did.
	LastContactMs int64 `json:"last_contact_ms"`
}

// RemovePeer removes a coordinator server from the cluster: it stops
// counting towards quorum and receives no more of the log. The leader
// refuses to remove itself.
func (c *Client) RemovePeer(ctx context.Context, id string) error {
	if err := events.ValidateID("server id", id); err != nil {
		return err
	}
	return c.do(ctx, "POST", "/v1/cluster/remove-peer", "", RemovePeer{ID: id}, &RemovedPeer{})
}

// RaftStatus returns the raft status of the first server that answers.
func (c *Client) RaftStatus(ctx context.Context) (*RaftStatus, error) {
	var out RaftStatus
	return &out, c.do(ctx, "GET", "/v1/internal/raft-status", "", nil, &out)
}
