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
// With TLS (EmbeddedConfig.TLS, WithTLS) the bus is closed to anyone
// without a certificate of the cluster's CA, and what a connection may do
// follows from the identity its certificate names (auth.go): a server
// publishes and subscribes to everything; node n publishes only its
// heartbeats on corral.heartbeat.n and replies to requests it received,
// and subscribes only to corral.node.n, corral.logs.n and its inbox
// _INBOX_n.>; an operator's client certificate is refused, since
// operators read events over the HTTP API with an ACL token. Routes
// between servers speak TLS both ways and join servers only. Without TLS
// the bus is open, for tests and simulations.
//
// Dependency rule: it imports events and coordinator/pki of corral's and
// nothing else of ours: never coordinator, coordinator/api,
// coordinator/cluster, nodeagent/... or cmd, nor raft. No other package
// imports nats.go or nats-server.
package bus
