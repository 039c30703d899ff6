// Package api is corral's wire API: the request and response types of the
// coordinator's HTTP API and of the messages on the bus, the stable error
// codes and the sentinel errors they map to, and the Go client. The CLI
// and the node agent import it; neither imports the server.
//
// Dependency rule: it imports events and cgroupdriver (whose Resources is
// the desired guest's resource type) of corral's, and nothing else: never
// coordinator, coordinator/cluster, coordinator/bus, scheduler, nodeagent
// or cmd, and no raft or NATS module.
package api
