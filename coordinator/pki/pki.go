package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Role is what a certificate's holder is to the cluster.
type Role string

const (
	// RoleServer is a coordinator server: raft peer, NATS route, and the
	// only role trusted to forward another identity's request.
	RoleServer Role = "server"
	// RoleNode is a host's agent: it may speak only for its own node.
	RoleNode Role = "node"
	// RoleClient is an operator's or a program's client certificate: it
	// opens the connection; an ACL token says what it may do.
	RoleClient Role = "client"
)

// ServerName is the DNS name every server certificate carries and every
// corral client verifies, whatever address it dialled: a node or client
// certificate from the same CA lacks it, so it cannot pose as a server.
const ServerName = "server.corral"

// Identity is who a certificate or a token names.
type Identity struct {
	Role Role
	Name string
}

// String is "role:name", as events record the actor.
func (id Identity) String() string { return string(id.Role) + ":" + id.Name }

// IsZero reports whether no identity was proved.
func (id Identity) IsZero() bool { return id.Role == "" }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName checks a server, node or client name.
func ValidName(role Role, name string) error {
	switch role {
	case RoleServer, RoleNode, RoleClient:
	default:
		return fmt.Errorf("corral: role %q is not known: use server, node or client", role)
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("corral: %s name %q is not valid: use 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", role, name)
	}
	return nil
}

// ParseIdentity reads "role:name".
func ParseIdentity(s string) (Identity, error) {
	r, n, ok := strings.Cut(s, ":")
	if !ok {
		return Identity{}, fmt.Errorf("corral: identity %q is not role:name", s)
	}
	id := Identity{Role: Role(r), Name: n}
	return id, ValidName(id.Role, id.Name)
}

// uri is the SAN that carries the identity: corral://role/name.
func (id Identity) uri() *url.URL {
	return &url.URL{Scheme: "corral", Host: string(id.Role), Path: "/" + id.Name}
}

// IdentityOf returns the identity a certificate names in its corral://
// URI SAN.
func IdentityOf(c *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range c.URIs {
		if u.Scheme != "corral" {
			continue
		}
		id := Identity{Role: Role(u.Host), Name: strings.TrimPrefix(u.Path, "/")}
		if err := ValidName(id.Role, id.Name); err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	if len(found) != 1 {
		return Identity{}, fmt.Errorf("corral: certificate %q names %d corral identities, want exactly one", c.Subject.CommonName, len(found))
	}
	return found[0], nil
}

// PeerIdentity returns the identity of a TLS peer whose certificate the
// handshake verified; ok is false when it presented none.
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	id, err := IdentityOf(cs.VerifiedChains[0][0])
	if err != nil {
		return Identity{}, false
	}
	return id, true
}

// CA is the cluster's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // the certificate, PEM
}

// NewCA makes a CA valid for the given days.
func NewCA(name string, days int) (*CA, error) {
	if days < 1 {
		return nil, fmt.Errorf("corral: CA validity of %d days: give at least 1", days)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"corral"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadCA reads a CA's certificate and key.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cp, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("corral: CA certificate: %w", err)
	}
	cert, err := parseCert(cp)
	if err != nil {
		return nil, fmt.Errorf("corral: CA certificate %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("corral: %s is not a CA certificate", certFile)
	}
	kp, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("corral: CA key: %w", err)
	}
	key, err := parseKey(kp)
	if err != nil {
		return nil, fmt.Errorf("corral: CA key %s: %w", keyFile, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("corral: CA key %s does not belong to the certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key, PEM: cp}, nil
}

// KeyPEM encodes the CA's private key.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// Request describes a certificate to issue.
type Request struct {
	Identity Identity
	// DNSNames and IPs are extra names a server certificate is valid for,
	// beside ServerName, localhost, 127.0.0.1 and ::1.
	DNSNames []string
	IPs      []net.IP
	Days     int
}

// Issue makes a key and a certificate for req, signed by the CA.
func (ca *CA) Issue(req Request) (certPEM, keyPEMBytes []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = ca.sign(req, &key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	kp, err := keyPEM(key)
	return certPEM, kp, err
}

// SignCSR signs a certificate signing request for id: the identity comes
// from the caller, never from the request, which only proves the key.
func (ca *CA) SignCSR(csrPEM []byte, id Identity, days int) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("corral: the certificate request is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("corral: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("corral: certificate request signature: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("corral: the certificate request's key is not ECDSA P-256")
	}
	return ca.sign(Request{Identity: id, Days: days}, pub)
}

// NewCSR makes a key and a certificate request for it, for an agent that
// enrolls with a join token instead of holding a certificate made for it.
func NewCSR(id Identity) (csrPEM, keyPEMBytes []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id.String()}}, key)
	if err != nil {
		return nil, nil, err
	}
	kp, err := keyPEM(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), kp, err
}

func (ca *CA) sign(req Request, pub *ecdsa.PublicKey) ([]byte, error) {
	id := req.Identity
	if err := ValidName(id.Role, id.Name); err != nil {
		return nil, err
	}
	days := req.Days
	if days == 0 {
		days = 365
	}
	if days < 1 {
		return nil, fmt.Errorf("corral: validity of %d days: give at least 1", days)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.String(), Organization: []string{"corral"}, OrganizationalUnit: []string{string(id.Role)}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.AddDate(0, 0, days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.uri()},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	if id.Role == RoleServer {
		// Servers answer as TLS servers and dial each other as clients.
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = append([]string{ServerName, "localhost"}, req.DNSNames...)
		tmpl.IPAddresses = append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, req.IPs...)
	} else if len(req.DNSNames)+len(req.IPs) > 0 {
		return nil, fmt.Errorf("corral: extra DNS names and IP addresses are for server certificates only")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func parseCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKey(p []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("not a PEM key")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, errors.New("not an EC private key")
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an EC private key")
	}
	return ek, nil
}

// Fingerprint is the SHA-256 of a certificate, hex, for logs.
func Fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:8])
}

// WriteFile writes data to path with mode, refusing to replace a file
// unless force; it writes a temporary file and renames it, so a crash
// never leaves half a key.
func WriteFile(path string, data []byte, mode os.FileMode, force bool) error {
	if !force {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("corral: %s exists: remove it or give --force to replace it", path)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ParseCertPEM reads one PEM certificate.
func ParseCertPEM(p []byte) (*x509.Certificate, error) { return parseCert(p) }
