package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// startWith is start with the child's SysProcAttr set by attr first.
func (ds *daemons) startWith(name string, attr func(*syscall.SysProcAttr), args ...string) *daemon {
	ds.t.Helper()
	d, err := ds.tryStartWith(name, attr, args...)
	if err != nil {
		ds.t.Fatal(err)
	}
	return d
}

// errNotReady is a daemon that runs but printed no ready line in time.
var errNotReady = errors.New("not ready")

// tryStartWith is startWith returning, not failing, when the daemon
// exits first or is not ready in startTimeout; one not ready is made to
// print its goroutines into its log (SIGQUIT) and is then killed, so that
// no second daemon on the same state ever runs beside it.
func (ds *daemons) tryStartWith(name string, attr func(*syscall.SysProcAttr), args ...string) (*daemon, error) {
	t := ds.t
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(corralBin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = w, logf, childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	attr(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	w.Close()
	d := &daemon{t: t, cmd: cmd, done: make(chan struct{}), log: logf.Name(), name: name}
	go func() {
		cmd.Wait()
		close(d.done)
	}()
	ds.list = append(ds.list, d)
	line := make(chan string, 1)
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		if sc.Scan() {
			line <- sc.Text()
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-line:
		return d, nil
	case <-d.done:
		b, _ := os.ReadFile(d.log)
		return d, fmt.Errorf("%s exited before it was ready:\n%s", name, b)
	case <-time.After(startTimeout):
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-d.done:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-d.done
		}
		return d, fmt.Errorf("%s was %w in %v (its goroutines are at the end of its log)", name, errNotReady, startTimeout)
	}
}

// nemesisNet partitions a server from the others' raft with nftables.
// Ports alone cannot tell which server a loopback connection came from
// (every dial leaves from an ephemeral port), so each server runs in a
// cgroup v2 group of its own and the rules match the sending socket's
// group: `socket cgroupv2`.
type nemesisNet struct {
	t     *testing.T
	table string // inet table, unique to this test process
	v2    cgroupdriver.Hierarchy
	base  string // our group directory in the v2 hierarchy
	rel   string // the same, as nft names it (relative to /sys/fs/cgroup)
	level int    // depth of a server's group

	mu     sync.Mutex
	active bool
}

// newNemesisNet returns nil and the reason when partitions cannot be made
// here: no nft, no cgroup v2 hierarchy nft can name, or no CLONE_INTO_CGROUP.
func newNemesisNet(t *testing.T, rep cgroupdriver.Report) (*nemesisNet, string) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, "nft is not installed (apt-get install nftables)"
	}
	var v2 *cgroupdriver.Hierarchy
	for i, h := range rep.Hierarchies {
		if h.Version == 2 {
			v2 = &rep.Hierarchies[i]
		}
	}
	if v2 == nil {
		return nil, "no cgroup v2 hierarchy is mounted (nft matches a socket's cgroup v2 group)"
	}
	const nftRoot = "/sys/fs/cgroup"
	mountRel, ok := strings.CutPrefix(v2.MountPoint, nftRoot)
	if !ok || v2.MountRoot != "/" {
		return nil, fmt.Sprintf("cgroup v2 is mounted at %s (root %s); nft names groups below %s", v2.MountPoint, v2.MountRoot, nftRoot)
	}
	n := &nemesisNet{t: t, table: fmt.Sprintf("corral-nemesis-%d", os.Getpid()), v2: *v2}
	group := fmt.Sprintf("/corral-nemesis-%d", os.Getpid())
	dir, err := v2.Dir(group)
	if err != nil {
		return nil, err.Error()
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Sprintf("cannot make cgroup v2 group %s: %v", dir, err)
	}
	// Runs after the daemons' cleanup (registered later) killed them.
	t.Cleanup(func() {
		n.heal()
		if err := cgrouptest.RemoveTree(dir, 10*time.Second); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	n.base = dir
	n.rel = strings.TrimPrefix(mountRel+group, "/")
	n.level = strings.Count(group, "/") + 1
	// Prove the kernel takes a process into a group at clone and nft can
	// name the group, before the servers rely on it.
	probe, _ := n.serverGroup("probe")
	defer probe.Close()
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(probe.Fd())}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Sprintf("cannot start a process in a cgroup v2 group (CLONE_INTO_CGROUP): %v", err)
	}
	if err := n.nft(fmt.Sprintf("add table inet %s\nadd chain inet %[1]s probe\nadd rule inet %[1]s probe socket cgroupv2 level %d %q tcp dport 9 drop\ndelete table inet %[1]s\n",
		n.table, n.level, n.rel+"/probe")); err != nil {
		return nil, fmt.Sprintf("nft cannot match cgroup v2 groups: %v", err)
	}
	return n, ""
}

// serverGroup makes the group a server runs in and returns it open (for
// CLONE_INTO_CGROUP) with its name as nft wants it.
func (n *nemesisNet) serverGroup(id string) (*os.File, string) {
	t := n.t
	t.Helper()
	dir := filepath.Join(n.base, id)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatalf("make cgroup v2 group for %s: %v", id, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, n.rel + "/" + id
}

// isolate drops every raft packet between s and the others, both ways:
// connections to s's raft port, and packets s's sockets send to (or get
// from) the others' raft ports.
func (n *nemesisNet) isolate(s *nemServer, all []*nemServer) {
	t := n.t
	t.Helper()
	own := portOf(s.raft)
	var others []string
	for _, o := range all {
		if o != s {
			others = append(others, portOf(o.raft))
		}
	}
	set := "{ " + strings.Join(others, ", ") + " }"
	match := fmt.Sprintf("socket cgroupv2 level %d %q", n.level, s.groupPath)
	script := fmt.Sprintf(`add table inet %[1]s
add chain inet %[1]s out { type filter hook output priority 0; policy accept; }
add chain inet %[1]s in { type filter hook input priority 0; policy accept; }
add rule inet %[1]s out tcp dport %[2]s drop
add rule inet %[1]s out tcp sport %[2]s drop
add rule inet %[1]s out %[3]s tcp dport %[4]s drop
add rule inet %[1]s in %[3]s tcp sport %[4]s drop
`, n.table, own, match, set)
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.nft(script); err != nil {
		t.Fatalf("partition %s: %v", s.id, err)
	}
	n.active = true
}

// heal deletes the table; safe to call when there is none.
func (n *nemesisNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.active {
		return
	}
	if err := n.nft("delete table inet " + n.table + "\n"); err != nil {
		n.t.Errorf("heal the partition: %v (remove it with: nft delete table inet %s)", err, n.table)
		return
	}
	n.active = false
}

func (n *nemesisNet) nft(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft -f - <<EOF\n%sEOF: %v: %s", script, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func portOf(hostport string) string {
	_, p, _ := strings.Cut(hostport, ":")
	return p
}
