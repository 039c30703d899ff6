package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// QEMUConfig configures the qemu driver. Start from [DefaultQEMUConfig].
type QEMUConfig struct {
	// Binary is qemu-system-x86_64, looked up in PATH without a slash.
	Binary string
	// Accel is the accelerator setting: kvm, tcg or auto.
	Accel Accel
	// KVMDevice is the device auto probes and kvm uses.
	KVMDevice string
	// KVMProbeTimeout bounds [ProbeKVM] for auto.
	KVMProbeTimeout time.Duration
	// Machine is QEMU's machine type.
	Machine string
	// ImgBinary is qemu-img, which makes the overlays of disks.
	ImgBinary string
}

// DefaultQEMUConfig returns the settings the agent uses unless told
// otherwise.
func DefaultQEMUConfig() QEMUConfig {
	return QEMUConfig{
		Binary: "qemu-system-x86_64", Accel: AccelAuto, KVMDevice: "/dev/kvm",
		KVMProbeTimeout: 250 * time.Millisecond, Machine: "pc", ImgBinary: "qemu-img",
	}
}

// Validate reports settings [NewQEMU] would refuse.
func (c QEMUConfig) Validate() error {
	if _, err := ParseAccel(string(c.Accel)); err != nil {
		return err
	}
	if c.Binary == "" || c.Machine == "" || c.KVMDevice == "" || c.KVMProbeTimeout <= 0 || c.ImgBinary == "" {
		return fmt.Errorf("corral: qemu config: Binary, Machine, KVMDevice, ImgBinary and a positive KVMProbeTimeout are required")
	}
	return nil
}

// QEMU runs virtual machines with qemu-system-x86_64: the whole QEMU
// process in the guest's groups, each vCPU thread in its own child group
// of the cpu, cpuacct and cpuset groups and QEMU's other threads in an
// "emulator" child, as libvirt places them, QMP on a socket in the state directory,
// the serial console (and QEMU's own stderr) in the guest's log, the
// kernel booted directly or a disk image, -no-reboot so a guest that powers
// off or panics ends the instance.
type QEMU struct {
	base
	binary  string
	version string
	accel   Accel
	reason  string
}

// NewQEMU finds QEMU, reads its version and resolves the accelerator
// (probing KVM for auto). cfg must be valid.
func NewQEMU(cfg Config) (*QEMU, error) {
	qc := cfg.QEMU
	bin, err := exec.LookPath(qc.Binary)
	if err != nil {
		return nil, fmt.Errorf("corral: qemu: %w", err)
	}
	out, err := exec.Command(bin, "-version").Output()
	if err != nil {
		return nil, fmt.Errorf("corral: qemu: %s -version: %w", bin, err)
	}
	version, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(out)), "QEMU emulator version "), "\n")
	d := &QEMU{base: newBase(cgroupdriver.KindQEMU, cfg), binary: bin, version: version}
	switch qc.Accel {
	case AccelKVM:
		d.accel, d.reason = AccelKVM, "configured"
	case AccelTCG:
		d.accel, d.reason = AccelTCG, "configured"
	default:
		if err := ProbeKVM(qc.KVMDevice, qc.KVMProbeTimeout); err != nil {
			d.accel, d.reason = AccelTCG, err.Error()
		} else {
			d.accel, d.reason = AccelKVM, "probe passed"
		}
	}
	d.log.Info("qemu driver", "binary", bin, "version", version, "accel", d.accel, "why", d.reason)
	return d, nil
}

// Version is QEMU's version, as -version prints it.
func (d *QEMU) Version() string { return d.version }

// Accel is the accelerator guests run on, and AccelReason why.
func (d *QEMU) Accel() Accel { return d.accel }

// AccelReason says why [QEMU.Accel] was chosen: "configured", "probe
// passed", or the probe's error.
func (d *QEMU) AccelReason() string { return d.reason }

// qmpFD and consoleFD are the descriptor numbers of the QMP and serial
// console listening sockets in QEMU.
const (
	qmpFD     = 3
	consoleFD = 4
)

const mib = 1 << 20

// Args returns QEMU's arguments for spec (without the program name). It
// does no I/O.
func (d *QEMU) Args(spec *Spec) []string {
	mem := spec.MemoryBytes
	if mem <= 0 {
		mem = events.DefaultQEMUMemory
	}
	vcpus := max(spec.VCPUs, 1)
	args := []string{
		"-name", "guest=" + optEscape(spec.Guest.ID),
		"-machine", optEscape(d.cfg.QEMU.Machine),
		"-accel", string(d.accel),
		"-m", strconv.FormatInt((mem+mib-1)/mib, 10),
		"-smp", strconv.Itoa(vcpus),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-chardev", "socket,id=qmp,fd=" + strconv.Itoa(qmpFD) + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		// The serial console is a socket one client at a time may attach
		// to (guest console), and everything the guest writes on it also
		// goes to the log, attached or not.
		"-chardev", "socket,id=serial0,fd=" + strconv.Itoa(consoleFD) + ",server=on,wait=off,logfile=" + optEscape(spec.logPath()) + ",logappend=on",
		"-serial", "chardev:serial0",
		"-device", "virtio-balloon-pci,id=balloon0",
	}
	if spec.Kernel != "" {
		app := spec.Append
		if app == "" {
			app = DefaultAppend
		}
		args = append(args, "-kernel", spec.Kernel, "-append", app)
		if spec.Initrd != "" {
			args = append(args, "-initrd", spec.Initrd)
		}
	}
	if spec.Disk != "" {
		format := "raw"
		if strings.HasSuffix(spec.Disk, ".qcow2") {
			format = "qcow2"
		}
		args = append(args, "-drive", "file="+optEscape(spec.Disk)+",if=virtio,format="+format)
	}
	args = append(args, diskArgs(spec)...)
	args = append(args, netdevArgs(spec.Network, tapFD)...)
	if spec.Incoming != "" {
		args = append(args, "-S", "-incoming", spec.Incoming)
	}
	return args
}

// optEscape doubles commas, QEMU's escape inside an option list.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// checkReadable fails with ErrInvalidSpec unless path is a regular file
// this process can read.
func checkReadable(g cgroupdriver.Guest, what, path string) error {
	f, err := os.Open(path)
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil && !st.Mode().IsRegular() {
			err = fmt.Errorf("not a regular file")
		}
		if err == nil {
			_, err = f.Read(make([]byte, 1))
		}
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %s %s is not readable: %w", ErrInvalidSpec, g, what, path, err)
	}
	return nil
}

// Start starts QEMU in the guest's groups and returns once its QMP monitor
// answers and reports the VM running.
func (d *QEMU) Start(ctx context.Context, spec Spec) (*Instance, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	g := spec.Guest
	if spec.Kernel == "" && spec.Disk == "" && len(spec.Disks) == 0 {
		return nil, fmt.Errorf("%w: %s: a qemu guest needs a kernel or a disk image", ErrInvalidSpec, g)
	}
	for _, f := range []struct{ what, path string }{{"kernel", spec.Kernel}, {"initrd", spec.Initrd}, {"disk image", spec.Disk}} {
		if f.path == "" {
			continue
		}
		if err := checkReadable(g, f.what, f.path); err != nil {
			return nil, err
		}
	}
	if err := d.prepareDisks(ctx, &spec); err != nil {
		return nil, err
	}
	res := spec.Resources
	if res.MemoryHardLimit == nil {
		res.MemoryHardLimit = new(events.QEMUMemoryLimit(spec.MemoryBytes))
	}
	if res.Devices == nil {
		// The minimal set with /dev/kvm on a host that has it, as the
		// agent's read-back and live tuning compute it too. QEMU opens
		// no other device: its disks are image files, its network
		// (none today) would need /dev/net/tun as an extra device.
		res.Devices = &cgroupdriver.DeviceACL{}
	}
	return d.start(ctx, spec, res, nil, d.launch)
}

func (d *QEMU) launch(ctx context.Context, spec *Spec, logf *os.File) (*launched, error) {
	g := spec.Guest
	fail := func(err error) (*launched, error) { return nil, fmt.Errorf("%w: %s: %w", ErrStart, g, err) }
	// The driver makes the listening socket and hands it to QEMU: it can
	// be connected to before QEMU runs, and no poll for it is needed.
	sock, console := spec.qmpPath(), spec.consolePath()
	lnf, err := listenFile(sock)
	if err != nil {
		return fail(err)
	}
	defer lnf.Close()
	conf, err := listenFile(console)
	if err != nil {
		_ = os.Remove(sock)
		return fail(err)
	}
	defer conf.Close()
	files := []*os.File{lnf, conf} // fd 3 = qmpFD, 4 = consoleFD
	if spec.Network != nil {
		tap, err := openTap(ctx, spec.Network)
		if err != nil {
			_ = removeFiles(sock, console)
			return fail(err)
		}
		defer tap.Close()
		files = append(files, tap) // fd 5 = tapFD
	}
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := &exec.Cmd{
		Path:        d.binary,
		Args:        append([]string{d.binary}, d.Args(spec)...),
		Env:         []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Dir:         "/",
		Stdout:      logf,
		Stderr:      logf,
		ExtraFiles:  files,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cgroupdriver.WithMemPolicy(cmd, d.cfg.Cgroups.MemPolicyFor(spec.Resources))
	if err == nil {
		err = d.cfg.Cgroups.Start(cmd, g)
	}
	if err != nil {
		_ = removeFiles(sock, console)
		return fail(err)
	}
	lnf.Close()
	conf.Close()
	q := NewQMP(sock)
	status, err := q.Status(ctx)
	if err == nil && status != "running" && !(spec.Incoming != "" && status == "inmigrate") {
		err = fmt.Errorf("QEMU reports the VM %q, not running", status)
	}
	if err == nil {
		err = d.placeVCPUs(ctx, q, g, spec.Resources)
	}
	if err != nil {
		q.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = removeFiles(sock, console)
		return fail(fmt.Errorf("%w; QEMU said: %s", err, logTail(spec.logPath(), logStart, 2048)))
	}
	l := &launched{cmd: cmd, qmp: q, qmpSocket: sock, consoleSocket: console}
	if spec.Network != nil {
		l.hostIf = spec.Network.HostIf
	}
	return l, nil
}

// listenFile makes a listening unix socket at path (replacing a stale
// one) and returns it as a file to hand to QEMU: it can be connected to
// before QEMU runs, and no poll for it is needed.
func listenFile(path string) (*os.File, error) {
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		_ = os.Remove(path)
		return nil, err
	}
	return f, nil
}

// logTail returns up to n bytes the log got after offset from, trimmed.
func logTail(path string, from, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	from = max(from, st.Size()-n)
	b := make([]byte, st.Size()-from)
	if _, err := f.ReadAt(b, from); err != nil && !errors.Is(err, io.EOF) {
		return "(log unreadable: " + err.Error() + ")"
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return "(nothing)"
}

// Adopt re-attaches to a VM from its state record, QMP included. A QMP
// that does not answer now is not fatal: the client reconnects on use.
func (d *QEMU) Adopt(ctx context.Context, spec Spec) (*Instance, error) {
	return d.adopt(ctx, spec, func(ctx context.Context, rec *record, alive bool) *QMP {
		q := NewQMP(rec.QMPSocket)
		if !alive {
			return q
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := q.Status(qctx); err != nil {
			d.log.Warn("adopted VM does not answer on QMP yet", "guest", rec.Guest.String(), "err", err)
		}
		return q
	})
}
