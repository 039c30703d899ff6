package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// libvirtLXC is a libvirtd of the benchmark's own, with its LXC driver, run
// as the reference for container start latency. It is kept apart from any
// other libvirtd on the host: it runs in a private mount namespace with
// tmpfs over /run, /etc/libvirt, /var/lib/libvirt, /var/log and /var/cache
// (so it writes no state, config or log of the host's, and takes no
// driver lock another daemon holds), and its socket lives in the
// benchmark's temp directory. The host's cgroup2 mount is unmounted in that
// namespace: libvirt 9's LXC driver cannot set up a container's cgroup
// mounts on a hybrid host and fails the start. Its guests' groups go to a
// partition of the benchmark's own (<name>.partition in every hierarchy),
// removed with the daemon.
type libvirtLXC struct {
	b      testing.TB
	dir    string
	uri    string
	cmd    *exec.Cmd
	part   string   // the resource partition, as domains name it
	groups []string // the partition's directories, one per hierarchy
}

// libvirtBinaries are what the reference needs: Debian's libvirt-daemon,
// libvirt-daemon-driver-lxc and libvirt-clients.
var libvirtBinaries = []string{"/usr/sbin/libvirtd", "/usr/bin/virsh", "/usr/lib/libvirt/libvirt_lxc"}

// startLibvirtLXC starts the daemon and waits until virsh gets an answer
// from it. It returns nil and the reason when libvirt's LXC driver is not
// installed; everything it started is stopped and removed at cleanup.
func startLibvirtLXC(b testing.TB) (*libvirtLXC, string) {
	b.Helper()
	for _, p := range libvirtBinaries {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Sprintf("no libvirt reference: %s is missing (apt-get install libvirt-daemon-driver-lxc libvirt-clients)", p)
		}
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return nil, "no libvirt reference: unshare(1) is missing"
	}
	var rb [4]byte
	if _, err := rand.Read(rb[:]); err != nil {
		b.Fatal(err)
	}
	name := "corralbench" + hex.EncodeToString(rb[:])
	l := &libvirtLXC{b: b, dir: b.TempDir(), part: "/" + name}
	l.uri = "lxc:///system?socket=" + filepath.Join(l.dir, "libvirt-sock")
	b.Cleanup(l.stop)
	if err := l.makePartition(name + ".partition"); err != nil {
		b.Fatal(err)
	}
	conf := fmt.Sprintf("unix_sock_dir = %q\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n", l.dir)
	if err := os.WriteFile(filepath.Join(l.dir, "libvirtd.conf"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	script := `set -e
if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
mount -t tmpfs tmpfs /run
for d in /etc/libvirt /var/lib/libvirt /var/log /var/cache; do mkdir -p "$d" 2>/dev/null || true; mount -t tmpfs tmpfs "$d"; done
# Without libvirt-daemon-system the host has no libvirt-qemu user or group,
# and a QEMU driver that cannot find them fails the daemon's start: this
# namespace gets its own passwd and group files that name them.
if ! getent passwd libvirt-qemu >/dev/null || ! getent group libvirt-qemu >/dev/null; then
	mkdir /run/corralbench-etc
	{ cat /etc/passwd; echo 'libvirt-qemu:x:64055:64055::/nonexistent:/usr/sbin/nologin'; } > /run/corralbench-etc/passwd
	{ cat /etc/group; echo 'libvirt-qemu:x:64055:'; } > /run/corralbench-etc/group
	mount --bind /run/corralbench-etc/passwd /etc/passwd
	mount --bind /run/corralbench-etc/group /etc/group
fi
exec /usr/sbin/libvirtd --config "$1"
`
	log, err := os.Create(filepath.Join(l.dir, "libvirtd.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	l.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", filepath.Join(l.dir, "libvirtd.conf"))
	l.cmd.Stdout, l.cmd.Stderr = log, log
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := l.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		if _, err := l.virsh("version"); err == nil {
			return l, ""
		}
		if time.Now().After(deadline) {
			raw, _ := os.ReadFile(log.Name())
			b.Fatalf("libvirtd did not answer within %v: %s", waitTimeout, lastLinesOf(string(raw), 10))
		}
		time.Sleep(20 * time.Millisecond) // poll interval: its socket appears when it is ready
	}
}

// makePartition creates name in every cgroup hierarchy mounted under
// /sys/fs/cgroup (libvirt does not create a partition itself), with the
// cpuset of the root so that tasks can join below it.
func (l *libvirtLXC) makePartition(name string) error {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || (fs[2] != "cgroup" && fs[2] != "cgroup2") || !strings.HasPrefix(fs[1], "/sys/fs/cgroup") {
			continue
		}
		dir := filepath.Join(fs[1], name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("libvirt reference: partition: %w", err)
		}
		l.groups = append(l.groups, dir)
		if fs[2] == "cgroup" && strings.Contains(","+fs[3]+",", ",cpuset,") {
			for _, k := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(fs[1], k))
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, k), v, 0o644)
				}
				if err != nil {
					return fmt.Errorf("libvirt reference: partition %s: %w", k, err)
				}
			}
		}
	}
	return sc.Err()
}

func (l *libvirtLXC) virsh(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "virsh", append([]string{"-q", "-c", l.uri}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// define defines a domain like corral's lxc guest: a copy of rootfs as its
// root (libvirt would write mount points into a shared one), tmpfs-free
// /dev and a private network namespace with only lo, 64 MiB, one vCPU,
// argv as its init. It is undefined at cleanup.
func (l *libvirtLXC) define(name, rootfs string, argv []string) {
	b := l.b
	root := filepath.Join(l.dir, name+"-rootfs")
	if out, err := exec.Command("cp", "-a", rootfs, root).CombinedOutput(); err != nil {
		b.Fatalf("copy rootfs for libvirt: %v: %s", err, out)
	}
	var args strings.Builder
	for _, a := range argv[1:] {
		fmt.Fprintf(&args, "<initarg>%s</initarg>", a)
	}
	xml := fmt.Sprintf(`<domain type='lxc'>
  <name>%s</name>
  <memory unit='KiB'>65536</memory>
  <vcpu>1</vcpu>
  <resource><partition>%s</partition></resource>
  <os><type>exe</type><init>%s</init>%s</os>
  <features><privnet/></features>
  <devices>
    <filesystem type='mount'><source dir='%s'/><target dir='/'/></filesystem>
    <console type='pty'/>
  </devices>
</domain>
`, name, l.part, argv[0], args.String(), root)
	p := filepath.Join(l.dir, name+".xml")
	if err := os.WriteFile(p, []byte(xml), 0o600); err != nil {
		b.Fatal(err)
	}
	if _, err := l.virsh("define", p); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = l.virsh("destroy", name)
		if _, err := l.virsh("undefine", name); err != nil {
			b.Errorf("libvirt reference: %v", err)
		}
	})
}

// start times `virsh start name`, the command as a user runs it, and
// destroys the domain again untimed.
func (l *libvirtLXC) start(name string) time.Duration {
	t0 := time.Now()
	_, err := l.virsh("start", name)
	took := time.Since(t0)
	if err != nil {
		l.b.Fatal(err)
	}
	if _, err := l.virsh("destroy", name); err != nil {
		l.b.Fatal(err)
	}
	return took
}

// stop ends the daemon (its containers were destroyed by then; SIGTERM
// makes it tear down any left) and removes the partition.
func (l *libvirtLXC) stop() {
	if l.cmd != nil && l.cmd.Process != nil {
		_ = l.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- l.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			_ = l.cmd.Process.Kill()
			<-done
		}
	}
	for _, dir := range l.groups {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := removeGroupTree(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				l.b.Errorf("libvirt reference: left %s behind: %v", dir, err)
				break
			}
			time.Sleep(20 * time.Millisecond) // poll interval: a group empties as its last task is reaped
		}
	}
}

// removeGroupTree removes a cgroup directory and the groups below it,
// deepest first.
func removeGroupTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeGroupTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return syscall.Rmdir(dir)
}

func lastLinesOf(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}
