// Package coordinator is corral's replicated control plane: a state machine
// over the event log (state.go, pure), the commands that are validated
// against that state and turned into events (command.go, pure), the raft
// plumbing that commits them (fsm.go, server.go), the per-server event store
// that keeps committed events independently of raft's compaction (store.go),
// and the HTTP API and its client (http.go, client.go).
//
// Invariants kept here (see DESIGN.md): the raft log is the only source of
// truth; State.Apply does no I/O, reads no clock and draws no random number;
// commands are validated before they become events and the state machine
// re-checks what could have changed since; event indexes are dense and the
// same on every server.
//
// It imports events, scheduler and natsbus of corral's; it must never import
// nodeagent or cgroupdriver.
package coordinator
