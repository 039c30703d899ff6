// Command corral is corral's one binary: the coordinator server (corral
// server), the node agent (corral agent), the one-process development
// cluster (corral dev: a server, embedded NATS and, where the host allows,
// a local agent), the client commands that talk to a server's HTTP API
// (guest, node, events, state, cluster, operator, schedinfo, memtune, acl)
// and tls, which makes the cluster's CA and certificates offline.
// corral --help lists the commands, and each command's --help its flags.
//
// It only wires: configuration comes from flags into coordinator.Config and
// nodeagent.Config, the agent gets its cgroup driver, guest drivers and a
// nodeagent.Remote over api.Client and a bus connection, requests go
// through api.Client, and values are validated with the checks the server
// runs (the events package's, and coordinator/cluster's for a guest's
// definition). Nothing here decides cluster behaviour, and nothing imports
// this package. One file per command (dev.go, server.go, agent.go,
// guest.go, …); app.go holds the command tree, error reporting and exit
// codes and where a client finds its certificate and token (flags, then
// the environment, then corral dev's data directory); daemon.go what the
// server commands share; devcluster.go corral dev --servers N;
// configfile.go the daemons' --config files, which mirror their flags;
// secflags.go the servers' TLS and limit flags;
// migrate_flags.go corral agent's live-migration flags; enroll.go an agent's
// certificate from a join token; guest_import.go corral guest import,
// whose mapping of a libvirt domain is the pure package
// cmd/corral/domainxml; devauth.go corral
// dev's own management token; output.go and describe.go the shared
// formatting.
//
// Exit codes: 0 on success, 1 for any error (usage, validation, API,
// unreachable server). Errors are one "corral: …" line on stderr, followed
// by the command's usage when the command line itself was wrong.
//
// Dependency rule: it may import every package of corral's except the
// test-support packages (schedulertest, cgrouptest, drivertest) and
// simtest. It reaches raft only through coordinator and NATS only through
// coordinator/bus, never importing them itself. imports_test.go enforces
// every package's import rule and the repository's top-level layout.
package main
