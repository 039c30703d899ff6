package nodeagent

import (
	"context"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// The agent's collaborators on its host, as small interfaces: the real
// ones are *cgroupdriver.Driver and the drivers of package driver (through
// [HostDrivers]); simtest has in-memory ones.

// Groups writes and reads the guests' control groups.
type Groups interface {
	// Apply writes r to g's groups and returns the writes it performed.
	Apply(g cgroupdriver.Guest, r cgroupdriver.Resources) ([]cgroupdriver.Write, error)
	// Observe reads back what r manages and says what drifted.
	Observe(g cgroupdriver.Guest, r cgroupdriver.Resources) ([]cgroupdriver.Observation, error)
	// Usage reads g's counters, all but block I/O's.
	Usage(g cgroupdriver.Guest) (cgroupdriver.Stats, error)
}

// Cleaner finds and removes groups the log does not name.
type Cleaner interface {
	Remove(ctx context.Context, g cgroupdriver.Guest) error
	RemoveOrphan(ctx context.Context, g cgroupdriver.Guest) error
	Orphans(known []cgroupdriver.Guest) ([]cgroupdriver.Guest, error)
}

// Cgroups is everything the agent does with control groups; Report says
// what the host has, for the node's registration.
type Cgroups interface {
	Groups
	Cleaner
	Report() cgroupdriver.Report
}

// Reserver moves the agent into its own group and caps the corral root
// with the reserve; *cgroupdriver.Driver is one. The agent needs it only
// with [Config.GroupPID] set, and checks for it in New.
type Reserver interface {
	Reserve(r cgroupdriver.Reservation, pid int) ([]cgroupdriver.Write, error)
}

// Drivers starts guests and re-attaches to the ones a previous agent
// started.
type Drivers interface {
	// Supports fails when no driver of the kind runs on this host.
	Supports(kind string) error
	Start(ctx context.Context, spec driver.Spec) (Instance, error)
	Adopt(ctx context.Context, spec driver.Spec) (Instance, error)
	// Versions names each driver this host runs and its version.
	Versions() map[string]string
}

// Instance is one running guest, as a driver returns it; *driver.Instance
// is the real one.
type Instance interface {
	PID() int
	Cgroups() []string
	Adopted() bool
	// Done is closed when the guest ended; Status then says how.
	Done() <-chan struct{}
	Status() (driver.ExitStatus, bool)
	Stop(ctx context.Context, timeout time.Duration) (driver.ExitStatus, error)
	Suspend(ctx context.Context) error
	Resume(ctx context.Context) error
	// Destroy kills the guest and removes its groups and records.
	Destroy(ctx context.Context) error
	// Release lets go of the guest without touching it.
	Release()
}

// HostDrivers adapts a *driver.Set to [Drivers].
type HostDrivers struct{ Set *driver.Set }

func (h HostDrivers) Supports(kind string) error {
	_, err := h.Set.For(kind)
	return err
}

func (h HostDrivers) Start(ctx context.Context, spec driver.Spec) (Instance, error) {
	i, err := h.Set.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return i, nil
}

func (h HostDrivers) Adopt(ctx context.Context, spec driver.Spec) (Instance, error) {
	i, err := h.Set.Adopt(ctx, spec)
	if err != nil {
		return nil, err
	}
	return i, nil
}

func (h HostDrivers) Versions() map[string]string { return h.Set.Versions() }

// Prepare lets the drivers ready their next start ([driver.Set.Prepare]).
func (h HostDrivers) Prepare() { h.Set.Prepare() }

// Unprepare ends what Prepare readied ([driver.Set.Unprepare]).
func (h HostDrivers) Unprepare() { h.Set.Unprepare() }

// preparer is [Drivers] that ready their next start in the background
// when asked; the agent asks once a pass is done, and has them end what
// they readied as it stops.
type preparer interface {
	Prepare()
	Unprepare()
}

var (
	_ Cgroups  = (*cgroupdriver.Driver)(nil)
	_ Reserver = (*cgroupdriver.Driver)(nil)
	_ Instance = (*driver.Instance)(nil)
)
