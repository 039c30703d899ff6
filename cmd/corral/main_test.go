package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// corralBin is the binary under test, built once by TestMain.
var corralBin string

func TestMain(m *testing.M) {
	// The drivers run the current binary as a cgroup shim and a container
	// init: in a driver-alone benchmark that binary is this test binary.
	cgroupdriver.RunShimIfRequested()
	driver.RunInitIfRequested()
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		return m.Run() // fuzz workers run only the fuzz target
	}
	dir, err := os.MkdirTemp("", "corral-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	corralBin = filepath.Join(dir, "corral")
	args := []string{"build", "-o", corralBin}
	if raceEnabled {
		// The daemons under test are then race-checked too.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build corral: %v\n", err)
		return 1
	}
	return m.Run()
}
