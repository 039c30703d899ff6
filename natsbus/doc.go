// Package natsbus is corral's delivery bus: it runs the embedded nats-server,
// connects to it or to an external NATS cluster, and names the subjects
// events travel on. It alone imports nats-server and nats.go.
//
// NATS is delivery, never truth: it may drop, duplicate or reorder. Every
// message carries its event index in the Corral-Index header so consumers
// can drop what they have applied and detect gaps.
//
// It imports events of corral's and nothing else of ours.
package natsbus
