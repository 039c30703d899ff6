package cluster

import (
	"fmt"

	"github.com/corral-dev/corral/events"
)

// checkShaping refuses bandwidth (domiftune) for a guest whose node cannot
// shape: its agent shapes no interface, or its host lacks nft or tc. A
// guest not placed yet is checked when it is placed on a node (the agent
// reports a value it cannot apply as guest.tuning_failed).
func (s *State) checkShaping(g *Guest, set map[string]string) error {
	limits := false
	for k, v := range set {
		if events.IsBandwidthKnob(k) && v != "0" {
			limits = true
		}
	}
	if !limits || g.Node == "" {
		return nil
	}
	n, ok := s.Nodes[g.Node]
	if !ok {
		return nil
	}
	if n.Shaping != "" {
		return fmt.Errorf("%w: node %s cannot shape guest %s's traffic: %s", events.ErrInvalid, n.ID, g.Name, n.Shaping)
	}
	if g.Network == events.NetworkBridge && n.Bridge != "" {
		return nil // shaped on its own host-side interface
	}
	if len(n.ShapeInterfaces) == 0 {
		return fmt.Errorf("%w: node %s shapes no network interface, so guest %s's bandwidth cannot be limited there: start its agent with --shape-interface IFACE (the interface the guests' traffic leaves by)",
			events.ErrInvalid, n.ID, g.Name)
	}
	return nil
}
