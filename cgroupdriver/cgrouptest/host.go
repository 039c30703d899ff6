package cgrouptest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
)

// RequireHost skips t, saying why, unless it runs as root on a host whose
// cgroup hierarchies can be detected and written. It returns the report.
func RequireHost(t testing.TB) cgroupdriver.Report {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping real-cgroup test: needs root")
	}
	rep, err := cgroupdriver.DetectHost()
	if err != nil {
		t.Skipf("skipping real-cgroup test: %v", err)
	}
	for _, h := range rep.Hierarchies {
		if err := unix.Access(h.MountPoint, unix.W_OK); err != nil {
			t.Skipf("skipping real-cgroup test: %s not writable: %v", h, err)
		}
	}
	return rep
}

// NewPartition returns a partition path unique to this test,
// /corraltest-<random>, and registers a cleanup that removes it from every
// hierarchy of rep (thawing and killing whatever is left inside) and fails
// the test if any directory remains.
func NewPartition(t testing.TB, rep cgroupdriver.Report) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	p := "/corraltest-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		// Thaw in every hierarchy first: a task frozen in the freezer's
		// (a fencer froze the kind directories, say) cannot die of the
		// SIGKILL sent while another hierarchy's tree is removed.
		for _, h := range rep.Hierarchies {
			if dir, err := h.Dir(p); err == nil {
				thawTree(dir)
			}
		}
		for _, h := range rep.Hierarchies {
			dir, err := h.Dir(p)
			if err != nil {
				t.Errorf("cleanup: %v", err)
				continue
			}
			if err := RemoveTree(dir, 10*time.Second); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cleanup left %s behind", dir)
			}
		}
	})
	return p
}

// RemoveTree removes a cgroup directory and everything below it, deepest
// first, thawing and killing the tasks it finds, and retrying busy groups
// until timeout.
func RemoveTree(dir string, timeout time.Duration) error {
	// Thaw from the top down first: a task below a frozen ancestor cannot
	// die of the SIGKILL sent to it.
	thawTree(dir)
	return removeTree(dir, timeout)
}

func thawTree(dir string) {
	_ = os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
	_ = os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			thawTree(filepath.Join(dir, e.Name()))
		}
	}
}

func removeTree(dir string, timeout time.Duration) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name()), timeout); err != nil {
				return err
			}
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Rmdir(dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if time.Now().After(deadline) {
			return &os.PathError{Op: "rmdir", Path: dir, Err: err}
		}
		_ = os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
		_ = os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
		procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(procs)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		<-time.After(5 * time.Millisecond) // retry interval while the kernel reaps
	}
}

// privateMountsEnv names the test a child re-executed by [PrivateMounts]
// is to run inside its own mount namespace.
const privateMountsEnv = "CORRAL_TEST_PRIVATE_MOUNTS"

// PrivateMounts makes the calling test run in a mount namespace of its
// own, so that what it mounts (a cgroup v1 hierarchy with [MountV1], say)
// is never seen by anything else on the host: a corral agent started by
// another test, or by someone else, detects the cgroup layout from the
// mount table and would take a test's hierarchy for the host's.
//
// Called at the start of a test, it re-executes the test binary for this
// test alone under unshare(1) with private mount propagation and returns
// false once the child has passed (it fails t, with the child's output,
// otherwise); in the child it returns true and the test goes on. The test
// must return at once when it returns false:
//
//	if !cgrouptest.PrivateMounts(t) {
//		return
//	}
func PrivateMounts(t *testing.T) bool {
	t.Helper()
	if os.Getenv(privateMountsEnv) == t.Name() {
		return true
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("skipping: a test that mounts runs in its own mount namespace, and unshare(1) is missing: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var run []string
	for _, part := range strings.Split(t.Name(), "/") {
		run = append(run, "^"+regexp.QuoteMeta(part)+"$")
	}
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", self,
		"-test.run", strings.Join(run, "/"), "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), privateMountsEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in its own mount namespace: %v\n%s", t.Name(), err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s in its own mount namespace did not run (a skip or a filter?):\n%s", t.Name(), out)
	}
	t.Logf("ran in its own mount namespace:\n%s", out)
	return false
}

// RequirePrivateMounts fails t unless it runs under [PrivateMounts]: a
// mount made outside would be seen by every corral agent on the host.
func RequirePrivateMounts(t testing.TB) {
	t.Helper()
	if os.Getenv(privateMountsEnv) == "" {
		t.Fatal("this test mounts a cgroup hierarchy: start it with `if !cgrouptest.PrivateMounts(t) { return }` so the mount stays in its own mount namespace")
	}
}

// MountV1 mounts a new cgroup v1 hierarchy with the given options (say
// "net_cls,net_prio") at a fresh temporary directory and unmounts it when
// the test ends. It skips the test, saying why, when the kernel refuses.
// Call it only from a test running under [PrivateMounts].
//
// A v1 controller can be in one hierarchy only: options must name
// controllers that are not mounted elsewhere, or exactly the set of an
// existing hierarchy. The kernel keeps an unmounted v1 hierarchy alive, so
// a later mount must use the same set again.
func MountV1(t testing.TB, options string) string {
	t.Helper()
	RequirePrivateMounts(t)
	dir := t.TempDir()
	if err := unix.Mount("corraltest", dir, "cgroup", 0, options); err != nil {
		t.Skipf("skipping: cannot mount cgroup v1 -o %s: %v", options, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
