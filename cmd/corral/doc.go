// Command corral is corral's one binary: the coordinator server (corral
// server), the one-process development cluster (corral dev) and the client
// commands that talk to a server's HTTP API (guest, node, events, state,
// cluster, schedinfo, memtune). USAGE.md lists every command and flag.
//
// It only wires: configuration comes from flags into coordinator.Config,
// requests go through api.Client, values are validated with the
// events package's own checks. Nothing here decides cluster behaviour, and
// nothing imports this package. One file per command (dev.go, server.go,
// guest.go, …); app.go holds the command tree, error reporting and exit
// codes; output.go and describe.go the shared formatting.
//
// Exit codes: 0 on success, 1 for any error (usage, validation, API,
// unreachable server). Errors are one "corral: …" line on stderr, followed
// by the command's usage when the command line itself was wrong.
package main
