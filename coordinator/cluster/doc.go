// Package cluster is corral's state machine: the cluster as of an event
// index and everything decided from it, as pure functions over values.
//
// It owns the [State] and [State.Apply], which folds one committed event
// into it and re-checks what could have changed since the event was decided
// (state.go); the [Command] values, whose Decide validates an intent
// against the state and returns the events to propose, or refuses it with
// an error naming the problem (command.go; agents' reports and node secrets
// in agent.go); a node's desired state and what each event changes of it,
// which the server publishes as node updates (desired.go); and the seam to
// the scheduler: the state as the scheduler's view types, the work of one
// scheduling pass, and the re-check of a placement (schedule.go,
// explain.go); and the ACL state: tokens, custom policies, join tokens and
// enrollments, kept by secret hash only (acl.go).
//
// Nothing here does I/O, reads a clock or draws a random number: time and
// the actor come in as arguments, and the scheduler's seed is the state's
// index. The golden files in testdata/fsm pin what each event does.
//
// Dependency rule: it imports coordinator/acl (the capabilities and
// policies), coordinator/api (its records are the API's), events,
// scheduler and cgroupdriver of corral's. It must never import the
// server (coordinator), coordinator/bus, nodeagent/... or cmd, nor raft or
// NATS.
package cluster
