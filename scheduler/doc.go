// Package scheduler decides where guests run. It owns the placement
// decision and nothing else: feasibility (node up and eligible, driver
// present, memory and CPU capacity after the host reserve and the overcommit
// ratio, exclusive cpusets, label constraints, anti-affinity by a spread-by
// label) and ranking (bin-pack by default, spread when configured).
//
// Everything here is a pure function over values. [Schedule] takes a
// read-only [Snapshot], the pending guests, a [Config], the time and a seed,
// and returns a [Plan]: it does no I/O, reads no clock, draws randomness only
// from the seed and keeps no state between calls, so the same inputs always
// give the same plan. The leader turns a plan into placement events; as each
// one is applied, the state machine (coordinator/cluster) calls
// [CheckPlacement] against the state it holds then, which is what guarantees
// that two plans computed from the same snapshot can never over-commit a
// node or hand one CPU to two guests.
//
// Unplaceable guests come back as a [Failure] with one [NodeReason] per node
// ("node n2: needs 2048 MiB memory, 512 MiB free"), which is what
// `corral guest show` prints.
//
// A Snapshot never changes after NewSnapshot, so any number of Schedule and
// CheckPlacement calls may read one concurrently. Test fixtures (node and
// guest builders, Commit, which applies a plan the way the FSM would) live
// in package schedulertest.
//
// Dependency rule: this package imports only the standard library. It must
// never import anything of corral's (not events, not coordinator/...), nor
// raft or NATS: it defines its own view types ([Node], [Allocation],
// [Guest]) and coordinator/cluster converts its state into them. That keeps
// the decision logic testable without a cluster and keeps the dependency
// direction inward. schedulertest imports this package alone.
package scheduler
