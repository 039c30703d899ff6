// Package simtest is the whole corral cluster in one process,
// deterministic, with faults: coordinator servers with their real state
// machine, event store and HTTP API on raft's in-memory transport and
// stores; node agents with their real reconcile loop on simulated hosts
// (control groups and guests in memory); and, between them, an in-memory
// bus and HTTP network that the test controls. Runs are driven by a seed
// and, under [Run], by testing/synctest's simulated clock, so a run does
// not depend on the machine's speed and a seed replays it.
//
// simtest owns the harness ([Cluster], [Server], [Agent]), the fakes of
// what lies outside the processes ([Host], [Bus], [Net], [Disk]) and the
// hooks faults are injected through ([Fault], [Chaos], [Net.SetRefuse],
// [Bus.SetCut], [Cluster.Partition], [Cluster.Isolate], [Disk.SetFailing],
// a host's fencing lease [Host.RenewLease]).
//
// On top of them: [Schedule] draws a schedule of client operations and
// faults from a seed (crashes and restarts of servers and agents,
// partitions between servers and between agents and servers, long
// pauses, failing raft log writes, a bus that drops, duplicates, delays
// and reorders); [Nemesis] runs one against a cluster; [Checker] checks
// the invariants of DESIGN.md while it runs (logs dense and identical,
// at most one running copy of a guest at every instant, consistent reads
// that reflect every acknowledged write) and at the end (no acknowledged
// event lost, hosts converged to the log, nothing orphaned). TestFaults
// runs a fixed set of seeds; a failing seed prints the command that
// replays it.
//
// It may import any package of corral but cmd, and nothing imports it
// but tests.
package simtest
