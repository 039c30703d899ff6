package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// devClusterProcess is `corral dev --servers 3` running as a child.
type devClusterProcess struct {
	cmd     *exec.Cmd
	apis    []string // https://host:port of each server
	logPath string
	done    chan struct{}
	waitErr error
}

// freePortBase finds a base under which the twelve ports of three dev
// servers are free just now.
func freePortBase(t *testing.T) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if base < 1024 || base > 65000 {
			continue
		}
		free := true
		for n := 1; n <= 3 && free; n++ {
			for k := range 4 {
				p := devPortsOf(base, n)
				port := []int{p.http, p.raft, p.nats, p.route}[k]
				c, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					free = false
					break
				}
				c.Close()
			}
		}
		if free {
			return base
		}
	}
	t.Fatal("found no port base with twelve free ports")
	return 0
}

// startDevCluster runs corral dev --servers 3 with flags and waits for its
// listener line, which must name three servers and dataDir.
func startDevCluster(t *testing.T, dataDir string, flags ...string) *devClusterProcess {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "dev3-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"dev", "--servers", "3", "--no-agent", "--node-id", "test-node", "--data-dir", dataDir}, flags...)
	p := &devClusterProcess{cmd: exec.Command(corralBin, args...), logPath: logf.Name(), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr, p.cmd.Env = w, logf, childEnv()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("corral dev --servers 3 log:\n%s", b)
		}
	})
	line := make(chan string, 1)
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			select {
			case line <- sc.Text():
			default:
			}
		}
	}()
	select {
	case l := <-line:
		rest, ok := strings.CutPrefix(l, "corral dev: servers 3 ")
		before, dir, ok2 := strings.Cut(rest, " data ")
		f := strings.Fields(before)
		if !ok || !ok2 || dir != dataDir || len(f) < 2 || f[0] != "api" {
			t.Fatalf("listener line %q: want corral dev: servers 3 api URL,URL,URL ... data %s", l, dataDir)
		}
		p.apis = strings.Split(f[1], ",")
		if len(p.apis) != 3 {
			t.Fatalf("listener line %q names %d APIs, want 3", l, len(p.apis))
		}
	case <-p.done:
		b, _ := os.ReadFile(p.logPath)
		t.Fatalf("corral dev --servers 3 exited before it was ready: %v\n%s", p.waitErr, b)
	case <-time.After(2 * startTimeout):
		t.Fatalf("corral dev --servers 3 printed no listener line in %v", 2*startTimeout)
	}
	return p
}

// members asks the server at addr for the cluster's members.
func members(t *testing.T, env []string, addr string) []api.Member {
	t.Helper()
	r := runCorral(t, env, "cluster", "members", "-o", "json", "--addr", addr)
	if r.code != 0 {
		t.Fatalf("cluster members via %s: exit %d: %s", addr, r.code, r.stderr)
	}
	var ms []api.Member
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
		t.Fatalf("cluster members via %s: %v in %q", addr, err, r.stdout)
	}
	return ms
}

// TestDevThreeServers starts corral dev --servers 3 as a process on ports
// the test chooses: three voters, one leader that every server names, a
// guest created through one server seen through the others, ACLs on, a
// clean stop, and a restart on the same data dir that keeps both.
func TestDevThreeServers(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev3")
	base := freePortBase(t)
	p := startDevCluster(t, dataDir, "--port-base", strconv.Itoa(base))
	for i, u := range p.apis {
		if want := fmt.Sprintf("https://127.0.0.1:%d", base+10*i); u != want {
			t.Errorf("server %d's API is %s, want %s (BASE+10*(N-1))", i+1, u, want)
		}
	}
	env := devEnv(t, dataDir)

	checkMembers := func() {
		t.Helper()
		leaders := map[string]bool{}
		for _, u := range p.apis {
			ms := members(t, env, u)
			voters := 0
			for _, m := range ms {
				if m.Suffrage == "voter" {
					voters++
				}
				if m.Leader {
					leaders[m.ID] = true
				}
			}
			if len(ms) != 3 || voters != 3 {
				t.Errorf("via %s: members %+v, want three voters", u, ms)
			}
		}
		if len(leaders) != 1 {
			t.Errorf("the servers name leaders %v, want one", leaders)
		}
	}
	checkMembers()

	created := runCorral(t, append(env, "CORRAL_ADDR="+p.apis[1]), "guest", "create", "web", "--driver", "process", "--memory", "64MiB", "--", "/bin/sleep", "1000")
	if created.code != 0 {
		t.Fatalf("guest create through s2: exit %d: %s", created.code, created.stderr)
	}
	seen := func() {
		t.Helper()
		for _, u := range p.apis {
			r := runCorral(t, append(env, "CORRAL_ADDR="+u), "guest", "show", "web", "-o", "json")
			var g struct {
				Name string `json:"name"`
			}
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &g) != nil || g.Name != "web" {
				t.Errorf("guest show web via %s: exit %d, %s%s", u, r.code, r.stdout, r.stderr)
			}
		}
	}
	seen()

	// The ACLs hold on every server: no token, no answer.
	noToken := runCorral(t, append(env, "CORRAL_TOKEN=", "CORRAL_ADDR="+p.apis[2]), "guest", "list")
	if noToken.code == 0 || !strings.Contains(noToken.stderr, "token") {
		t.Errorf("guest list without a token via s3: exit %d, %q; want a refusal naming the token", noToken.code, noToken.stderr)
	}

	stop := func() {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.done:
			if p.waitErr != nil {
				t.Errorf("corral dev --servers 3 exited with %v after SIGTERM", p.waitErr)
			}
		case <-time.After(2 * shutdownGrace):
			t.Fatalf("corral dev --servers 3 did not exit within %v of SIGTERM", 2*shutdownGrace)
		}
	}
	stop()

	// A second start on the data dir finds the port base it recorded.
	p = startDevCluster(t, dataDir)
	if p.apis[2] != fmt.Sprintf("https://127.0.0.1:%d", base+20) {
		t.Errorf("restarted without --port-base: s3 at %s, want the recorded base %d", p.apis[2], base)
	}
	checkMembers()
	seen()
	stop()

	// A data dir of three servers refuses other layouts at once.
	for _, args := range [][]string{
		{"dev", "--servers", "3", "--no-agent", "--data-dir", dataDir, "--port-base", strconv.Itoa(base + 100)},
		{"dev", "--no-agent", "--data-dir", dataDir},
	} {
		r := runCorral(t, nil, args...)
		if r.code != 1 || !strings.Contains(r.stderr, dataDir) {
			t.Errorf("%q: exit %d, %q; want a refusal naming %s", args, r.code, r.stderr, dataDir)
		}
	}
}
