package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/pki"
)

// This file is corral tls, which makes the cluster's CA and the
// certificates of its servers, nodes and clients, as nomad tls does.

func (a *app) tlsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Make the cluster's certificate authority and certificates",
		Long: `Make the files corral's mutual TLS needs: one CA for the cluster, and a
certificate for each server (--server ID), each node's agent (--node ID) and
each operator or program (--client NAME). A certificate names its holder's role
and name, and that is what servers trust: a node's certificate speaks only for
that node, and only server certificates may join raft, route NATS or forward
requests. Keys are written 0600 and never replaced without --force.`,
	}
	cmd.AddCommand(a.tlsCACommand(), a.tlsCertCommand())
	return cmd
}

func (a *app) tlsCACommand() *cobra.Command {
	ca := &cobra.Command{Use: "ca", Short: "Make the cluster's certificate authority"}
	var dir string
	var days int
	var force bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a CA: ca.pem (give it to every member) and ca-key.pem (keep it safe)",
		Example: `  corral tls ca create --dir /etc/corral/tls
  # then, in the same directory:
  corral tls cert create --server s1 --dir /etc/corral/tls`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := pki.NewCA("corral cluster CA", days)
			if err != nil {
				return err
			}
			cert, key := pki.CAFileNames(dir)
			kp, err := c.KeyPEM()
			if err != nil {
				return err
			}
			if err := refuseExisting(force, cert, key); err != nil {
				return err
			}
			if err := pki.WriteFile(key, kp, 0o600, force); err != nil {
				return err
			}
			if err := pki.WriteFile(cert, c.PEM, 0o644, force); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %s\nwrote %s (the CA's key: whoever holds it can make certificates for any server or node)\n", cert, key)
			return nil
		},
	}
	create.Flags().StringVar(&dir, "dir", ".", "directory to write ca.pem and ca-key.pem to")
	create.Flags().IntVar(&days, "days", 3650, "days the CA is valid")
	create.Flags().BoolVar(&force, "force", false, "replace existing files")
	ca.AddCommand(create)
	return ca
}

func (a *app) tlsCertCommand() *cobra.Command {
	cert := &cobra.Command{Use: "cert", Short: "Make certificates signed by the cluster's CA"}
	var o struct {
		server, node, client string
		caCert, caKey, dir   string
		days                 int
		dns                  []string
		ips                  []string
		force                bool
	}
	create := &cobra.Command{
		Use:   "create (--server ID | --node ID | --client NAME)",
		Short: "Create a certificate and key for a server, a node's agent or a client",
		Long: `Create ROLE-NAME.pem and ROLE-NAME-key.pem, signed by the CA in --dir (or
--ca and --ca-key). A server certificate is valid for the name server.corral
(which corral clients verify, whatever address they dial), localhost, 127.0.0.1
and ::1, plus any --additional-dnsname and --additional-ipaddress, for other
TLS clients such as curl.`,
		Example: `  corral tls cert create --server s1 --additional-ipaddress 10.0.0.11
  corral tls cert create --node n1
  corral tls cert create --client alice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var id pki.Identity
			n := 0
			for role, name := range map[pki.Role]string{pki.RoleServer: o.server, pki.RoleNode: o.node, pki.RoleClient: o.client} {
				if name != "" {
					id = pki.Identity{Role: role, Name: name}
					n++
				}
			}
			if n != 1 {
				return usagef("give exactly one of --server ID, --node ID or --client NAME")
			}
			if err := pki.ValidName(id.Role, id.Name); err != nil {
				return err
			}
			req := pki.Request{Identity: id, Days: o.days, DNSNames: o.dns}
			for _, s := range o.ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return usagef("--additional-ipaddress %q is not an IP address", s)
				}
				req.IPs = append(req.IPs, ip)
			}
			if id.Role != pki.RoleServer && len(o.dns)+len(o.ips) > 0 {
				return usagef("--additional-dnsname and --additional-ipaddress are for --server certificates only")
			}
			caCert, caKey := pki.CAFileNames(o.dir)
			if o.caCert != "" {
				caCert = o.caCert
			}
			if o.caKey != "" {
				caKey = o.caKey
			}
			ca, err := pki.LoadCA(caCert, caKey)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%w: make the CA first with corral tls ca create --dir %s, or name it with --ca and --ca-key", err, o.dir)
			}
			if err != nil {
				return err
			}
			cp, kp, err := ca.Issue(req)
			if err != nil {
				return err
			}
			certFile, keyFile := pki.FileNames(o.dir, id)
			if err := refuseExisting(o.force, certFile, keyFile); err != nil {
				return err
			}
			if err := pki.WriteFile(keyFile, kp, 0o600, o.force); err != nil {
				return err
			}
			if err := pki.WriteFile(certFile, cp, 0o644, o.force); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %s\nwrote %s\n", certFile, keyFile)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&o.server, "server", "", "make a server certificate for server ID")
	f.StringVar(&o.node, "node", "", "make a certificate for the agent of node ID")
	f.StringVar(&o.client, "client", "", "make a client certificate for NAME (an operator, a program)")
	f.StringVar(&o.dir, "dir", ".", "directory holding ca.pem and ca-key.pem, and to write the certificate to")
	f.StringVar(&o.caCert, "ca", "", "the CA's certificate (default DIR/ca.pem)")
	f.StringVar(&o.caKey, "ca-key", "", "the CA's key (default DIR/ca-key.pem)")
	f.IntVar(&o.days, "days", 365, "days the certificate is valid")
	f.StringSliceVar(&o.dns, "additional-dnsname", nil, "more DNS names a server certificate is valid for")
	f.StringSliceVar(&o.ips, "additional-ipaddress", nil, "more IP addresses a server certificate is valid for")
	f.BoolVar(&o.force, "force", false, "replace existing files")
	cert.AddCommand(create)
	return cert
}

// refuseExisting says which file is in the way, before anything is written.
func refuseExisting(force bool, paths ...string) error {
	if force {
		return nil
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			abs, _ := filepath.Abs(p)
			return fmt.Errorf("%s exists: remove it or give --force to replace it", abs)
		}
	}
	return nil
}

// devClient is the client identity corral dev makes for its own user.
var devClient = pki.Identity{Role: pki.RoleClient, Name: "dev"}

// devTLSDir is where corral dev keeps its CA and certificates.
func devTLSDir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// devClientFiles are the files a client uses to reach corral dev.
func devClientFiles(dataDir string) pki.Files {
	dir := devTLSDir(dataDir)
	cert, key := pki.FileNames(dir, devClient)
	ca, _ := pki.CAFileNames(dir)
	return pki.Files{CA: ca, Cert: cert, Key: key}
}

// devTokenFile holds corral dev's management token, 0600.
func devTokenFile(dataDir string) string { return filepath.Join(dataDir, "acl-token") }
