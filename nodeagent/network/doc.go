// Package network owns a node's guest network: one Linux bridge per agent
// (corral0 by default) with the first address of its range as the
// guests' gateway, optionally an nftables table that masquerades the
// guests' traffic leaving by another interface (inet corral-nat-<bridge>,
// the agent's own), and the addresses it hands out from the range (a
// small deterministic IPAM: the first free address, kept in a file in the
// agent's state directory so a restarted agent gives each guest the
// address it had, released when the guest goes).
//
// It never touches an interface, table or address it did not make: a
// bridge that already exists is used as it is (its address added when
// missing) and left in place by [Bridge.Remove]; only one the agent made
// is deleted there. The guests' own interfaces (veth, tap) belong to
// package driver.
//
// Dependency rule: this package imports nothing of corral's; the agent
// (package nodeagent) owns and drives it. It must never import driver,
// coordinator/..., cgroupdriver, events or cmd.
package network
