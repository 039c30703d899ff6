// Package pki is corral's cluster certificate authority: it creates the CA
// and the certificates of servers, nodes and clients, says which identity
// a certificate names (the role and the name in its corral:// URI), and
// builds the TLS configurations every listener and dialer of corral uses,
// so that what a peer may do follows from the certificate it proved, never
// from a header it sent.
//
// Dependency rule: it imports the standard library only, nothing of ours
// and no third-party module, so the CLI, the agent, the bus and the server
// can all import it.
package pki
