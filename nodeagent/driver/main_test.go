package driver_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// helperEnv makes the test binary act as a guest program or as a
// short-lived agent instead of running tests (see runHelper).
const helperEnv = "CORRAL_DRIVER_HELPER"

func TestMain(m *testing.M) {
	cgroupdriver.RunShimIfRequested()
	driver.RunInitIfRequested()
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

// runHelper is a guest program or an agent:
//   - "ignore-term": ignore SIGTERM, say "ready", block.
//   - "alloc": allocate and touch memory in 8 MiB steps until killed.
//   - "agent": start a process guest from the environment (see agentEnv),
//     print its pid, block until killed (as an agent killed with -9).
func runHelper(mode string) int {
	switch mode {
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		select {}
	case "alloc":
		var keep [][]byte
		for range 128 {
			b := make([]byte, 8<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep)*8, "MiB without being killed")
		return 0
	case "agent":
		return runAgent()
	}
	fmt.Fprintln(os.Stderr, "unknown helper", mode)
	return 2
}

func runAgent() int {
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Partition = os.Getenv("AGENT_PARTITION")
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	cfg := driver.DefaultConfig()
	cfg.Cgroups = cg
	d := driver.NewProcess(cfg)
	spec := driver.Spec{
		Guest:    cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: os.Getenv("AGENT_GUEST")},
		Command:  []string{"sleep", "1000"},
		StateDir: os.Getenv("AGENT_STATE"),
	}
	inst, err := d.Start(context.Background(), spec)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("pid", inst.PID())
	select {}
}

// testCtx is a context for one test step.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// uniqueID returns a guest ID unique to this test run.
func uniqueID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%1e9)
}

// spec returns a spec for a new guest of kind with its own state directory.
func spec(t testing.TB, kind cgroupdriver.Kind, prefix string) driver.Spec {
	return driver.Spec{
		Guest:    cgroupdriver.Guest{Kind: kind, ID: uniqueID(prefix)},
		StateDir: t.TempDir(),
	}
}

// start starts s and destroys the guest when the test ends.
func start(t testing.TB, d driver.Driver, s driver.Spec) *driver.Instance {
	t.Helper()
	inst, err := d.Start(testCtx(t), s)
	if err != nil {
		t.Fatalf("Start %s: %v", s.Guest, err)
	}
	t.Cleanup(func() { destroy(t, inst) })
	return inst
}

func destroy(t testing.TB, inst *driver.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := inst.Destroy(ctx); err != nil && !errors.Is(err, driver.ErrReleased) {
		t.Errorf("Destroy %s: %v", inst.Guest(), err)
	}
}

// wait waits for the guest to end.
func wait(t testing.TB, inst *driver.Instance) driver.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := inst.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait %s: %v", inst.Guest(), err)
	}
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-time.After(2 * time.Millisecond) // poll interval
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitLog waits until the guest's log contains s.
func waitLog(t testing.TB, inst *driver.Instance, s string, timeout time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%q in the log of %s", s, inst.Guest()), timeout, func() bool {
		b, _ := os.ReadFile(inst.LogPath())
		return strings.Contains(string(b), s)
	})
}

// checkInGroups checks that pid is in the guest's group in every
// hierarchy.
func checkInGroups(t testing.TB, inst *driver.Instance, pid int) {
	t.Helper()
	for _, dir := range inst.Cgroups() {
		procs := strings.Fields(readFile(t, filepath.Join(dir, "cgroup.procs")))
		// A QEMU guest's threads are in its vcpuN and emulator groups.
		if b, err := os.ReadFile(filepath.Join(dir, "emulator", "cgroup.procs")); err == nil {
			procs = append(procs, strings.Fields(string(b))...)
		}
		if !slices.Contains(procs, strconv.Itoa(pid)) {
			t.Errorf("%s/cgroup.procs = %v, lacks %d", dir, procs, pid)
		}
	}
}

// checkGone checks that nothing of the guest is left: no groups, no
// record, no socket, and the pid (if any) no longer runs.
func checkGone(t testing.TB, cfg driver.Config, s driver.Spec, pid int) {
	t.Helper()
	dirs, _ := cfg.Cgroups.Paths(s.Guest)
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("group %s left behind (%v)", d, err)
		}
	}
	for _, f := range []string{driver.RecordFile, driver.QMPFile} {
		if _, err := os.Stat(filepath.Join(s.StateDir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left in the state directory (%v)", f, err)
		}
	}
	if pid > 0 {
		if err := syscall.Kill(pid, 0); err == nil {
			// It may be a zombie nobody has reaped; a live guest is a bug.
			if st := procState(pid); st != "Z" {
				t.Errorf("pid %d still runs (state %s)", pid, st)
			}
		}
	}
}

// procState returns the state letter of pid from /proc/PID/stat.
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}

// groupFile reads file from the guest's group in the hierarchy that has
// it.
func groupFile(t testing.TB, inst *driver.Instance, file string) string {
	t.Helper()
	for _, dir := range inst.Cgroups() {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("no hierarchy of %s has %s", inst.Guest(), file)
	return ""
}

// freezerState reads the guest's freezer state as "FROZEN" or "THAWED",
// from v1 freezer.state or v2 cgroup.freeze.
func freezerState(t testing.TB, inst *driver.Instance) string {
	t.Helper()
	for _, dir := range inst.Cgroups() {
		if b, err := os.ReadFile(filepath.Join(dir, "freezer.state")); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	if groupFile(t, inst, "cgroup.freeze") == "1" {
		return "FROZEN"
	}
	return "THAWED"
}

// lines returns the lines of the log.
func lines(t testing.TB, inst *driver.Instance) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(strings.NewReader(readFile(t, inst.LogPath())))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func self(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}
