package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Files names the PEM files one member of the cluster proves itself with:
// the cluster CA's certificate, its own certificate and its key.
type Files struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is named.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate checks that the files come as a set: the CA with a certificate
// and key, or (for a client that only verifies servers) the CA alone.
func (f Files) Validate() error {
	if !f.Enabled() {
		return nil
	}
	if f.CA == "" {
		return errors.New("corral: a TLS certificate was given without the CA: give --ca-cert (CORRAL_CACERT) too")
	}
	if (f.Cert == "") != (f.Key == "") {
		return errors.New("corral: give both the TLS certificate and its key, or neither")
	}
	return nil
}

// Loaded is Files read and checked.
type Loaded struct {
	Pool     *x509.CertPool
	Cert     *tls.Certificate // nil when only the CA was given
	Identity Identity         // zero when only the CA was given
}

// Load reads and checks the files.
func (f Files) Load() (*Loaded, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, errors.New("corral: no TLS files given")
	}
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("corral: CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("corral: CA certificate %s holds no PEM certificate", f.CA)
	}
	l := &Loaded{Pool: pool}
	if f.Cert == "" {
		return l, nil
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("corral: TLS certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, err
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("corral: TLS certificate %s is not signed by the CA %s: %w", f.Cert, f.CA, err)
	}
	if l.Identity, err = IdentityOf(leaf); err != nil {
		return nil, fmt.Errorf("corral: TLS certificate %s: %w", f.Cert, err)
	}
	l.Cert = &pair
	return l, nil
}

// RequirePeer returns a VerifyConnection check that the peer proved a
// certificate naming one of roles.
func RequirePeer(roles ...Role) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		id, ok := PeerIdentity(&cs)
		if !ok {
			return errors.New("corral: the peer presented no certificate of this cluster")
		}
		if !slices.Contains(roles, id.Role) {
			return fmt.Errorf("corral: the peer is %s, not a %v", id, roles)
		}
		return nil
	}
}

// ListenConfig is a listener's TLS: it presents the certificate, which
// must be a server's, and verifies clients' certificates against the CA.
// clientAuth is tls.RequireAndVerifyClientCert where every peer must prove
// itself, tls.VerifyClientCertIfGiven where some requests (enrollment with
// a join token) come before the peer has a certificate. peers, when given,
// are the only roles accepted.
func (l *Loaded) ListenConfig(clientAuth tls.ClientAuthType, peers ...Role) (*tls.Config, error) {
	if l.Cert == nil || l.Identity.Role != RoleServer {
		return nil, fmt.Errorf("corral: a server needs a server certificate (corral tls cert create --server ID), not %v", l.Identity)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*l.Cert},
		ClientCAs:    l.Pool,
		ClientAuth:   clientAuth,
	}
	if len(peers) > 0 {
		check := RequirePeer(peers...)
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 && clientAuth != tls.RequireAndVerifyClientCert {
				return nil
			}
			return check(cs)
		}
	}
	return c, nil
}

// DialConfig is a client's TLS: it verifies that the peer is a server of
// this cluster (by ServerName, whatever address was dialled) and presents
// the certificate, when there is one.
func (l *Loaded) DialConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:       tls.VersionTLS12,
		RootCAs:          l.Pool,
		ServerName:       ServerName,
		VerifyConnection: RequirePeerServer,
	}
	if l.Cert != nil {
		c.Certificates = []tls.Certificate{*l.Cert}
	}
	return c
}

// RequirePeerServer checks, on a client, that the server it reached holds
// a server certificate of this cluster.
func RequirePeerServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("corral: the server presented no certificate")
	}
	id, err := IdentityOf(cs.PeerCertificates[0])
	if err != nil {
		return err
	}
	if id.Role != RoleServer {
		return fmt.Errorf("corral: the peer is %s, not a server", id)
	}
	return nil
}

// FileNames returns where EnsureDir and corral tls keep id's certificate
// and key in dir: role-name.pem and role-name-key.pem.
func FileNames(dir string, id Identity) (cert, key string) {
	base := filepath.Join(dir, string(id.Role)+"-"+id.Name)
	return base + ".pem", base + "-key.pem"
}

// CAFileNames returns where the CA's certificate and key are kept in dir.
func CAFileNames(dir string) (cert, key string) {
	return filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
}

// EnsureDir makes, in dir, a CA and a certificate for each identity unless
// they are there already, and returns each identity's files. corral dev
// uses it so that its first start needs no extra step.
func EnsureDir(dir string, ids ...Identity) (map[Identity]Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caCert, caKey := CAFileNames(dir)
	var ca *CA
	if _, err := os.Stat(caCert); errors.Is(err, os.ErrNotExist) {
		if ca, err = NewCA("corral dev CA", 3650); err != nil {
			return nil, err
		}
		kp, err := ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		if err := WriteFile(caKey, kp, 0o600, true); err != nil {
			return nil, err
		}
		if err := WriteFile(caCert, ca.PEM, 0o644, true); err != nil {
			return nil, err
		}
	} else if ca, err = LoadCA(caCert, caKey); err != nil {
		return nil, err
	}
	out := map[Identity]Files{}
	for _, id := range ids {
		cert, key := FileNames(dir, id)
		f := Files{CA: caCert, Cert: cert, Key: key}
		if l, err := f.Load(); err != nil || l.Identity != id {
			cp, kp, err := ca.Issue(Request{Identity: id, Days: 3650})
			if err != nil {
				return nil, err
			}
			if err := WriteFile(key, kp, 0o600, true); err != nil {
				return nil, err
			}
			if err := WriteFile(cert, cp, 0o644, true); err != nil {
				return nil, err
			}
		}
		out[id] = f
	}
	return out, nil
}
