package nodeagent

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/network"
	"github.com/corral-dev/corral/nodeagent/shaper"
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

// shapeOwnInterface shapes the inbound traffic of a guest on the bridge
// on the egress of its host-side interface (HTB, see
// [shaper.ShapeInterface]), on a full pass or when its bandwidth
// changed. Its outbound traffic enters the host there and cannot be
// shaped; an outbound limit is refused so.
func (a *Agent) shapeOwnInterface(ctx context.Context, g *guest, b *api.Bandwidth, full bool) error {
	st := &a.shaping
	if st.ifaces == nil {
		st.ifaces = map[string]string{}
	}
	var in, out shaper.Rate
	if b != nil {
		in = shaper.Rate{Average: b.Inbound.Average, Peak: b.Inbound.Peak, Burst: b.Inbound.Burst}
		out = shaper.Rate{Average: b.Outbound.Average, Peak: b.Outbound.Peak, Burst: b.Outbound.Burst}
	}
	key := fmt.Sprintf("%s %+v", g.net.HostIf, in)
	if full || st.ifaces[g.name] != key {
		if err := shaper.ShapeInterface(ctx, shaper.ExecRunner{}, g.net.HostIf, in); err != nil {
			delete(st.ifaces, g.name)
			return err
		}
		st.ifaces[g.name] = key
	}
	if !out.IsZero() {
		return fmt.Errorf("corral: guest %s is on the bridge, where its outbound traffic enters the host by its interface %s and cannot be shaped (only its inbound is): set only --inbound, or recreate it with --network none and shape by --shape-interface", g.name, g.net.HostIf)
	}
	return nil
}
