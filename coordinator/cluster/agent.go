package cluster

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// This file is the agents' side of the state: node secrets, and the
// reports that become events.

// SecretHash returns the hex SHA-256 of a node secret, as the log keeps it.
func SecretHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CheckSecret verifies that secret belongs to node n. Nodes registered
// without a secret (static nodes, with no agent) accept any report.
func CheckSecret(n *Node, secret string) error {
	if n.SecretHash == "" {
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(SecretHash(secret)), []byte(n.SecretHash)) != 1 {
		return fmt.Errorf("%w: the request for node %q does not carry that node's agent secret", api.ErrPermission, n.ID)
	}
	return nil
}

// agentReportable lists the event types an agent may report.
var agentReportable = map[events.Type]bool{
	events.TypeGuestStarted: true, events.TypeGuestExited: true, events.TypeNodeUsage: true,
	events.TypeGuestLimitHit: true, events.TypeGuestTuningApplied: true, events.TypeGuestDrift: true,
	events.TypeNodeCleanup: true, events.TypeGuestTuningFailed: true,
	events.TypeGuestBalloon: true, events.TypeGuestBalloonNoncompliant: true,
	events.TypeGuestRestarting: true, events.TypeGuestRestartsExhausted: true,
	events.TypeGuestMigrationTargetReady: true, events.TypeGuestMigrationProgress: true, events.TypeGuestMigrationSwitched: true,
	events.TypeGuestMigrated: true, events.TypeGuestMigrationAborted: true,
}

// AgentReport is a batch of reports from one node's agent. Each item is
// checked and committed on its own: a late report about an old generation
// is refused without losing the others.
type AgentReport struct {
	Node   string           `json:"-"`
	Secret string           `json:"-"`
	Items  []api.ReportItem `json:"items"`
}

func (c *AgentReport) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	n, err := s.node(c.Node)
	if err != nil {
		return nil, err
	}
	if err := CheckSecret(n, c.Secret); err != nil {
		return nil, err
	}
	if len(c.Items) == 0 {
		return nil, &events.FieldError{Field: "items", Value: "", Want: "report at least one item"}
	}
	out := make([]events.Event, 0, len(c.Items))
	for i, it := range c.Items {
		if !agentReportable[it.Type] {
			return nil, &events.FieldError{Field: fmt.Sprintf("items[%d].type", i), Value: it.Type.String(), Want: "an agent reports guest.started, guest.exited, node.usage, guest.limit_hit, guest.tuning_applied, guest.tuning_failed, guest.drift, guest.balloon, guest.balloon_noncompliant, guest.restarting, guest.restarts_exhausted, guest.migration_target_ready, guest.migration_progress, guest.migration_switched, guest.migrated, guest.migration_aborted or node.cleanup"}
		}
		p, _ := events.NewPayload(it.Type)
		if err := events.DecodeStrict(it.Payload, p); err != nil {
			return nil, fmt.Errorf("%w: items[%d] payload: %v", events.ErrInvalid, i, err)
		}
		if it.Guest != "" {
			if err := events.ValidateID("guest", it.Guest); err != nil {
				return nil, err
			}
		}
		if node, about := payloadNode(p); about && node != c.Node {
			return nil, &events.FieldError{Field: fmt.Sprintf("items[%d].node", i), Value: node, Want: "a node reports only about itself: " + c.Node}
		}
		out = append(out, subject(events.New(now, actor, p), it.Guest, c.Node))
	}
	return out, nil
}

// payloadNode returns the node a report about a guest names; about is
// false for node-wide reports, which name none.
func payloadNode(p events.Payload) (node string, about bool) {
	switch x := p.(type) {
	case *events.GuestStarted:
		return x.Node, true
	case *events.GuestExited:
		return x.Node, true
	case *events.GuestLimitHit:
		return x.Node, true
	case *events.GuestTuningApplied:
		return x.Node, true
	case *events.GuestTuningFailed:
		return x.Node, true
	case *events.GuestDrift:
		return x.Node, true
	case *events.GuestBalloon:
		return x.Node, true
	case *events.GuestBalloonNoncompliant:
		return x.Node, true
	case *events.GuestRestarting:
		return x.Node, true
	case *events.GuestRestartsExhausted:
		return x.Node, true
	case *events.GuestMigrationTargetReady:
		return x.Node, true
	case *events.GuestMigrationProgress:
		return x.Node, true
	case *events.GuestMigrationSwitched:
		return x.Node, true
	case *events.GuestMigrated:
		return x.Node, true
	case *events.GuestMigrationAborted:
		return x.Node, true
	}
	return "", false
}
