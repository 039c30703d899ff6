package main

import (
	"fmt"
	"strings"

	"github.com/corral-dev/corral/events"
)

// printIsolation adds what keeps a container from its host to guest show:
// the capabilities it keeps (the default set and its definition's
// changes) and the rest of the fence, which every container gets.
func printIsolation(t *table, g *events.GuestDefined) {
	changes := "default"
	for _, c := range g.CapAdd {
		changes += " +" + c
	}
	for _, c := range g.CapDrop {
		changes += " -" + c
	}
	var keep []string
	for _, n := range events.ContainerCapabilities(g.CapAdd, g.CapDrop) {
		keep = append(keep, strings.ToLower(events.CapabilityName(n)))
	}
	if len(keep) == 0 {
		keep = []string{"none"}
	}
	t.row("Capabilities:", changes+": "+strings.Join(keep, ","))
	t.row("Isolation:", "cgroup, pid, mount, uts, ipc, net namespaces; private overlay layer; /proc/sys, /sys read-only; no_new_privs, seccomp")
	if len(g.IDMap) == 0 {
		t.row("User namespace:", "none (container root is host root, with the capabilities above)")
		return
	}
	root, _ := events.HostID(g.IDMap, 0)
	t.row("User namespace:", fmt.Sprintf("idmap %s (uid and gid; container root is host %d:%d, the capabilities above count only inside)",
		events.FormatIDMap(g.IDMap), root, root))
}
