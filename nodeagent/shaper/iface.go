package shaper

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// A guest with its own host-side interface (the veth or tap the agent put
// on its node's bridge) is shaped there rather than by cgroup: its
// traffic never passes the host's output and input hooks as a local
// socket's would. What the host sends out of that interface is what the
// guest receives, so the guest's inbound rate is the interface's egress,
// which HTB shapes exactly: a root qdisc 1: whose default class 1:1 has
// the inbound average as its rate, the peak as its ceil. The guest's
// outbound traffic is the interface's ingress, which cannot be shaped
// (only policed, with tc's police action or nft's netdev hook); it is
// not limited there yet.

// InterfacePlan returns the tc command lines that shape the egress of
// iface (a guest's inbound) to in, given whether the interface has the
// shaper's HTB root now; with in zero they remove it. It is pure.
func InterfacePlan(iface string, shaped bool, in Rate) [][]string {
	if in.IsZero() {
		if !shaped {
			return nil
		}
		return [][]string{{"qdisc", "del", "dev", iface, "root", "handle", "1:"}}
	}
	var p [][]string
	if !shaped {
		p = append(p, []string{"qdisc", "replace", "dev", iface, "root", "handle", "1:", "htb", "default", "1"})
	}
	c := []string{"class", "replace", "dev", iface, "parent", "1:", "classid", "1:1", "htb",
		"rate", bits(in.Average * 1024 * 8), "ceil", bits(max(in.Peak, in.Average) * 1024 * 8)}
	if in.Burst > 0 {
		c = append(c, "burst", strconv.FormatUint(in.Burst*1024, 10))
	}
	return append(p, c)
}

// ShapeInterface makes iface's egress match in (see [InterfacePlan]).
func ShapeInterface(ctx context.Context, run Runner, iface string, in Rate) error {
	if in.Peak != 0 && in.Peak < in.Average {
		return fmt.Errorf("%w: %s: inbound peak %d KiB/s is below the average %d KiB/s: give a peak of at least the average, or none", ErrBadGuest, iface, in.Peak, in.Average)
	}
	q, err := run.Run(ctx, "", "tc", "qdisc", "show", "dev", iface, "root")
	if err != nil {
		return fmt.Errorf("corral: reading the root qdisc of the guest interface %s: %w", iface, err)
	}
	for _, c := range InterfacePlan(iface, htbRoot.MatchString(q), in) {
		if _, err := run.Run(ctx, "", "tc", c...); err != nil {
			return fmt.Errorf("corral: shaping the guest interface %s (%s): %w", iface, strings.Join(c, " "), err)
		}
	}
	return nil
}
