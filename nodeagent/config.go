package nodeagent

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/network"
)

// ErrInvalidConfig wraps every refusal of a [Config].
var ErrInvalidConfig = errors.New("corral: invalid agent configuration")

// Config configures an agent. Start from [DefaultConfig].
type Config struct {
	// NodeID is this host's node ID in the cluster, a valid guest-style
	// ID ([a-z0-9][a-z0-9-]{0,62}).
	NodeID string
	// StateDir holds the node secret and one directory per guest,
	// <StateDir>/guests/<id>. It must be absolute. A qemu guest's QMP
	// socket lives in its directory, so with a long StateDir and a long
	// guest ID a qemu guest fails to start, saying why (socket paths are
	// at most 107 bytes); /var/lib/corral leaves room for any ID.
	StateDir string
	// Labels are sent with the registration, for placement constraints.
	Labels map[string]string
	// CPUs and MemoryBytes are the host's capacity as registered; zero
	// means what this machine has (runtime.NumCPU, /proc/meminfo).
	CPUs        int
	MemoryBytes int64
	// ReserveCPUs and ReserveMemoryBytes are kept back for the host: the
	// scheduler places guests in what is left and, with GroupPID set, the
	// host enforces it.
	ReserveCPUs        int
	ReserveMemoryBytes int64
	// GroupPID is the process the agent moves into its own group,
	// <partition>/corral/agent in every hierarchy, when Run starts and
	// before it starts its fencer, which inherits the group. The corral
	// root above it, which holds the agent, the fencer and every guest, is
	// then capped at the capacity minus the reserve (a memory hard limit;
	// a CFS quota of CPUs minus ReserveCPUs), and a limit an earlier run
	// set is lifted where no reserve is given, as libvirtd's reserved group
	// does for it (cgroupdriver.ReservationFor). cmd passes os.Getpid().
	//
	// 0 leaves the agent where it was started and the reserve a number
	// only the scheduler counts: what tests running the agent inside the
	// test binary need, whose process must not end up in a partition the
	// test removes.
	GroupPID int

	// HeartbeatInterval is how often the agent tells the coordinator it
	// is alive, and renews its lease. The default, 3 s, lets three
	// heartbeats fail before the default fence timeout; each one wakes the
	// agent and renews the lease, a fixed part of an idle agent's cost
	// (BenchmarkAgentIdle: 100 guests at a 10 s usage interval cost about
	// 170 µs per guest per interval with 1 s, 120 with 3 s, when the lease
	// was still a symlink made anew every heartbeat).
	HeartbeatInterval time.Duration
	// FenceTimeout is how long heartbeats may fail before the agent
	// freezes its guests. It must be shorter than the coordinator's
	// node-down timeout, which the coordinator checks at registration.
	FenceTimeout time.Duration
	// UsageInterval is how often one usage report covering every guest
	// is sent. The same pass over the guests reads back the knobs the
	// agent applied to each, and writes back and reports as drift what
	// was changed behind its back: drift is healed within one interval.
	UsageInterval time.Duration
	// ResyncInterval is how often the agent reconciles without being
	// notified (healing what a lost update or a failed action left
	// undone), reads its partitions' limits back and re-applies its
	// traffic shaping.
	ResyncInterval time.Duration
	// OrphanInterval is how often, at most, a host at rest is searched
	// for groups and state directories the log does not name (invariant
	// 7). The search also runs at start and in every pass that follows
	// one that acted, which is when the agent could have left one behind.
	OrphanInterval time.Duration
	// StopTimeout is how long a graceful stop may take before the guest
	// is killed.
	StopTimeout time.Duration
	// MigrationHost is the address a target QEMU listens on for a live
	// migration, reachable from the other agents; 127.0.0.1 when empty.
	// MigrationSwitchTimeout bounds how long a source whose transfer
	// completed waits for the target to switch over before it aborts
	// (30s when 0); MigrationMaxBandwidth caps the transfer in bytes per
	// second (QEMU's default when 0). See migrate.go.
	MigrationHost          string
	MigrationSwitchTimeout time.Duration
	MigrationMaxBandwidth  int64
	// BalloonTimeout is how long a guest may take to come within
	// tolerance of a new balloon target (virsh setmem) before the agent
	// reports guest.balloon_noncompliant. The balloon is sampled on the
	// usage interval, so the report comes at most one interval later.
	BalloonTimeout time.Duration

	// ShapeInterfaces are the interfaces Deps.Shaper shapes, and
	// Shaping, when set, says why this host cannot shape (no nft); both
	// go into the registration, so the coordinator refuses bandwidth
	// this node cannot apply.
	ShapeInterfaces []string
	Shaping         string

	// Network is the node's guest network (a bridge, its range, NAT);
	// Bridge "" for none. Guests defined with --network bridge need it.
	Network network.Config

	// Fencer fences the guests even when the agent process is dead.
	Fencer FencerConfig
}

// FencerConfig configures the fencer: a process of the agent's binary
// that freezes every guest once the agent has not renewed its lease for
// FenceTimeout, whether the agent is cut off, stopped or dead (fencer.go).
type FencerConfig struct {
	// Command starts the fencer: a program (and its first arguments) that
	// calls [RunFencerIfRequested] first thing, normally the agent's own
	// binary. Empty means no fencer: only a live agent then fences.
	Command []string
	// Poll is how often, at most [MaxFencerPoll], a fencer whose lease
	// ran out reads it again and freezes again; at rest it sleeps until
	// the lease's deadline. A guest runs at most FenceTimeout + Poll after
	// the last heartbeat that succeeded.
	Poll time.Duration
}

// DefaultConfig returns the settings the agent uses unless told otherwise;
// NodeID and StateDir must still be set.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: 3 * time.Second,
		FenceTimeout:      10 * time.Second,
		UsageInterval:     10 * time.Second,
		ResyncInterval:    5 * time.Second,
		OrphanInterval:    time.Minute,
		StopTimeout:       10 * time.Second,
		BalloonTimeout:    30 * time.Second,
		Fencer:            FencerConfig{Poll: MaxFencerPoll},
	}
}

// Validate reports a configuration New would refuse.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	if err := cgroupdriver.ValidateGuestID(c.NodeID); err != nil {
		bad("node ID", "%v", err)
	}
	switch {
	case c.StateDir == "" || !filepath.IsAbs(c.StateDir):
		bad("state directory", "%q must be an absolute path", c.StateDir)
	}
	if c.CPUs < 0 || c.MemoryBytes < 0 {
		bad("capacity", "CPUs (%d) and memory (%d) must not be negative (0: detect)", c.CPUs, c.MemoryBytes)
	}
	if c.ReserveCPUs < 0 || c.ReserveMemoryBytes < 0 {
		bad("reserve", "CPUs (%d) and memory (%d) must not be negative", c.ReserveCPUs, c.ReserveMemoryBytes)
	}
	if c.GroupPID < 0 {
		bad("group pid", "%d must be a process ID, or 0 to leave the agent where it was started", c.GroupPID)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat interval", c.HeartbeatInterval},
		{"fence timeout", c.FenceTimeout},
		{"usage interval", c.UsageInterval},
		{"resync interval", c.ResyncInterval},
		{"orphan interval", c.OrphanInterval},
		{"stop timeout", c.StopTimeout},
		{"balloon timeout", c.BalloonTimeout},
	} {
		if d.v <= 0 {
			bad(d.name, "%v must be positive", d.v)
		}
	}
	if c.HeartbeatInterval > 0 && c.FenceTimeout > 0 && c.FenceTimeout < 2*c.HeartbeatInterval {
		bad("fence timeout", "%v must be at least two heartbeat intervals (%v), or one late heartbeat fences the node", c.FenceTimeout, 2*c.HeartbeatInterval)
	}
	if err := c.Network.Validate(); err != nil {
		bad("network", "%v", err)
	}
	if len(c.Fencer.Command) > 0 {
		switch {
		case c.Fencer.Command[0] == "":
			bad("fencer", "the command has no program")
		case c.Fencer.Poll <= 0 || c.Fencer.Poll > MaxFencerPoll:
			bad("fencer poll", "%v must be positive and at most %v (the coordinator counts on it)", c.Fencer.Poll, MaxFencerPoll)
		case c.FenceTimeout > 0 && c.Fencer.Poll > c.FenceTimeout/2:
			bad("fencer poll", "%v must be at most half the fence timeout (%v)", c.Fencer.Poll, c.FenceTimeout)
		}
	}
	return errors.Join(errs...)
}
