package nodeagent

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/network"
)

// Guest networking: a guest defined with --network bridge gets, at each
// start, its address from the node's IPAM (the one it had, else the first
// free), the bridge made if missing, and a [driver.Network] in its spec;
// the address goes into guest.started and is released when the guest
// leaves the node (destroy). The IPAM's file is <state>/network.json.

// guestNet is the node's guest network; nil without a bridge.
type guestNet struct {
	cfg    network.Config
	bridge *network.Bridge
	ipam   *network.IPAM
}

func newGuestNet(cfg Config) (*guestNet, error) {
	if cfg.Network.Bridge == "" {
		return nil, nil
	}
	ipam, err := network.OpenIPAM(cfg.Network.CIDR, cfg.StateDir+"/network.json")
	if err != nil {
		return nil, err
	}
	return &guestNet{cfg: cfg.Network, bridge: network.NewBridge(cfg.Network, cfg.StateDir), ipam: ipam}, nil
}

// networkFor returns the network of guest name as defined by def, nil
// for a guest without one.
func (a *Agent) networkFor(ctx context.Context, name string, def *events.GuestDefined) (*driver.Network, error) {
	if def.Network != events.NetworkBridge {
		return nil, nil
	}
	n := a.net
	if n == nil {
		return nil, fmt.Errorf("corral: guest %s asks for a network on the bridge, but node %s has none: start its agent with --bridge NAME (and --bridge-cidr), or recreate the guest with --network none", name, a.cfg.NodeID)
	}
	if err := n.bridge.Ensure(ctx); err != nil {
		return nil, err
	}
	addr, err := n.ipam.Allocate(name)
	if err != nil {
		return nil, err
	}
	return &driver.Network{
		Bridge: n.cfg.Bridge, HostIf: driver.HostInterface(n.cfg.Bridge, name), MAC: driver.MACFor(name),
		Address: addr, Gateway: n.cfg.Gateway().Addr(),
	}, nil
}

// releaseAddress frees the address of a guest that left the node.
func (a *Agent) releaseAddress(name string) {
	if a.net == nil {
		return
	}
	if err := a.net.ipam.Release(name); err != nil {
		a.log.Warn("releasing the guest's address", "guest", name, "err", err)
	}
}

// startedNetwork fills a guest.started report with the guest's network.
func startedNetwork(p *events.GuestStarted, n *driver.Network) {
	if n == nil {
		return
	}
	if n.Address.IsValid() {
		p.Addresses = []string{n.Address.String()}
	}
	p.MAC, p.Interface = n.MAC, n.HostIf
}

// adoptedNetwork is the network of a guest a previous agent started: its
// host-side interface from the driver's record, its address from the
// IPAM's file.
func (a *Agent) adoptedNetwork(name string, inst Instance) *driver.Network {
	h, ok := inst.(interface{ HostInterface() string })
	if a.net == nil || !ok || h.HostInterface() == "" {
		return nil
	}
	addr, held := a.net.ipam.Held()[name]
	if !held {
		return nil
	}
	return &driver.Network{Bridge: a.net.cfg.Bridge, HostIf: h.HostInterface(), MAC: driver.MACFor(name),
		Address: netip.PrefixFrom(addr, a.net.cfg.CIDR.Bits()), Gateway: a.net.cfg.Gateway().Addr()}
}
