// Package bus is corral's delivery bus: it runs the embedded nats-server,
// connects to it or to an external NATS cluster, and names the subjects
// corral's messages travel on: every committed event by type (for
// auditors), each node's updates on its own subject, agents' heartbeats
// and guest log reads. It alone imports nats-server and nats.go.
//
// NATS is delivery, never truth: it may drop, duplicate or reorder. Every
// message carries its event index in the Corral-Index header so consumers
// can drop what they have applied and detect gaps; a node's updates also
// carry the index of the node's previous update (Corral-Prev).
//
// Dependency rule: it imports events of corral's and nothing else of ours:
// never coordinator, coordinator/api, coordinator/cluster, nodeagent/... or
// cmd, nor raft. No other package imports nats.go or nats-server.
package bus
