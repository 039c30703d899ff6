package nodeagent

import (
	"context"
	"errors"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// ErrRefused is what a [Coordinator] wraps when the coordinator refused a
// report for good (it is about a placement that changed meanwhile, say):
// the agent drops it instead of sending it again. Any other error is taken
// as transient and the report is retried on a later pass.
var ErrRefused = errors.New("corral: report refused by the coordinator")

// Coordinator is the agent's view of the coordinator. Its methods are
// called from the agent's goroutines, possibly concurrently (the heartbeat
// runs on its own), and must honour ctx.
type Coordinator interface {
	// Register records the node (node.registered) with the secret its
	// later calls prove themselves with.
	Register(ctx context.Context, node events.NodeRegistered, secret string) error
	// Desired lists the node's desired state at some committed index.
	Desired(ctx context.Context, nodeID string) (Desired, error)
	// Report commits items as events, in order, and returns the index of
	// the last one committed. It fails with an error wrapping ErrRefused
	// when the coordinator refuses an item for good.
	Report(ctx context.Context, nodeID, secret string, items []Report) (index uint64, err error)
	// Heartbeat tells the coordinator's leader that the agent is alive. It
	// returns the index of the last event that concerned the node, and
	// fails when the leader cannot be reached: that is what fences the
	// node.
	Heartbeat(ctx context.Context, nodeID, secret string) (nodeIndex uint64, err error)
}

// Notifier delivers the node's updates as the bus carries them: possibly
// dropped, duplicated or out of order, each with its log index and the
// index of the node's previous update.
type Notifier interface {
	// Watch calls ready once the subscription to nodeID's updates is in
	// place, then fn for every update it receives, until ctx is done or
	// the subscription breaks, and returns why it stopped. fn runs on
	// Watch's goroutine and returns quickly. The agent calls Watch again
	// after an error and lists its desired state again.
	Watch(ctx context.Context, nodeID string, ready func(), fn func(api.NodeUpdate)) error
}

// Desired is a node's desired state at a committed index of the log: the
// guests placed on the node, nothing else.
type Desired struct {
	Index  uint64
	Guests []DesiredGuest
	// NodeDown is set while the log has the node declared down: its
	// guests may be placed elsewhere at any moment, so the agent starts
	// and thaws nothing until the log has it up again (invariant 6).
	NodeDown bool
	// Partitions are the cluster's partitions, which every node holds.
	Partitions []api.DesiredPartition
}

// DesiredGuest is one guest placed on the node, as the API carries it:
// its definition, generation, desired state, and its groups' settings as
// the cgroup driver's own type.
type DesiredGuest = api.DesiredGuest

// Desired states and statuses of a [DesiredGuest], as the API spells them.
const (
	DesiredRunning = api.DesiredRunning
	DesiredStopped = api.DesiredStopped

	StatusPlaced  = api.StatusPlaced
	StatusRunning = api.StatusRunning
	StatusExited  = api.StatusExited
	StatusFailed  = api.StatusFailed
)

// Report is one item the agent asks the coordinator to commit: Payload
// becomes an event whose subject is Guest (empty for node-wide items such
// as usage and cleanup) and the reporting node.
type Report struct {
	Guest   string
	Payload events.Payload
}

// Fold applies one update to a desired state and returns the new one;
// ok is false when the update does not follow what d holds (its node's
// previous update is newer than d), and the node must list again. An
// update at or below d.Index is a duplicate or late: d comes back
// unchanged, ok true. Fold is pure; d is not modified.
func Fold(d Desired, u api.NodeUpdate) (Desired, bool) {
	if u.Index <= d.Index {
		return d, true
	}
	if u.Prev > d.Index {
		return d, false
	}
	out := Desired{Index: u.Index, NodeDown: d.NodeDown, Partitions: foldPartition(d.Partitions, u)}
	switch events.TypeOf(u.Event) {
	case events.TypeNodeDown:
		out.NodeDown = true
	case events.TypeNodeUp, events.TypeNodeRegistered:
		out.NodeDown = false
	}
	out.Guests = make([]DesiredGuest, 0, len(d.Guests)+1)
	name := u.Removed
	if u.Guest != nil {
		name = u.Guest.Name
	}
	placed := false
	for _, g := range d.Guests {
		if g.Name != name || name == "" {
			out.Guests = append(out.Guests, g)
			continue
		}
		if u.Guest != nil {
			out.Guests = append(out.Guests, *u.Guest)
			placed = true
		}
	}
	if u.Guest != nil && !placed {
		out.Guests = append(out.Guests, *u.Guest)
	}
	return out, true
}

// foldPartition returns ps with the update's partition replaced, added or
// removed; ps itself is not changed.
func foldPartition(ps []api.DesiredPartition, u api.NodeUpdate) []api.DesiredPartition {
	name := u.PartitionRemoved
	if u.Partition != nil {
		name = u.Partition.Name
	}
	if name == "" {
		return ps
	}
	out := make([]api.DesiredPartition, 0, len(ps)+1)
	for _, p := range ps {
		if p.Name != name {
			out = append(out, p)
		}
	}
	if u.Partition != nil {
		out = append(out, *u.Partition)
	}
	return out
}
