package driver

import (
	"fmt"
	"path/filepath"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// Files a driver keeps in a guest's state directory.
const (
	RecordFile = "state.json" // the state record Adopt reads
	QMPFile    = "qmp.sock"   // the QMP socket of a qemu guest
	LogFile    = "guest.log"  // output or serial console, size-capped
	// ConsoleFile is the serial console socket of a qemu guest: one
	// client at a time, bytes both ways (guest console).
	ConsoleFile = "console.sock"
)

// DefaultLogMaxBytes caps a guest's log when its Spec sets no cap.
const DefaultLogMaxBytes = 1 << 20

// Spec is everything a driver needs to start one guest. Fields a kind does
// not use are ignored.
type Spec struct {
	// Guest names the guest and its groups: <partition>/corral/<kind>/<id>.
	// Its Kind picks the driver.
	Guest cgroupdriver.Guest

	// Command is the program and its arguments. process: required, looked
	// up in the agent's PATH when it has no slash. lxc: PID 1 of the
	// container, looked up in the container's PATH; /bin/sh when empty.
	Command []string
	// Env is added to the environment of a process or container command,
	// which otherwise holds only PATH, HOME and CORRAL_GUEST (and container
	// for lxc): guests never inherit the agent's environment.
	Env []string
	// Hostname is the container's host name; the guest ID when empty.
	Hostname string

	// Rootfs is the container's root directory (lxc, required). It is
	// the read-only lower layer of the container's root: the container's
	// writes go to its own layer in StateDir.
	Rootfs string
	// CapAdd and CapDrop change the capabilities an lxc container keeps
	// from [events.DefaultContainerCapabilities] (names as
	// [events.CanonicalCapability] accepts them; ALL for every one).
	CapAdd, CapDrop []string
	// IDMap, when set, gives an lxc container its own user namespace
	// mapping these uids and gids to the host's (see lxcuserns.go and
	// [events.DefaultIDMap]); without it the container's root is the
	// host's.
	IDMap []events.IDRange
	// Kernel, Initrd and Append boot a qemu guest directly; Disk is a disk
	// image attached as a virtio drive (raw, or qcow2 by its .qcow2
	// suffix). A qemu guest needs a Kernel or a Disk. Append defaults to
	// [DefaultAppend].
	Kernel, Initrd, Append, Disk string
	// Incoming starts a qemu guest as the target of a live migration:
	// QEMU waits, paused, for the stream on this URI ("tcp:HOST:PORT")
	// and stays paused once it has it, until [QMP.Cont] (migrate.go).
	Incoming string
	// Disks are attached with virtio-blk after Disk, each over an overlay
	// of its own in StateDir (see [OverlayPath]); their base images are
	// never written.
	Disks []events.GuestDisk

	// MemoryBytes is the guest's memory: the RAM of a qemu guest (default
	// 128 MiB) and, unless Resources.MemoryHardLimit is set, the memory
	// limit of its groups (for qemu with headroom, see [events.QEMUMemoryLimit]).
	MemoryBytes int64
	// VCPUs is the number of virtual CPUs of a qemu guest (default 1).
	VCPUs int

	// Resources are written to the guest's groups before it runs. A guest
	// of any kind without a device ACL gets the minimal one
	// ([cgroupdriver.MinimalDeviceRules]; /dev/kvm only for qemu on a host
	// with KVM); every other device is denied.
	Resources cgroupdriver.Resources

	// Network, when set, gives the guest an interface on the node's
	// bridge (lxc and qemu; see [Network]).
	Network *Network

	// StateDir is the guest's own directory; created when missing. It
	// must be short enough for a socket path (QMPFile) below it.
	StateDir string
	// LogMaxBytes caps the log; [DefaultLogMaxBytes] when zero.
	LogMaxBytes int64
}

// DefaultAppend is the kernel command line of a directly booted qemu guest:
// the console on the first serial port, which is the guest's log, and a
// panic ends the VM instead of hanging it.
const DefaultAppend = "console=ttyS0 panic=-1"

// SpecFor builds the Spec of guest id from its definition (as the event
// log has it) and the state directory the agent gave it: the command,
// root file system (a disk image for qemu), kernel, initrd, memory, vCPUs
// and cpu_shares. The agent adds tuning the log holds to Resources.
func SpecFor(id string, def *events.GuestDefined, stateDir string) Spec {
	s := Spec{
		Guest:       cgroupdriver.Guest{Kind: cgroupdriver.Kind(def.Driver), ID: id, Partition: def.Partition},
		Command:     append([]string(nil), def.Command...),
		Hostname:    def.Name,
		Kernel:      def.Kernel,
		Initrd:      def.Initrd,
		MemoryBytes: def.MemoryBytes,
		VCPUs:       def.VCPUs,
		CapAdd:      append([]string(nil), def.CapAdd...),
		CapDrop:     append([]string(nil), def.CapDrop...),
		IDMap:       append([]events.IDRange(nil), def.IDMap...),
		StateDir:    stateDir,
		Disks:       append([]events.GuestDisk(nil), def.Disks...),
	}
	if def.Driver == events.DriverQEMU {
		s.Disk = def.Rootfs
	} else {
		s.Rootfs = def.Rootfs
	}
	if def.CPUShares > 0 {
		s.Resources.CPUShares = new(uint64(def.CPUShares))
	}
	return s
}

// validate checks what can be checked without touching the host.
func (s *Spec) validate() error {
	if err := s.Guest.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if s.StateDir == "" || !filepath.IsAbs(s.StateDir) {
		return fmt.Errorf("%w: %s: state directory %q must be an absolute path", ErrInvalidSpec, s.Guest, s.StateDir)
	}
	// sockaddr_un holds 108 bytes including the terminating NUL; only a
	// qemu guest has a socket there.
	if n := len(filepath.Join(s.StateDir, ConsoleFile)); n > 107 && s.Guest.Kind == cgroupdriver.KindQEMU {
		return fmt.Errorf("%w: %s: state directory %q is too long for a socket path below it (%d bytes, at most 107)", ErrInvalidSpec, s.Guest, s.StateDir, n)
	}
	if err := s.Network.validate(s.Guest); err != nil {
		return err
	}
	if s.MemoryBytes < 0 || s.VCPUs < 0 || s.LogMaxBytes < 0 {
		return fmt.Errorf("%w: %s: memory (%d), vcpus (%d) and log cap (%d) must not be negative", ErrInvalidSpec, s.Guest, s.MemoryBytes, s.VCPUs, s.LogMaxBytes)
	}
	return nil
}

func (s *Spec) logPath() string     { return filepath.Join(s.StateDir, LogFile) }
func (s *Spec) recordPath() string  { return filepath.Join(s.StateDir, RecordFile) }
func (s *Spec) qmpPath() string     { return filepath.Join(s.StateDir, QMPFile) }
func (s *Spec) consolePath() string { return filepath.Join(s.StateDir, ConsoleFile) }

func (s *Spec) logMax() int64 {
	if s.LogMaxBytes > 0 {
		return s.LogMaxBytes
	}
	return DefaultLogMaxBytes
}

func (s *Spec) hostname() string {
	if s.Hostname != "" {
		return s.Hostname
	}
	return s.Guest.ID
}

// guestEnv is the environment of a process or container command.
func (s *Spec) guestEnv(extra ...string) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/",
		"CORRAL_GUEST=" + s.Guest.ID,
	}
	env = append(env, extra...)
	return append(env, s.Env...)
}

// capabilities returns the numbers of the capabilities a container keeps.
func (s *Spec) capabilities() ([]int, error) {
	add, err := events.CanonicalCapabilities("cap_add", s.CapAdd)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSpec, s.Guest, err)
	}
	drop, err := events.CanonicalCapabilities("cap_drop", s.CapDrop)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidSpec, s.Guest, err)
	}
	return events.ContainerCapabilities(add, drop), nil
}
