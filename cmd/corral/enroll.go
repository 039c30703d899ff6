package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/pki"
)

// nodeCredentials returns the agent's node certificate: the one named by
// --tls-cert, else the one an earlier enrollment kept in the state
// directory, else a new one the servers sign for --join-token.
func (a *app) nodeCredentials(ctx context.Context, o agentOptions, addrs string, log *slog.Logger) (*pki.Loaded, error) {
	id := pki.Identity{Role: pki.RoleNode, Name: o.nodeID}
	if o.tls.CA == "" {
		return nil, errors.New("the agent needs the cluster CA's certificate: give --tls-ca")
	}
	files := o.tls
	if files.Cert == "" && files.Key == "" {
		dir := filepath.Join(o.stateDir, "tls")
		files.Cert, files.Key = pki.FileNames(dir, id)
		if _, err := os.Stat(files.Cert); errors.Is(err, os.ErrNotExist) {
			tok := o.joinToken
			if tok == "" {
				tok = a.getenv("CORRAL_JOIN_TOKEN")
			}
			if tok == "" {
				return nil, fmt.Errorf("the agent needs its node certificate: give --tls-cert and --tls-key (corral tls cert create --node %s) or a one-time --join-token (corral acl join-token create --node %s)", o.nodeID, o.nodeID)
			}
			if err := enroll(ctx, o.tls.CA, addrs, id, tok, files); err != nil {
				return nil, err
			}
			log.Info("enrolled: the servers signed this node's certificate", "cert", files.Cert)
		}
	}
	l, err := files.Load()
	if err != nil {
		return nil, err
	}
	if l.Identity != id {
		return nil, fmt.Errorf("the certificate %s names %s, but this agent is %s: use the certificate made for this node", files.Cert, l.Identity, id)
	}
	return l, nil
}

// enroll asks the servers to sign a key made here for id, proving the
// join token, and keeps the key and certificate in files.
func enroll(ctx context.Context, caFile, addrs string, id pki.Identity, token string, files pki.Files) error {
	ca, err := pki.Files{CA: caFile}.Load()
	if err != nil {
		return err
	}
	csr, key, err := pki.NewCSR(id)
	if err != nil {
		return err
	}
	c, err := api.NewClientTLS(addrs, ca.DialConfig())
	if err != nil {
		return err
	}
	rep, err := c.Enroll(ctx, id.Name, api.EnrollRequest{JoinToken: token, CSR: string(csr)})
	if err != nil {
		return fmt.Errorf("enrollment with the join token: %w", err)
	}
	if err := pki.WriteFile(files.Key, key, 0o600, true); err != nil {
		return err
	}
	return pki.WriteFile(files.Cert, []byte(rep.Cert), 0o644, true)
}
