package main

import (
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/network"
)

// networkOptions are the guest-network flags of corral agent and of the
// local agent of corral dev.
type networkOptions struct {
	bridge string
	cidr   string
	nat    bool
}

func (o *networkOptions) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.bridge, "bridge", "", `bridge the guests created with --network bridge get an interface on (made when the first such guest starts, with the range's first address); "" for no guest networking`)
	f.StringVar(&o.cidr, "bridge-cidr", network.DefaultCIDR.String(), "IPv4 range of the bridge: the first address is the guests' gateway, the others are handed out to guests, first free first")
	f.BoolVar(&o.nat, "bridge-nat", false, "masquerade the guests' traffic that leaves the host by another interface (an nftables table of the agent's own, inet corral-nat-BRIDGE) and turn on IPv4 forwarding")
}

// config is the agent's network.Config.
func (o *networkOptions) config() (network.Config, error) {
	if o.bridge == "" {
		return network.Config{}, nil
	}
	cidr, err := netip.ParsePrefix(o.cidr)
	if err != nil {
		return network.Config{}, usagef("--bridge-cidr %q is not a network such as %s: %v", o.cidr, network.DefaultCIDR, err)
	}
	c := network.Config{Bridge: o.bridge, CIDR: cidr, NAT: o.nat}
	return c, c.Validate()
}

// printNetwork adds the guest's network to guest show.
func printNetwork(t *table, g *api.Guest) {
	switch {
	case g.Network != events.NetworkBridge && g.Driver == events.DriverProcess:
		t.row("Network:", "the host's")
	case g.Network != events.NetworkBridge && g.Driver == events.DriverQEMU:
		t.row("Network:", "none (no NIC)")
	case g.Network != events.NetworkBridge:
		t.row("Network:", "none (lo only)")
	case len(g.Addresses) == 0:
		t.row("Network:", "bridge (address given when it starts on its node)")
	default:
		t.row("Network:", "bridge "+strings.Join(g.Addresses, ",")+" mac "+g.MAC+" host interface "+g.Interface)
	}
}
