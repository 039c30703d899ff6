package main

import (
	"os"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent"
	"github.com/corral-dev/corral/nodeagent/driver"
)

func main() {
	// First, before anything else in this process runs: when started as
	// the v1 re-exec shim, join the guest's cgroups and exec the guest.
	cgroupdriver.RunShimIfRequested()
	// Then, when started as a container's init: set up its namespaces,
	// root and /dev, and exec the container's command.
	driver.RunInitIfRequested()
	// Then, when started as a node agent's fencer: guard its lease and
	// freeze its guests when it runs out.
	nodeagent.RunFencerIfRequested()

	os.Exit(runProcess(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
