// Package acl is corral's authorization model: the capabilities a request
// may need, the policies that grant them (four built in, the rest defined
// by operators and kept in the log), the check of a token's policies
// against a capability, and the error that says which one was missing.
// It also makes and hashes token secrets.
//
// It holds no state: the tokens and custom policies live in the cluster
// state (coordinator/cluster), which decides and applies their events, and
// the server maps each request to the capability it needs. Everything here
// is pure except NewSecret and NewAccessor, which draw random numbers: the
// HTTP layer calls them before it submits a command, never the state
// machine.
//
// Dependency rule: it imports events alone of corral's, and no third-party
// module; never raft, NATS or any coordinator package, so the CLI, the
// state machine and the server can all import it.
package acl
