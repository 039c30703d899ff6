// Package coordinator is corral's server: one member of the replicated
// control plane. It owns the raft adapter (fsm.go: proposals, applying
// committed entries to the state, snapshots), the leader's group commit
// (propose.go: proposals that arrive together share one entry), the
// server's configuration,
// collaborators and life cycle (server.go), the per-server event store that
// keeps committed events independently of raft's compaction (store.go),
// submitting commands and the leader's loops that schedule, publish
// committed events and node updates on the bus and trim the store
// (leader.go), the HTTP handlers (http.go, http_sched.go), the web page
// embedded from webui/ and its token-only read routes (http_ui.go), the agents'
// reports, desired state and heartbeats (agent.go) and the proxy for
// guests' output logs (logs.go). Test helpers live in testing.go.
//
// What the server runs is not here: the pure state machine and the commands
// live in coordinator/cluster, the wire types, error codes and Go client in
// coordinator/api, the NATS bus in coordinator/bus.
//
// Invariants kept here: the raft log is the only source of
// truth; a command is validated (cluster.Command.Decide) before it is
// proposed and nothing is appended when it is refused; publishing and
// scheduling happen after commit, driven by the committed index; event
// indexes are dense and the same on every server.
//
// Raft between servers runs over a mutual-TLS transport (transport.go); a
// server joins as a non-voter and is promoted once it has caught up, and an
// operator removes a dead one (membership.go).
//
// Who may call what is decided in one place, auth.go: every route names the
// capability or the certificate it needs, the caller is the identity its
// TLS certificate proves plus the ACL token it sends, and refusals are
// logged and counted.
//
// Dependency rule: it imports coordinator/acl, coordinator/api,
// coordinator/cluster, coordinator/bus, coordinator/pki, events and
// scheduler of corral's, and it alone imports
// raft, raft-boltdb and bbolt. It must never import nodeagent/..., cmd or the
// test-support packages, nor nats.go or nats-server (only through the bus).
package coordinator
