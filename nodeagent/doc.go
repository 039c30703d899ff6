// Package nodeagent makes one host match the event log: it runs the guests
// the log places on its node, stops and removes those it no longer
// assigns, applies their tuning, and reports back (started, exited, usage,
// limit hits, drift, cleanup) as events.
//
// The agent follows its node's desired state by list, then watch (DESIGN
// invariant 1): it subscribes to its node's updates on the bus, lists the
// desired state at start, on every (re)subscription and whenever an update
// is missing (a gap in the updates' previous indexes, or a heartbeat that
// names a node index no update brought), and folds every other update in
// with the pure [Fold]. Each change, and every [Config.ResyncInterval], makes
// a pass: the pure [Reconcile] compares the desired state with what runs on
// the host and a thin actuator performs the resulting [Action] values. A
// pass following one that acted also searches the host for orphans, as the
// first does (a pass brought by an update does not, so that a start does
// not wait for the search); at rest that search runs every
// [Config.OrphanInterval]. Drift is checked in the usage pass, every
// [Config.UsageInterval], from one pass over the guests that reads their
// counters and their managed knobs. Actions are keyed by guest and generation
// (invariant 5), so a duplicate or late update changes nothing.
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
// Fencing does not depend on the agent being alive: with
// [Config.Fencer] set, the agent starts a fencer, a small process of its
// own binary in a session of its own ([RunFencerIfRequested], fencer.go),
// and renews a lease after every heartbeat that succeeded. When the lease
// runs out (agent cut off, stopped, or dead) the fencer freezes the kind
// directories of the freezer hierarchy, and with them every guest; it
// never thaws. An agent acts on guests only while a fencer runs and the
// lease does; finding the fence up, it freezes each guest on its own,
// takes the fence down and lists its desired state again, so that only
// its next pass thaws what the log still assigns here, after destroying
// what it moved away (fenceguard.go). The coordinator places a lost
// node's guests elsewhere only after its node-down timeout, which must
// exceed the fence timeout by two heartbeats and [MaxFencerPoll].
//
// A guest with a restart policy is restarted in place when its run ends
// (restart.go): the pure [DecideRestart] says whether, after which delay,
// or that the node's attempts are used up; the report of the exit carries
// guest.restarting or guest.restarts_exhausted, and the restarted run,
// the generation's next, starts once a timer of the loop says its delay
// passed. The cluster, not the agent, reschedules.
//
// Its Prometheus metrics (metrics.go, [Agent.MetricsHandler]) count what
// the loop did and export each running guest's counters as the last usage
// report read them: a scrape reads no cgroup file.
//
// Its collaborators are small interfaces declared here: [Cgroups], [Drivers]
// and [Instance] for the host (deps.go; the real ones are
// *cgroupdriver.Driver and, through [HostDrivers], package driver), and
// [Coordinator], [Notifier] and [LogServer] for the cluster (coordinator.go,
// logs.go). [Remote] implements the last three over the coordinator's HTTP
// API (api.Client) and the bus (bus.Conn): remote.go. cmd wires the real
// ones.
//
// With Config.GroupPID the agent moves that process into
// <partition>/corral/agent at start and caps the corral root, which holds
// it and every guest, with the reserve (cgroupdriver.ReservationFor), as
// the seed puts libvirtd in its reserved group; its fencer inherits the
// group and is never frozen with the guests.
//
// Dependency rule: this package imports coordinator/api, coordinator/bus,
// cgroupdriver, events, nodeagent/driver and nodeagent/shaper of corral's. It must never
// import the server (coordinator), coordinator/cluster, scheduler, raft
// (github.com/hashicorp/raft, raft-boltdb, go.etcd.io/bbolt), cmd or the
// test-support packages. Linux only.
package nodeagent
