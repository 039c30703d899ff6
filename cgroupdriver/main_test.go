package cgroupdriver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// helperEnv makes the test binary act as a small guest program instead of
// running tests (see runHelper).
const helperEnv = "CORRAL_CGROUPDRIVER_HELPER"

func TestMain(m *testing.M) {
	cgroupdriver.RunShimIfRequested()
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runHelper is a guest program. "open": open each path read-only and print
// "<path> ok" or "<path> <errno name>"; "openrw" the same read-write;
// "hammer" see hammerDevices.
func runHelper(mode string, args []string) int {
	switch mode {
	case "open":
		for _, p := range args {
			f, err := os.Open(p)
			switch {
			case err == nil:
				f.Close()
				fmt.Println(p, "ok")
			case errors.Is(err, syscall.EPERM):
				fmt.Println(p, "EPERM")
			default:
				fmt.Println(p, err)
			}
		}
		return 0
	case "hold":
		return holdMemory(args)
	case "openrw":
		return openDevices(os.O_RDWR, args)
	case "hammer":
		return hammerDevices(args)
	case "threads":
		return lockedThreads(args)
	case "self":
		return reportSelf()
	}
	fmt.Fprintln(os.Stderr, "unknown helper", mode)
	return 2
}

// hostDriver returns a driver on the real host with a fresh partition that
// is removed when the test ends.
func hostDriver(t *testing.T) (*cgroupdriver.Driver, cgroupdriver.Report) {
	t.Helper()
	rep := cgrouptest.RequireHost(t)
	return hostDriverFor(t, rep), rep
}

func hostDriverFor(t testing.TB, rep cgroupdriver.Report) *cgroupdriver.Driver {
	t.Helper()
	cfg := cgroupdriver.DefaultConfig()
	cfg.Report = &rep
	cfg.Partition = cgrouptest.NewPartition(t, rep)
	d, err := cgroupdriver.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func create(t *testing.T, d *cgroupdriver.Driver, id string) cgroupdriver.Guest {
	t.Helper()
	g := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: id}
	if err := d.Create(g); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return g
}

// start runs name args... inside g and arranges for it to be killed and
// reaped when the test ends.
func start(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest, env []string, name string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Children that outlive the command keep its output pipe open.
	cmd.WaitDelay = 2 * time.Second
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := d.Start(cmd, g); err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, &out
}

// run starts a command in g and waits for it.
func run(t *testing.T, d *cgroupdriver.Driver, g cgroupdriver.Guest, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd, out := start(t, d, g, env, name, args...)
	err := cmd.Wait()
	return out.String(), err
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-time.After(time.Millisecond)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func readHost(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// blockDevice finds a block device of the host to deny and allow: one this
// test process may open (a security module may forbid raw disks; on the CI
// host /dev/vda fails with EPERM even outside any group).
func blockDevice(t *testing.T) (path string, rule cgroupdriver.DeviceRule) {
	t.Helper()
	for _, p := range []string{"/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/loop0"} {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			t.Logf("not testing with %s: %v", p, err)
			continue
		}
		f.Close()
		return p, cgroupdriver.DeviceRule{Type: 'b', Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)), Access: "r"}
	}
	t.Skip("skipping: no block device found to test the devices ACL with")
	return "", cgroupdriver.DeviceRule{}
}
