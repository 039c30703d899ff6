package pki

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
)

func TestEnsureDirAndHandshakes(t *testing.T) {
	dir := t.TempDir()
	srv := Identity{RoleServer, "s1"}
	node := Identity{RoleNode, "n1"}
	cli := Identity{RoleClient, "alice"}
	files, err := EnsureDir(dir, srv, node, cli)
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey := CAFileNames(dir)
	st, err := os.Stat(caKey)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key %s: %v mode %v, want 0600", caKey, err, st.Mode())
	}
	// A second call reuses what is there.
	before, _ := os.ReadFile(caCert)
	if _, err := EnsureDir(dir, srv); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(caCert); string(after) != string(before) {
		t.Fatal("EnsureDir replaced an existing CA")
	}
	load := func(id Identity) *Loaded {
		l, err := files[id].Load()
		if err != nil {
			t.Fatal(err)
		}
		if l.Identity != id {
			t.Fatalf("loaded identity %v, want %v", l.Identity, id)
		}
		return l
	}
	ls, ln, lc := load(srv), load(node), load(cli)
	if _, err := ln.ListenConfig(tls.RequireAndVerifyClientCert); err == nil {
		t.Fatal("a node certificate was accepted to serve")
	}
	listen, err := ls.ListenConfig(tls.RequireAndVerifyClientCert, RoleServer)
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := tls.Listen("tcp", "127.0.0.1:0", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	try := func(cfg *tls.Config) error {
		c, err := tls.Dial("tcp", ln2.Addr().String(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		b := make([]byte, 1)
		_, err = c.Read(b)
		return err
	}
	if err := try(ls.DialConfig()); err != nil {
		t.Fatalf("server to server: %v", err)
	}
	for name, cfg := range map[string]*tls.Config{"node": ln.DialConfig(), "client": lc.DialConfig()} {
		if err := try(cfg); err == nil {
			t.Errorf("%s certificate reached a server-only listener", name)
		}
	}
	// A certificate from another CA is refused.
	other, err := EnsureDir(t.TempDir(), srv)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := other[srv].Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := try(lo.DialConfig()); err == nil {
		t.Error("a server certificate of another CA was accepted")
	}
	// A plain TCP client gets nothing back.
	c, err := net.Dial("tcp", ln2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	b, _ := io.ReadAll(c)
	c.Close()
	if strings.Contains(string(b), "HTTP/1.0 200") {
		t.Error("plain connection was served")
	}
}

func TestNodePosingAsServerIsRefused(t *testing.T) {
	dir := t.TempDir()
	node := Identity{RoleNode, "n1"}
	files, err := EnsureDir(dir, node)
	if err != nil {
		t.Fatal(err)
	}
	l, err := files[node].Load()
	if err != nil {
		t.Fatal(err)
	}
	// A node certificate lacks ServerName, so a client refuses it as a server.
	listen := &tls.Config{Certificates: []tls.Certificate{*l.Cert}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, err = tls.Dial("tcp", ln.Addr().String(), l.DialConfig())
	if err == nil {
		t.Fatal("a client accepted a node certificate as a server")
	}
}

func TestCSRIdentityComesFromSigner(t *testing.T) {
	ca, err := NewCA("test", 1)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, err := NewCSR(Identity{RoleServer, "evil"})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ca.SignCSR(csr, Identity{RoleNode, "n7"}, 30)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCert(cp)
	if err != nil {
		t.Fatal(err)
	}
	id, err := IdentityOf(c)
	if err != nil || id != (Identity{RoleNode, "n7"}) {
		t.Fatalf("signed identity %v, %v; want node:n7", id, err)
	}
	if _, err := ca.SignCSR([]byte("junk"), Identity{RoleNode, "n7"}, 30); err == nil {
		t.Fatal("junk CSR signed")
	}
	if err := ValidName(RoleNode, "../x"); err == nil {
		t.Fatal("bad name accepted")
	}
	if _, err := ParseIdentity("root"); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Fatal("identity without role accepted")
	}
}
