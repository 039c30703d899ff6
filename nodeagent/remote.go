package nodeagent

import (
	"context"
	"errors"

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
	// Desired returns the node's desired state at some committed index.
	Desired(ctx context.Context, nodeID string) (Desired, error)
	// Report commits items as events, in order, and returns the index of
	// the last one committed. It fails with an error wrapping ErrRefused
	// when the coordinator refuses an item for good.
	Report(ctx context.Context, nodeID, secret string, items []Report) (index uint64, err error)
	// Heartbeat tells the coordinator's leader that the agent is alive and
	// returns the leader's committed index. It fails when the leader
	// cannot be reached: that is what fences the node.
	Heartbeat(ctx context.Context, nodeID, secret string) (index uint64, err error)
}

// Notifier delivers committed events as NATS carries them: possibly
// dropped, duplicated or out of order, each with its dense log index.
type Notifier interface {
	// Watch calls fn for every event it receives until ctx is done or the
	// subscription breaks, and returns why it stopped. fn runs on Watch's
	// goroutine and returns quickly. The agent calls Watch again after
	// an error and treats that as a reconnect (it resyncs).
	Watch(ctx context.Context, fn func(e events.Event)) error
}

// Desired is a node's desired state at a committed index of the log: the
// guests placed on the node, nothing else.
type Desired struct {
	Index  uint64
	Guests []DesiredGuest
}

// DesiredGuest is one guest placed on the node, as the log has it.
type DesiredGuest struct {
	Name string
	// Generation is the index of the placement.
	Generation uint64
	// Desired is "running" or "stopped".
	Desired string
	// Status is what the log last heard: "placed", "running", "exited" or
	// "failed".
	Status     string
	Definition events.GuestDefined
	// Tuning maps a knob (events.KnobNames) to its canonical value, for
	// the knobs set away from their defaults.
	Tuning map[string]string
	// Paused asks for the running guest to be kept suspended (frozen).
	Paused bool
}

// Desired states and statuses of a [DesiredGuest], as the coordinator
// spells them.
const (
	DesiredRunning = "running"
	DesiredStopped = "stopped"

	StatusPlaced  = "placed"
	StatusRunning = "running"
	StatusExited  = "exited"
	StatusFailed  = "failed"
)

// Report is one item the agent asks the coordinator to commit: Payload
// becomes an event whose subject is Guest (empty for node-wide items such
// as usage and cleanup) and the reporting node.
type Report struct {
	Guest   string
	Payload events.Payload
}
