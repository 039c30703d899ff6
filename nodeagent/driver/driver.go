package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
)

// Driver runs guests of one kind. Its methods may be called from any
// goroutine, concurrently for different guests; calls for one guest must
// not overlap (the agent serialises work per guest).
type Driver interface {
	// Kind is the kind of guest this driver runs.
	Kind() cgroupdriver.Kind
	// Start creates the guest's groups, writes its resources, starts it
	// inside them and returns once it runs there: a process or container
	// command has been exec'd, QEMU answers on QMP. It refuses a state
	// directory whose record names a guest still running. On error
	// nothing is left behind: no process, no groups, no record.
	Start(ctx context.Context, spec Spec) (*Instance, error)
	// Adopt re-attaches to the guest a previous agent process started,
	// from the record in spec.StateDir, and never starts anything. A guest
	// that ended meanwhile comes back as an Instance that has exited (the
	// status read from the record when a driver saw the end, else
	// [ErrExitUnknown]). It fails with [ErrNoRecord] when there is no
	// record.
	Adopt(ctx context.Context, spec Spec) (*Instance, error)
}

// Config configures the drivers of one host. Start from [DefaultConfig].
type Config struct {
	// Cgroups manages the guests' groups; required.
	Cgroups *cgroupdriver.Driver
	// Logger receives what the drivers do; nil discards.
	Logger *slog.Logger
	// LogCheckInterval is how often, at most, a running guest's log that
	// grew is checked against its cap, from one goroutine for all the
	// drivers of a [Set]; a log that does not grow is not checked (inotify),
	// and one inotify cannot watch is checked every interval.
	LogCheckInterval time.Duration
	// QEMU configures the qemu driver.
	QEMU QEMUConfig
	// SpareInit keeps one container init started ahead of need, once an
	// lxc guest that could use one was started, so that an lxc start
	// skips this binary's start-up (lxcspare.go); [Set.Prepare] starts
	// it.
	SpareInit bool

	// caps is the log check New shares between its drivers; a driver
	// built on its own has its own.
	caps *logCaps
}

// DefaultConfig returns the configuration the agent uses unless told
// otherwise; Cgroups must still be set.
func DefaultConfig() Config {
	return Config{LogCheckInterval: time.Second, QEMU: DefaultQEMUConfig(), SpareInit: true}
}

// Validate reports a configuration [New] would refuse.
func (c Config) Validate() error {
	if c.Cgroups == nil {
		return errors.New("corral: driver config: Cgroups is required")
	}
	if c.LogCheckInterval <= 0 {
		return fmt.Errorf("corral: driver config: LogCheckInterval %v must be positive", c.LogCheckInterval)
	}
	return c.QEMU.Validate()
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Set holds the drivers of one host, one per kind.
type Set struct {
	drivers     map[cgroupdriver.Kind]Driver
	unavailable map[cgroupdriver.Kind]error
	versions    map[string]string
}

// New builds the process, lxc and qemu drivers. A driver the host cannot
// run (qemu without its binary) does not fail New: [Set.For] returns
// [ErrDriverUnavailable] with the reason for it. For qemu, New resolves the
// accelerator, which for "auto" runs [ProbeKVM].
func New(cfg Config) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Set{
		drivers:     map[cgroupdriver.Kind]Driver{},
		unavailable: map[cgroupdriver.Kind]error{},
		versions:    map[string]string{},
	}
	cfg.caps = newLogCaps(cfg.LogCheckInterval)
	kernel := kernelRelease()
	s.drivers[cgroupdriver.KindProcess] = NewProcess(cfg)
	s.versions[string(cgroupdriver.KindProcess)] = kernel
	s.drivers[cgroupdriver.KindLXC] = NewLXC(cfg)
	s.versions[string(cgroupdriver.KindLXC)] = kernel
	q, err := NewQEMU(cfg)
	if err != nil {
		s.unavailable[cgroupdriver.KindQEMU] = err
	} else {
		s.drivers[cgroupdriver.KindQEMU] = q
		s.versions[string(cgroupdriver.KindQEMU)] = q.Version() + " " + string(q.Accel())
	}
	return s, nil
}

// For returns the driver for a guest definition's driver name ("process",
// "lxc", "qemu").
func (s *Set) For(kind string) (Driver, error) {
	k := cgroupdriver.Kind(kind)
	if d, ok := s.drivers[k]; ok {
		return d, nil
	}
	if err, ok := s.unavailable[k]; ok {
		return nil, fmt.Errorf("%w: %s: %w", ErrDriverUnavailable, kind, err)
	}
	return nil, fmt.Errorf("%w: %q: use process, lxc or qemu", ErrUnknownDriver, kind)
}

// Start starts spec with the driver its Guest.Kind names.
func (s *Set) Start(ctx context.Context, spec Spec) (*Instance, error) {
	d, err := s.For(string(spec.Guest.Kind))
	if err != nil {
		return nil, err
	}
	return d.Start(ctx, spec)
}

// Adopt adopts spec's guest with the driver its Guest.Kind names.
func (s *Set) Adopt(ctx context.Context, spec Spec) (*Instance, error) {
	d, err := s.For(string(spec.Guest.Kind))
	if err != nil {
		return nil, err
	}
	return d.Adopt(ctx, spec)
}

// preparer is a driver that readies its next start ahead of need.
type preparer interface{ Prepare() }

// Prepare lets each driver ready its next start in the background (the
// lxc driver's spare init, see [LXC.Prepare]). It never blocks; the agent
// calls it once a pass is done, so the work stays out of the starts' way.
func (s *Set) Prepare() {
	for _, d := range s.drivers {
		if p, ok := d.(preparer); ok {
			p.Prepare()
		}
	}
}

// unpreparer is a driver that ends what it readied ahead of need.
type unpreparer interface{ Unprepare() }

// Unprepare ends what Prepare readied (the lxc driver's spare init, see
// [LXC.Unprepare]) and waits, for a few seconds at most, until it is
// gone. The agent calls it as it stops; no driver readies anything after.
func (s *Set) Unprepare() {
	for _, d := range s.drivers {
		if p, ok := d.(unpreparer); ok {
			p.Unprepare()
		}
	}
}

// Versions maps each available driver to its version, as the node
// registration reports it: the kernel release for process and lxc, QEMU's
// version and accelerator for qemu.
func (s *Set) Versions() map[string]string {
	out := make(map[string]string, len(s.versions))
	for k, v := range s.versions {
		out[k] = v
	}
	return out
}
