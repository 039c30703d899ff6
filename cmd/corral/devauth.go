package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/coordinator/pki"
)

// devToken makes sure corral dev's data dir holds a management token: it
// bootstraps the ACLs on the first start and, if the token file was lost
// since, has the server make a new one, as only a server may.
func (a *app) devToken(ctx context.Context, s *coordinator.Server, dir string) error {
	path := devTokenFile(dir)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	secret := acl.NewSecret()
	actor := pki.Identity{Role: pki.RoleServer, Name: s.ID()}.String()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var cmd cluster.Command = &cluster.BootstrapACL{Secret: secret, Accessor: acl.NewAccessor()}
		o, err := s.Submit(ctx, "", actor, cmd)
		if err == nil && o.Err != nil {
			err = o.Err
		}
		if errors.Is(err, api.ErrConflict) || errors.Is(err, api.ErrExists) {
			cmd = &cluster.CreateToken{CreateToken: api.CreateToken{Name: "corral-dev", Policies: []string{"management"}}, Secret: secret, Accessor: acl.NewAccessor()}
			if o, err = s.Submit(ctx, "", actor, cmd); err == nil && o.Err != nil {
				err = o.Err
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, api.ErrUnavailable) && !errors.Is(err, api.ErrNotLeader) || ctx.Err() != nil {
			return fmt.Errorf("corral dev's management token: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("corral dev's management token: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return pki.WriteFile(path, []byte(secret+"\n"), 0o600, true)
}

// printDevClientHint says, after corral dev's listener line, how clients
// reach it.
func (a *app) printDevClientHint(dir, apiURL string) {
	files := devClientFiles(dir)
	where := "clients elsewhere, and curl, use:"
	if def, err := defaultDevDataDir(a.getenv); err == nil && def == dir {
		where = "corral commands on this machine use these credentials by themselves; other clients, and curl, use:"
	}
	fmt.Fprintf(a.stdout, "corral dev: %s\n  export CORRAL_ADDR=%s CORRAL_CACERT=%s CORRAL_CLIENT_CERT=%s CORRAL_CLIENT_KEY=%s CORRAL_TOKEN=$(cat %s)\n",
		where, apiURL, files.CA, files.Cert, files.Key, devTokenFile(dir))
}
