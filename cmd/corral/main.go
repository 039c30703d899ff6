package main

import (
	"os"

	"github.com/corral-dev/corral/cgroupdriver"
)

func main() {
	// First, before anything else in this process runs: when started as
	// the v1 re-exec shim, join the guest's cgroups and exec the guest.
	cgroupdriver.RunShimIfRequested()

	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
