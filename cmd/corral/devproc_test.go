package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// startTimeout bounds how long corral dev may take to print its listener
// line; a race-enabled build on a loaded machine is slow to start.
const startTimeout = 60 * time.Second

// devProcess is a `corral dev` running as a real child process.
type devProcess struct {
	t       testing.TB
	cmd     *exec.Cmd
	api     string // https://host:port
	nats    string
	dataDir string
	logPath string
	done    chan struct{} // closed when the process has been waited for
	waitErr error         // the result of Wait; read only after done

	mu   sync.Mutex
	more []string // what it printed to stdout after the listener line

	// agentMetrics is the agent's metrics URL from the listener line,
	// "" without --metrics-addr.
	agentMetrics string
}

// startDev starts corral dev without a node agent on free ports with data
// in dataDir and waits for its listener line. The process is killed when
// the test ends.
func startDev(t testing.TB, dataDir string) *devProcess {
	t.Helper()
	return startDevWith(t, dataDir, "--no-agent")
}

// startDevWith is startDev with more flags.
func startDevWith(t testing.TB, dataDir string, extra ...string) *devProcess {
	t.Helper()
	return launchDev(t, dataDir, nil, append([]string{"--data-dir", dataDir}, extra...)...)
}

// launchDev starts corral dev on free ports with flags and env added to
// its own, and waits for its listener line, which must name dataDir.
func launchDev(t testing.TB, dataDir string, env []string, flags ...string) *devProcess {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "dev-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"dev",
		"--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--nats-port", "-1",
		"--node-id", "test-node", "--log-level", "debug"}, flags...)
	cmd := exec.Command(corralBin, args...)
	cmd.Stdout, cmd.Stderr = w, logf
	cmd.Env = append(childEnv(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p := &devProcess{t: t, cmd: cmd, dataDir: dataDir, logPath: logf.Name(), done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	lines := make(chan string, 1)
	stdoutDone := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		<-stdoutDone // the child's stdout closes when it exits
		if t.Failed() {
			p.dumpLog()
		}
	})
	go func() {
		defer close(stdoutDone)
		defer r.Close()
		sc := bufio.NewScanner(r)
		if sc.Scan() {
			lines <- sc.Text()
		}
		for sc.Scan() {
			t.Logf("corral dev stdout: %s", sc.Text())
			p.mu.Lock()
			p.more = append(p.more, sc.Text())
			p.mu.Unlock()
		}
	}()
	select {
	case line := <-lines:
		p.parseListeners(line)
	case <-p.done:
		t.Fatalf("corral dev exited before it was ready: %v", p.waitErr)
	case <-time.After(startTimeout):
		t.Fatalf("corral dev printed no listener line in %v", startTimeout)
	}
	return p
}

// parseListeners reads "corral dev: api URL nats URL raft ADDR data DIR".
func (p *devProcess) parseListeners(line string) {
	t := p.t
	t.Helper()
	rest, ok := strings.CutPrefix(line, "corral dev: ")
	if !ok {
		t.Fatalf("listener line %q does not start with %q", line, "corral dev: ")
	}
	before, dir, ok := strings.Cut(rest, " data ")
	if !ok || dir != p.dataDir {
		t.Fatalf("listener line %q does not end with data %s", line, p.dataDir)
	}
	f := strings.Fields(before)
	if len(f)%2 != 0 {
		t.Fatalf("listener line %q is not name value pairs", line)
	}
	m := map[string]string{}
	for i := 0; i < len(f); i += 2 {
		m[f[i]] = f[i+1]
	}
	p.api, p.nats = m["api"], m["nats"]
	p.agentMetrics = m["agent-metrics"]
	for _, u := range []string{p.api, p.nats} {
		if u == "" || strings.HasSuffix(u, ":0") {
			t.Fatalf("listener line %q lacks a bound api or nats address", line)
		}
	}
	if !strings.HasPrefix(p.api, "https://127.0.0.1:") || !strings.HasPrefix(p.nats, "tls://127.0.0.1:") || m["raft"] == "" {
		t.Fatalf("listener line %q: want api https://127.0.0.1:N, nats tls://127.0.0.1:N and raft", line)
	}
}

// waitStdout waits until corral dev has printed a line holding want after
// its listener line, and returns it.
func (p *devProcess) waitStdout(want string) string {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		p.mu.Lock()
		more := slices.Clone(p.more)
		p.mu.Unlock()
		for _, l := range more {
			if strings.Contains(l, want) {
				return l
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("corral dev printed no line with %q in %v; after its listener line it printed %q", want, waitTimeout, more)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *devProcess) dumpLog() {
	b, _ := os.ReadFile(p.logPath)
	p.t.Logf("corral dev log (%s):\n%s", filepath.Base(p.logPath), b)
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *devProcess) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatal(err)
	}
	<-p.done
}

// stop sends sig and returns the exit error, failing the test if the
// process does not exit in time.
func (p *devProcess) stop(sig os.Signal, timeout time.Duration) error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		p.t.Fatalf("corral dev did not exit within %v of %v", timeout, sig)
		return nil
	}
}

// result is what one CLI invocation printed and how it exited.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

// corral runs the binary against this dev server.
func (p *devProcess) corral(args ...string) result {
	p.t.Helper()
	return runCorral(p.t, p.env(), args...)
}

// env is the environment of a CLI run against this dev server.
func (p *devProcess) env() []string {
	return append(devEnv(p.t, p.dataDir), "CORRAL_ADDR="+p.api)
}

// client is an API client of this dev server with the credentials it made.
func (p *devProcess) client() *api.Client {
	p.t.Helper()
	l, err := devClientFiles(p.dataDir).Load()
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := api.NewClientTLS(p.api, l.DialConfig())
	if err != nil {
		p.t.Fatal(err)
	}
	c.Token = p.token()
	return c
}

// token is the management token corral dev made.
func (p *devProcess) token() string {
	p.t.Helper()
	b, err := os.ReadFile(devTokenFile(p.dataDir))
	if err != nil {
		p.t.Fatalf("corral dev made no token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// httpClient is an HTTPS client presenting corral dev's client
// certificate; requests still need the token (api.HeaderToken).
func (p *devProcess) httpClient(timeout time.Duration) *http.Client {
	p.t.Helper()
	l, err := devClientFiles(p.dataDir).Load()
	if err != nil {
		p.t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = l.DialConfig()
	p.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: timeout, Transport: tr}
}

// ok runs the binary and fails the test unless it exits 0.
func (p *devProcess) ok(args ...string) string {
	p.t.Helper()
	r := p.corral(args...)
	if r.code != 0 {
		p.t.Fatalf("corral %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// childEnv is the environment of processes under test. A race-enabled
// binary otherwise sleeps a second at exit; a race it finds still makes it
// exit 66, which fails the test.
func childEnv() []string {
	return append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

func runCorral(t testing.TB, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, corralBin, args...)
	cmd.Env = append(childEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("corral %s: %v", strings.Join(args, " "), err)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		t.Fatalf("corral %s printed a Go stack:\n%s", strings.Join(args, " "), r.stderr)
	}
	return r
}
