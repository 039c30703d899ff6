package drivertest

import (
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// Config returns a driver configuration on the real host with a fresh
// cgroup partition that is removed (whatever is left in it killed) when
// the test ends; it skips t unless it runs as root with writable cgroups.
func Config(t testing.TB) driver.Config {
	t.Helper()
	rep := cgrouptest.RequireHost(t)
	return ConfigOn(t, cgrouptest.NewPartition(t, rep))
}

// ConfigOn returns a driver configuration on the real host whose groups
// live below partition (see cgrouptest.NewPartition). QEMU uses TCG, so
// tests never depend on the host's KVM, and logs are checked against their
// caps every 50ms.
func ConfigOn(t testing.TB, partition string) driver.Config {
	t.Helper()
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Partition = partition
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		t.Fatalf("cgroupdriver.New: %v", err)
	}
	cfg := driver.DefaultConfig()
	cfg.Cgroups = cg
	cfg.LogCheckInterval = 50 * time.Millisecond
	cfg.QEMU.Accel = driver.AccelTCG
	return cfg
}
