// Package nodeagent makes one host match the event log: it runs the guests
// the log places on its node, stops and removes those it no longer
// assigns, applies their tuning, and reports back (started, exited, usage,
// limit hits, drift, cleanup) as events.
//
// The agent is level-triggered. Every notification that may concern its
// node, every gap in the event stream, every reconnect and every
// [Config.ResyncInterval] makes it fetch its node's desired state (list,
// then watch: DESIGN invariant 1), compare it with what runs on the host
// through the pure [Reconcile], and hand the resulting [Action] values to a
// thin actuator. Actions are keyed by guest and generation (invariant 5),
// so a duplicate or late notification changes nothing.
//
// It owns, on its host, everything below its state directory (a secret,
// and one directory per guest, <StateDir>/guests/<id>, which is the
// guest's driver state directory) and, through [cgroupdriver], everything
// below its corral cgroup root (invariant 7). After a restart it adopts
// the guests still running from their driver records and never starts a
// second copy; an agent that cannot reach the coordinator for longer than
// [Config.FenceTimeout] freezes its guests (invariant 6) and, back in
// touch, thaws those still assigned to it and destroys the rest.
//
// The coordinator is reached through the small [Coordinator] and [Notifier]
// interfaces declared here; the adapter over the coordinator's HTTP API and
// NATS lives next to them and is wired by cmd.
//
// Dependency rule: this package imports cgroupdriver, driver and events. It
// must never import scheduler or cmd, and only the adapter may import
// coordinator or natsbus. Linux only.
package nodeagent
