package shaper

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrBadGuest wraps every refusal of a [Guest] by [Decide].
var ErrBadGuest = errors.New("corral: guest cannot be shaped")

// DefaultClass is the HTB class of unclassified traffic, 1:ffff.
const DefaultClass = 0xffff

// MinClass is the lowest HTB class minor a guest may have; lower ones are
// kept for the shaper.
const MinClass = 0x10

// Rate is one direction's bandwidth in virsh's units: Average and Peak in
// KiB/s, Burst in KiB. Average 0 means the direction is not limited.
type Rate struct {
	Average, Peak, Burst uint64
}

// IsZero reports whether r limits nothing.
func (r Rate) IsZero() bool { return r.Average == 0 }

// Guest is one guest to shape.
type Guest struct {
	// Name identifies the guest in rule comments.
	Name string
	// Class is the guest's HTB class minor (1:Class), from MinClass to
	// 0xfffe, unique on the host.
	Class uint16
	// ClassID is the guest's net_cls classid (cgroup v1); Cgroup2 its
	// group's path relative to /sys/fs/cgroup and Level that group's depth
	// below the cgroup v2 root (cgroup v2). Exactly one is set.
	ClassID uint32
	Cgroup2 string
	Level   int
	// Outbound is shaped (HTB), Inbound policed (nft limit).
	Outbound, Inbound Rate
}

// match is the nft expression that selects g's packets.
func (g Guest) match() string {
	if g.Cgroup2 != "" {
		return fmt.Sprintf("socket cgroupv2 level %d %s", g.Level, strconv.Quote(g.Cgroup2))
	}
	return fmt.Sprintf("meta cgroup 0x%08x", g.ClassID)
}

// Interface is one interface the shaper shapes, as the host has it now.
type Interface struct {
	Name string
	// LineRate is the default class's rate, in bits per second.
	LineRate uint64
	// Shaped is set when the interface's root qdisc is the shaper's (HTB
	// 1:); Classes are that qdisc's class minors.
	Shaped  bool
	Classes []uint16
}

// Plan is what applying a set of guests does: one nft script, run with
// nft -f - (atomically: one transaction), then tc command
// lines (arguments after "tc"), in order.
type Plan struct {
	Nft string
	TC  [][]string
}

// Decide returns the plan that makes table and ifaces shape guests, where
// limits are the names of the limit objects table has now. It is pure.
// Guests are checked first: a guest that names no cgroup, or both, a
// class out of range or twice, or a peak below its average is refused
// and nothing is planned. With no guest to shape, the plan removes the
// table and the interfaces' root qdiscs, as [RemovePlan] does.
//
// The table is kept, its chains flushed and their rules made again, so
// a rule changed by hand is put back. The inbound policers are named
// limit objects that are kept too: nft's byte limit starts with a full
// bucket of one second at the rate plus the burst, so a policer made
// again on every resync would let that much through each time (measured:
// 4.8× the rate with one every 200 ms). An object's name carries its
// rate and burst, because nft cannot change a limit in place; a changed
// limit is a new object and the old one is deleted.
func Decide(table string, ifaces []Interface, limits []string, guests []Guest) (Plan, error) {
	if err := check(guests); err != nil {
		return Plan{}, err
	}
	guests = slices.Clone(guests)
	slices.SortFunc(guests, func(a, b Guest) int { return int(a.Class) - int(b.Class) })
	if len(guests) == 0 {
		return RemovePlan(table, ifaces), nil
	}
	var p Plan
	var b strings.Builder
	// The script is one transaction, so no packet sees a chain flushed
	// and not yet filled. Adding what exists already changes nothing.
	fmt.Fprintf(&b, "table inet %s {\n", table)
	b.WriteString("\tchain output {\n\t\ttype filter hook output priority 0; policy accept;\n\t}\n")
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n")
	keep := map[string]bool{}
	for _, g := range guests {
		if in := g.Inbound; !in.IsZero() {
			name := limitName(g.Class, in)
			keep[name] = true
			fmt.Fprintf(&b, "\tlimit %s {\n\t\trate over %d kbytes/second burst %d kbytes\n\t}\n", name, in.Average, inboundBurst(in))
		}
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "flush chain inet %s output\nflush chain inet %s input\n", table, table)
	for _, g := range guests {
		if !g.Outbound.IsZero() {
			fmt.Fprintf(&b, "add rule inet %s output %s meta priority set 1:%x comment %s\n", table, g.match(), g.Class, strconv.Quote("guest "+g.Name))
		}
	}
	for _, g := range guests {
		if in := g.Inbound; !in.IsZero() {
			fmt.Fprintf(&b, "add rule inet %s input %s limit name %s drop comment %s\n",
				table, g.match(), strconv.Quote(limitName(g.Class, in)), strconv.Quote("guest "+g.Name))
		}
	}
	for _, l := range slices.Sorted(slices.Values(limits)) {
		if !keep[l] {
			fmt.Fprintf(&b, "delete limit inet %s %s\n", table, l)
		}
	}
	p.Nft = b.String()

	for _, ifc := range ifaces {
		dev := ifc.Name
		if !ifc.Shaped {
			// HTB cannot be changed in place, and need not be: an
			// interface that has it keeps it and its classes change.
			p.TC = append(p.TC, []string{"qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", fmt.Sprintf("%x", DefaultClass)})
		}
		p.TC = append(p.TC,
			[]string{"class", "replace", "dev", dev, "parent", "1:", "classid", fmt.Sprintf("1:%x", DefaultClass), "htb",
				"rate", bits(ifc.LineRate), "ceil", bits(ifc.LineRate)})
		want := map[uint16]bool{DefaultClass: true}
		for _, g := range guests {
			out := g.Outbound
			if out.IsZero() {
				continue
			}
			want[g.Class] = true
			ceil := max(out.Peak, out.Average)
			c := []string{"class", "replace", "dev", dev, "parent", "1:", "classid", fmt.Sprintf("1:%x", g.Class), "htb",
				"rate", bits(out.Average * 1024 * 8), "ceil", bits(ceil * 1024 * 8)}
			if out.Burst > 0 {
				c = append(c, "burst", strconv.FormatUint(out.Burst*1024, 10))
			}
			p.TC = append(p.TC, c)
		}
		for _, c := range slices.Sorted(slices.Values(ifc.Classes)) {
			if !want[c] {
				p.TC = append(p.TC, []string{"class", "del", "dev", dev, "classid", fmt.Sprintf("1:%x", c)})
			}
		}
	}
	return p, nil
}

// RemovePlan returns the plan that takes away table and the shaper's root
// qdisc of every interface that has one (the kernel's default comes back).
func RemovePlan(table string, ifaces []Interface) Plan {
	p := Plan{Nft: fmt.Sprintf("table inet %s\ndelete table inet %s\n", table, table)}
	for _, ifc := range ifaces {
		if ifc.Shaped {
			p.TC = append(p.TC, []string{"qdisc", "del", "dev", ifc.Name, "root", "handle", "1:"})
		}
	}
	return p
}

// limitName is the name of the limit object that polices class's
// inbound traffic at r.
func limitName(class uint16, r Rate) string {
	return fmt.Sprintf("in_%x_%d_%d", class, r.Average, inboundBurst(r))
}

// inboundBurst is the policer's burst in KiB: the guest's, else one
// second at the average rate, as libvirt defaults it.
func inboundBurst(r Rate) uint64 {
	if r.Burst > 0 {
		return r.Burst
	}
	return r.Average
}

func bits(n uint64) string { return strconv.FormatUint(n, 10) + "bit" }

func check(guests []Guest) error {
	var errs []error
	bad := func(g Guest, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrBadGuest, g.Name, fmt.Sprintf(format, args...)))
	}
	seen := map[uint16]string{}
	for _, g := range guests {
		switch {
		case (g.ClassID == 0) == (g.Cgroup2 == ""):
			bad(g, "name either its net_cls classid (cgroup v1) or its cgroup v2 path")
		case g.Cgroup2 != "" && (g.Level < 1 || strings.ContainsAny(g.Cgroup2, "\"\n")):
			bad(g, "cgroup v2 path %q at level %d is not a group below the root", g.Cgroup2, g.Level)
		case g.Class < MinClass || g.Class == DefaultClass:
			bad(g, "HTB class 1:%x is out of range 1:%x to 1:%x", g.Class, MinClass, DefaultClass-1)
		case seen[g.Class] != "":
			bad(g, "HTB class 1:%x is also guest %s's", g.Class, seen[g.Class])
		}
		seen[g.Class] = g.Name
		for _, d := range []struct {
			dir string
			r   Rate
		}{{"outbound", g.Outbound}, {"inbound", g.Inbound}} {
			dir, r := d.dir, d.r
			if r.IsZero() && (r.Peak != 0 || r.Burst != 0) {
				bad(g, "%s peak or burst without an average: give the average first", dir)
			}
			if r.Peak != 0 && r.Peak < r.Average {
				bad(g, "%s peak %d KiB/s is below the average %d KiB/s: give a peak of at least the average, or none", dir, r.Peak, r.Average)
			}
		}
	}
	return errors.Join(errs...)
}
