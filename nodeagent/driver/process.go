package driver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/corral-dev/corral/cgroupdriver"
)

// Process runs a command inside the guest's groups, like Nomad's exec
// driver: no namespaces, no root file system of its own. The command is
// the leader of a new session and process group, so a stop reaches the
// whole tree it spawned, and when it ends whatever it left in its groups is
// killed. Its stdin is /dev/null, stdout and stderr the guest's log, its
// working directory /.
type Process struct{ base }

// NewProcess returns the process driver; cfg must be valid.
func NewProcess(cfg Config) *Process {
	return &Process{newBase(cgroupdriver.KindProcess, cfg)}
}

// Start starts spec.Command in the guest's groups and returns once it has
// been exec'd there.
func (d *Process) Start(ctx context.Context, spec Spec) (*Instance, error) {
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return nil, fmt.Errorf("%w: %s: a process guest needs a command", ErrInvalidSpec, spec.Guest)
	}
	// Resolve before creating anything, so a missing command costs nothing
	// and says so.
	path, err := exec.LookPath(spec.Command[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: command %q: %w", ErrInvalidSpec, spec.Guest, spec.Command[0], err)
	}
	res := spec.Resources
	if res.MemoryHardLimit == nil && spec.MemoryBytes > 0 {
		res.MemoryHardLimit = new(spec.MemoryBytes)
	}
	if res.Devices == nil {
		// A process needs no device beyond the minimal set: its stdin
		// and logs are opened by the agent, outside the group.
		res.Devices = &cgroupdriver.DeviceACL{}
	}
	return d.start(ctx, spec, res, nil, func(ctx context.Context, spec *Spec, logf *os.File) (*launched, error) {
		cmd := &exec.Cmd{
			Path:        path,
			Args:        spec.Command,
			Env:         spec.guestEnv(),
			Dir:         "/",
			Stdout:      logf,
			Stderr:      logf,
			SysProcAttr: &syscall.SysProcAttr{Setsid: true},
		}
		if err := cgroupdriver.WithMemPolicy(cmd, d.cfg.Cgroups.MemPolicyFor(spec.Resources)); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrStart, spec.Guest, err)
		}
		if err := d.cfg.Cgroups.Start(cmd, spec.Guest); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrStart, spec.Guest, err)
		}
		return &launched{cmd: cmd}, nil
	})
}

// Adopt re-attaches to a process guest from its state record.
func (d *Process) Adopt(ctx context.Context, spec Spec) (*Instance, error) {
	return d.adopt(ctx, spec, nil)
}
