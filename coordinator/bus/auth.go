package bus

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/corral-dev/corral/coordinator/pki"
	"github.com/corral-dev/corral/events"
)

// NodeInboxPrefix is the inbox node's agent receives replies to its
// requests on (_INBOX_<node>): the only inbox its certificate may
// subscribe to, so that no node reads another's heartbeat replies. Dial
// sets it from a node's certificate.
func NodeInboxPrefix(node string) string { return "_INBOX_" + node }

// replyWindow is how long a node may take to answer a request it received
// (a guest log read) before the server stops letting it publish the reply:
// well beyond any request's own timeout.
const replyWindow = time.Minute

// permissionsFor says what a client proving id may do on the bus, as
// nats-server permissions: nil (everything) for a server; for node n,
// publishing only its heartbeat requests on corral.heartbeat.n and replies
// to the requests it received, and subscribing only to its updates on
// corral.node.n, the log reads on corral.logs.n and its inbox. Anyone else
// is refused the connection, with the error saying why.
func permissionsFor(id pki.Identity) (*server.Permissions, error) {
	switch id.Role {
	case pki.RoleServer:
		return nil, nil
	case pki.RoleNode:
		// Subjects are built from the name, so it must be one token that
		// cannot reach into another node's subjects: a node ID, no dots.
		if err := events.ValidateID("node", id.Name); err != nil {
			return nil, fmt.Errorf("corral: the certificate of node %q cannot be used on the bus: %w", id.Name, err)
		}
		return &server.Permissions{
			Publish:  &server.SubjectPermission{Allow: []string{HeartbeatSubject(id.Name)}},
			Response: &server.ResponsePermission{MaxMsgs: 1, Expires: replyWindow},
			Subscribe: &server.SubjectPermission{Allow: []string{
				NodeSubject(id.Name), LogsSubject(id.Name), NodeInboxPrefix(id.Name) + ".>",
				ConsoleSubject(id.Name),
			}},
		}, nil
	case pki.RoleClient:
		// Operators' and programs' certificates open HTTPS connections,
		// where an ACL token says what they may do; the bus has no tokens,
		// so it would have to trust them with every event.
		return nil, fmt.Errorf("corral: %s is a client certificate, which the bus refuses: read events over the HTTP API (GET /v1/events) with an ACL token", id)
	default:
		return nil, fmt.Errorf("corral: %s has a role the bus does not know", id)
	}
}

// certAuth is nats-server's client authentication when the bus runs with
// TLS. The handshake has already verified the client's certificate against
// the CA (tls.RequireAndVerifyClientCert); Check reads the identity it
// names, refuses it or registers it as a user with permissionsFor's
// permissions. nats-server calls it on the connection's goroutine.
type certAuth struct{ log *slog.Logger }

// Check implements server.Authentication.
func (a certAuth) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	id, ok := pki.PeerIdentity(c.GetTLSConnectionState())
	if !ok {
		a.log.Warn("nats refused a client without a certificate of this cluster", "remote", c.RemoteAddress())
		return false
	}
	perms, err := permissionsFor(id)
	if err != nil {
		a.log.Warn("nats refused a client", "identity", id.String(), "remote", c.RemoteAddress(), "err", err)
		return false
	}
	c.RegisterUser(&server.User{Username: id.String(), Permissions: perms})
	return true
}

// routeAuth is nats-server's route authentication when the bus runs with
// TLS: a second check, after routeTLS's handshake, that an accepted route
// comes from a server.
type routeAuth struct{ log *slog.Logger }

// Check implements server.Authentication.
func (a routeAuth) Check(c server.ClientAuthentication) bool {
	id, ok := pki.PeerIdentity(c.GetTLSConnectionState())
	switch {
	case c.Kind() != server.ROUTER:
		return false
	case !ok:
		a.log.Warn("nats refused a route without a certificate of this cluster", "remote", c.RemoteAddress())
		return false
	case id.Role != pki.RoleServer:
		a.log.Warn("nats refused a route that is not from a server", "identity", id.String(), "remote", c.RemoteAddress())
		return false
	}
	return true
}

// routeTLS is the TLS of the cluster routes. nats-server uses one
// configuration both for the routes it accepts, as a TLS server, and for
// those it dials, as a TLS client, so it carries both sides: the server's
// certificate, presented either way; the CA, for verifying the peer either
// way; the name every server certificate carries, which a node's lacks,
// checked when dialling whatever address the route names; and the check
// that the peer's certificate names a server.
func routeTLS(l *pki.Loaded) (*tls.Config, error) {
	c, err := l.ListenConfig(tls.RequireAndVerifyClientCert, pki.RoleServer)
	if err != nil {
		return nil, err
	}
	c.RootCAs = l.Pool
	c.ServerName = pki.ServerName
	return c, nil
}
