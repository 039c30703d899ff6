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
// what lies outside the processes ([Host], [Bus], [Net]) and the
// hooks faults are injected through ([Fault], [Net.SetRefuse]). It may
// import any package of corral but cmd, and nothing imports it but tests.
package simtest
