package main

import (
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/pki"
)

// noCredentials blanks every variable the CLI takes an address or a
// credential from, whatever the environment of the test run holds.
var noCredentials = []string{"CORRAL_ADDR=", "CORRAL_CACERT=", "CORRAL_CLIENT_CERT=", "CORRAL_CLIENT_KEY=", "CORRAL_TOKEN="}

// TestDevNeedsNoExtraStep: corral dev on its default data directory is
// locked down and still needs nothing from its user. The CLI on the same
// machine finds the CA, the client certificate and the management token
// corral dev made, with no flag or variable; a plain host:port then means
// https. Whoever lacks them is refused: no client certificate, no token,
// an unknown token or plain http.
func TestDevNeedsNoExtraStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	t.Parallel()
	home := t.TempDir()
	xdg := filepath.Join(home, "xdg")
	userEnv := append([]string{"HOME=" + home, "XDG_DATA_HOME=" + xdg}, noCredentials...)
	dataDir := filepath.Join(xdg, "corral", "dev") // corral dev's default
	p := launchDev(t, dataDir, userEnv, "--no-agent")
	host := strings.TrimPrefix(p.api, "https://")
	p.waitStdout("corral commands on this machine use these credentials by themselves")
	if hint := p.waitStdout("export CORRAL_ADDR="); !strings.Contains(hint, "CORRAL_CACERT="+devClientFiles(dataDir).CA) || !strings.Contains(hint, "CORRAL_TOKEN=$(cat "+devTokenFile(dataDir)+")") {
		t.Errorf("corral dev's hint for other clients %q lacks its CA or its token file", hint)
	}

	ok := func(args ...string) string {
		t.Helper()
		r := runCorral(t, userEnv, args...)
		if r.code != 0 {
			t.Fatalf("corral %s with no credentials given: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		return r.stdout
	}
	if out := ok("guest", "create", "web", "--driver", "process", "--memory", "32MiB", "--no-start", "--addr", p.api, "--", "/bin/sleep", "1000"); !strings.HasPrefix(out, "guest web defined") {
		t.Errorf("guest create printed %q", out)
	}
	if out := ok("guest", "list", "--addr", p.api); !containsRow(out, "web", "process", "stopped") {
		t.Errorf("guest list:\n%s", out)
	}
	if out := ok("guest", "list", "--addr", host); !containsRow(out, "web", "process") {
		t.Errorf("guest list --addr %s (no scheme: https, since a CA was found):\n%s", host, out)
	}

	// What corral dev keeps secret only its user may read.
	for _, f := range []string{devTokenFile(dataDir), devClientFiles(dataDir).Key, filepath.Join(devTLSDir(dataDir), "ca-key.pem")} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}

	// Another user of the machine, whose home holds no corral dev, has no
	// credentials: refused, with what to give.
	other := append([]string{"HOME=" + t.TempDir(), "XDG_DATA_HOME="}, noCredentials...)
	if r := runCorral(t, other, "guest", "list", "--addr", p.api); r.code != 1 || !strings.Contains(r.stderr, "CORRAL_CACERT") {
		t.Errorf("guest list without corral dev's credentials: exit %d, stderr %q; want exit 1 naming CORRAL_CACERT", r.code, r.stderr)
	}

	// curl-like requests: verify the server as curl does (by the address
	// dialled), with or without the client certificate and the token.
	ca, err := pki.Files{CA: devClientFiles(dataDir).CA}.Load()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := devClientFiles(dataDir).Load()
	if err != nil {
		t.Fatal(err)
	}
	transport := func(withCert bool) *http.Client {
		cfg := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
		if withCert {
			cfg.Certificates = []tls.Certificate{*cert.Cert}
		}
		tr := &http.Transport{TLSClientConfig: cfg}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	get := func(hc *http.Client, url, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	anonymous, withCert := transport(false), transport(true)
	token := p.token()
	for _, c := range []struct {
		what  string
		hc    *http.Client
		token string
	}{
		{"no certificate, no token", anonymous, ""},
		{"a token but no certificate", anonymous, token},
		{"a certificate but no token", withCert, ""},
		{"a certificate and a token of no cluster", withCert, "crl_" + strings.Repeat("0", 64)},
	} {
		code, body := get(c.hc, p.api+"/v1/guests", c.token)
		if code != http.StatusUnauthorized || !strings.Contains(body, `"unauthenticated"`) || strings.Contains(body, "web") {
			t.Errorf("%s: %d %s; want 401 unauthenticated", c.what, code, body)
		}
	}
	if code, body := get(withCert, p.api+"/v1/guests", token); code != http.StatusOK || !strings.Contains(body, `"web"`) {
		t.Errorf("with the certificate and the token: %d %s; want 200 with guest web", code, body)
	}
	code, body := get(http.DefaultClient, "http://"+host+"/v1/guests", token)
	if code != http.StatusBadRequest || strings.Contains(body, `"web"`) {
		t.Errorf("plain http: %d %s; want 400 (an HTTPS server) and no guests", code, body)
	}
}
