package driver_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// probeScript defines probe NAME CMD...: it runs CMD and prints
// "NAME=allowed" or "NAME=refused", then what CMD said.
const probeScript = `probe() { n=$1; shift; if out=$("$@" 2>&1); then echo "$n=allowed $out"; else echo "$n=refused $out"; fi; }; `

// probes runs a container with the probe script followed by script and
// returns what each probe printed, by name.
func probes(t *testing.T, s driver.Spec, script string) (map[string]string, string) {
	t.Helper()
	s.Command = []string{"/bin/sh", "-c", probeScript + script}
	inst := start(t, driver.NewLXC(drivertest.Config(t)), s)
	if st := wait(t, inst); st.Code != 0 {
		t.Fatalf("status %v\n%s", st, readFile(t, inst.LogPath()))
	}
	log := readFile(t, inst.LogPath())
	got := map[string]string{}
	for _, line := range strings.Split(log, "\n") {
		if name, rest, ok := strings.Cut(line, "="); ok && !strings.ContainsAny(name, " :") {
			got[name] = rest
		}
	}
	return got, log
}

// capMask is the hex mask /proc/PID/status shows for a set of
// capability numbers.
func capMask(caps []int) string {
	var m uint64
	for _, c := range caps {
		m |= 1 << c
	}
	return fmt.Sprintf("%016x", m)
}

// TestLXCBreakOut tries, from inside a default container, what a
// container must never do to its host, and checks that each is refused:
// mknod of a block device, mount (tmpfs, a cgroup hierarchy, and from a
// new user namespace), writing the host's cgroup files (through
// /sys/fs/cgroup, by the path /proc/self/cgroup gives, and by the host
// path of its own group), loading a kernel module, writing kernel
// settings and the host name, reboot, and holding a capability outside
// the default set. The positive controls (a write to its own root, a
// fifo, chown, reading /proc/sys) show the probes can succeed.
func TestLXCBreakOut(t *testing.T) {
	s := spec(t, cgroupdriver.KindLXC, "ct-jail")
	s.Rootfs = drivertest.Rootfs(t)
	checkBreakOut(t, s)
}

// checkBreakOut runs TestLXCBreakOut's probes in container s.
func checkBreakOut(t *testing.T, s driver.Spec) {
	rootfs := s.Rootfs
	cfg := drivertest.Config(t)
	hostDirs, err := cfg.Cgroups.Paths(s.Guest)
	if err != nil || len(hostDirs) == 0 {
		t.Fatalf("paths of %s: %v %v", s.Guest, hostDirs, err)
	}
	var hostTargets []string
	for _, d := range hostDirs {
		hostTargets = append(hostTargets, d+"/cgroup.procs", filepath.Dir(d)+"/cgroup.procs")
	}
	got, log := probes(t, s, strings.Join([]string{
		`mkdir -p /tmp/m`,
		`probe mknod-block mknod /tmp/sda b 8 0`,
		`probe mknod-char mknod /tmp/mem c 1 1`,
		`probe mount-tmpfs mount -t tmpfs none /tmp/m`,
		`probe mount-cgroup mount -t cgroup -o memory cgroup /tmp/m`,
		`probe mount-userns unshare -U -r -m mount -t tmpfs none /tmp/m`,
		`probe remount-proc-sys mount -o remount,rw /proc/sys`,
		`probe cgroup-sysfs sh -c 'echo $$ >/sys/fs/cgroup/cgroup.procs'`,
		`probe cgroup-self sh -c 'p=$(sed -n "s/^[0-9]*:memory://p" /proc/self/cgroup); echo $$ >/sys/fs/cgroup/memory$p/../cgroup.procs'`,
		`probe cgroup-host sh -c 'for f in ` + strings.Join(hostTargets, " ") + `; do echo $$ >$f && exit 0; done; exit 1'`,
		`dd if=/dev/zero of=/tmp/x.ko bs=1k count=4 2>/dev/null`,
		`probe insmod insmod /tmp/x.ko`,
		`probe modprobe-rm rmmod loop`,
		`probe proc-hostname sh -c 'echo evil >/proc/sys/kernel/hostname'`,
		`probe proc-sysrq sh -c 'echo h >/proc/sysrq-trigger'`,
		`probe sethostname hostname evil`,
		`probe reboot reboot -f`,
		// Positive controls.
		`probe write-root sh -c 'echo hi >/etc/corral-probe && cat /etc/corral-probe'`,
		`probe fifo mknod /tmp/fifo p`,
		`probe chown chown 1:1 /tmp/fifo`,
		`probe read-proc-sys cat /proc/sys/kernel/ostype`,
		`probe cgroup-view sh -c "tr '\\n' ' ' </proc/self/cgroup"`,
		`grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status`,
	}, "; "))
	t.Log(log)
	want := map[string]string{
		"mknod-block": "refused", "mknod-char": "refused", "mount-tmpfs": "refused", "mount-cgroup": "refused",
		"mount-userns": "refused", "remount-proc-sys": "refused", "cgroup-sysfs": "refused", "cgroup-self": "refused",
		"cgroup-host": "refused", "insmod": "refused", "modprobe-rm": "refused", "proc-hostname": "refused",
		"sethostname": "refused", "reboot": "refused",
		"write-root": "allowed", "fifo": "allowed", "chown": "allowed", "read-proc-sys": "allowed", "cgroup-view": "allowed",
	}
	if _, err := os.Stat("/proc/sysrq-trigger"); err == nil {
		want["proc-sysrq"] = "refused"
	}
	for name, verdict := range want {
		if v, _, _ := strings.Cut(got[name], " "); v != verdict {
			t.Errorf("%s: %q, want %s", name, got[name], verdict)
		}
	}
	// The refusals that matter come from the kernel's checks, not from a
	// missing tool: each says why.
	for name, why := range map[string]string{
		"mknod-block": "Operation not permitted", "mount-tmpfs": "permission denied", // busybox says EPERM so
		"mount-userns": "Operation not permitted", "insmod": "Operation not permitted",
		"proc-hostname": "Read-only file system",
	} {
		if !strings.Contains(got[name], why) {
			t.Errorf("%s: %q, want %q", name, got[name], why)
		}
	}
	if strings.Contains(got["cgroup-view"], "/corral/") || !strings.Contains(got["cgroup-view"], ":memory:/") {
		t.Errorf("the container's /proc/self/cgroup is not its own root: %s", got["cgroup-view"])
	}
	caps := capMask(events.ContainerCapabilities(nil, nil))
	for _, f := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd"} {
		if !strings.Contains(log, f+":\t"+caps+"\n") {
			t.Errorf("%s is not the default set %s:\n%s", f, caps, log)
		}
	}
	for _, line := range []string{"CapAmb:\t0000000000000000\n", "NoNewPrivs:\t1\n", "Seccomp:\t2\n"} {
		if !strings.Contains(log, line) {
			t.Errorf("the container's status lacks %q", line)
		}
	}
	for _, d := range hostDirs {
		if b, err := os.ReadFile(filepath.Dir(d) + "/cgroup.procs"); err == nil && strings.TrimSpace(string(b)) != "" {
			t.Errorf("%s/cgroup.procs holds %q", filepath.Dir(d), b)
		}
	}
	if _, err := os.Stat(filepath.Join(rootfs, "etc/corral-probe")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the container wrote to the shared rootfs: %v", err)
	}
}

// TestLXCCapabilities: --cap-add and --cap-drop change what a container
// keeps, in every set; an unknown name is refused before anything starts.
func TestLXCCapabilities(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	s := spec(t, cgroupdriver.KindLXC, "ct-caps")
	s.Rootfs = rootfs
	s.CapAdd, s.CapDrop = []string{"net_admin", "CAP_SYS_NICE"}, []string{"CHOWN"}
	got, log := probes(t, s, strings.Join([]string{
		`probe chown sh -c 'touch /tmp/f && chown 1:1 /tmp/f'`,
		`probe ip-link ip link set lo mtu 1400`,
		`probe nice renice -n -5 $$`,
		`grep -E '^Cap' /proc/self/status`,
	}, "; "))
	for name, verdict := range map[string]string{"chown": "refused", "ip-link": "allowed", "nice": "allowed"} {
		if v, _, _ := strings.Cut(got[name], " "); v != verdict {
			t.Errorf("%s: %q, want %s", name, got[name], verdict)
		}
	}
	want := events.ContainerCapabilities([]string{"CAP_NET_ADMIN", "CAP_SYS_NICE"}, []string{"CAP_CHOWN"})
	if !strings.Contains(log, "CapEff:\t"+capMask(want)+"\n") || !strings.Contains(log, "CapBnd:\t"+capMask(want)+"\n") {
		t.Errorf("want CapEff and CapBnd %s:\n%s", capMask(want), log)
	}

	bad := spec(t, cgroupdriver.KindLXC, "ct-badcap")
	bad.Rootfs, bad.CapAdd = rootfs, []string{"CAP_FLY"}
	cfg := drivertest.Config(t)
	if _, err := driver.NewLXC(cfg).Start(testCtx(t), bad); !errors.Is(err, driver.ErrInvalidSpec) || !strings.Contains(err.Error(), "CAP_FLY") {
		t.Errorf("Start with CAP_FLY: %v, want ErrInvalidSpec naming it", err)
	}
	if pids, err := cfg.Cgroups.Pids(bad.Guest); err == nil && len(pids) > 0 {
		t.Errorf("a refused container runs: %v", pids)
	}
}

// TestLXCPrivateLayer: two containers on one rootfs each write the same
// file; neither sees the other's, the shared rootfs gets neither, and a
// container's writes survive its restart (the layer is the guest's, kept
// in its state directory).
func TestLXCPrivateLayer(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	d := driver.NewLXC(drivertest.Config(t))
	name := "/corral-layer-" + strconv.Itoa(os.Getpid())
	run := func(s driver.Spec, script string) string {
		t.Helper()
		s.Command = []string{"/bin/sh", "-c", script}
		inst := start(t, d, s)
		st := wait(t, inst)
		log := readFile(t, inst.LogPath())
		if st.Code != 0 {
			t.Fatalf("status %v\n%s", st, log)
		}
		destroy(t, inst)
		return log
	}
	a, b := spec(t, cgroupdriver.KindLXC, "ct-a"), spec(t, cgroupdriver.KindLXC, "ct-b")
	a.Rootfs, b.Rootfs = rootfs, rootfs
	// A keeps running while B writes: both layers are mounted at once.
	a.Command = []string{"/bin/sh", "-c", "echo a >" + name + "; echo wrote; sleep 1000"}
	ia := start(t, d, a)
	waitLog(t, ia, "wrote", 10*time.Second)
	if log := run(b, "cat "+name+" 2>&1; echo b >"+name+"; cat "+name); !strings.Contains(log, "No such file") || !strings.HasSuffix(log, "b\n") {
		t.Errorf("container b saw a's write, or could not write its own:\n%s", log)
	}
	destroy(t, ia)
	if log := run(a, "echo restarted=$(cat "+name+")"); !strings.Contains(log, "restarted=a\n") {
		t.Errorf("after a restart container a lacks its own %s:\n%s", name, log)
	}
	if _, err := os.Stat(filepath.Join(rootfs, name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the shared rootfs has %s: %v", name, err)
	}
}
