package driver_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// usernsSpec is an lxc guest with the default id map.
func usernsSpec(t *testing.T, prefix string) driver.Spec {
	t.Helper()
	s := spec(t, cgroupdriver.KindLXC, prefix)
	s.Rootfs = drivertest.Rootfs(t)
	s.IDMap = events.DefaultIDMap
	return s
}

// TestLXCUserNS: a container with the default id map runs its command as
// PID 1, root inside and host uid and gid 100000 outside; the files it
// writes to its layer belong to 100000 on the host; the shared rootfs,
// owned by the host's root, is its root's (ls -n says 0), its programs
// run, and it is never written.
func TestLXCUserNS(t *testing.T) {
	s := usernsSpec(t, "ct-userns")
	before := treeState(t, s.Rootfs)
	s.Command = []string{"/bin/sh", "-c", strings.Join([]string{
		`echo "pid=$$ id=$(id -u):$(id -g)"`,
		`echo "uidmap=$(tr -s ' ' </proc/self/uid_map)"`,
		`echo "passwd=$(ls -n /etc/passwd | tr -s ' ' | cut -d' ' -f3,4)"`,
		`echo made >/made-here && mkdir -p /var/d && echo x >/var/d/f && echo changed >>/etc/passwd`,
		`echo ready`, `exec sleep 1000`,
	}, "; ")}
	d := driver.NewLXC(drivertest.Config(t))
	t0 := time.Now()
	inst := start(t, d, s)
	t.Logf("started in %v", time.Since(t0))
	waitLog(t, inst, "ready", 10*time.Second)
	log := readFile(t, inst.LogPath())
	for _, want := range []string{"pid=1 id=0:0\n", "uidmap= 0 100000 65536\n", "passwd=0 0\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("container output lacks %q:\n%s", want, log)
		}
	}
	status := readFile(t, "/proc/"+strconv.Itoa(inst.PID())+"/status")
	for _, want := range []string{"Uid:\t100000\t100000\t100000\t100000\n", "Gid:\t100000\t100000\t100000\t100000\n"} {
		if !strings.Contains(status, want) {
			t.Errorf("the container's PID 1 on the host: want %q in\n%s", want, status)
		}
	}
	checkInGroups(t, inst, inst.PID())
	upper := filepath.Join(s.StateDir, "rootfs-upper")
	for _, f := range []string{"made-here", "var/d", "var/d/f", "etc/passwd"} {
		st, err := os.Lstat(filepath.Join(upper, f))
		if err != nil {
			t.Errorf("the container's layer lacks %s: %v", f, err)
			continue
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 100000 || sys.Gid != 100000 {
			t.Errorf("%s in the layer belongs to %d:%d on the host, want 100000:100000", f, sys.Uid, sys.Gid)
		}
	}
	destroy(t, inst)
	if after := treeState(t, s.Rootfs); after != before {
		t.Errorf("the shared rootfs changed:\nbefore %s\nafter  %s", before, after)
	}
}

// treeState sums up a tree's names, owners, modes, sizes and times.
func treeState(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		b.WriteString(p + " " + fi.Mode().String() + " " + strconv.Itoa(int(st.Uid)) + ":" + strconv.Itoa(int(st.Gid)) + " " + strconv.Itoa(int(fi.Size())) + " " + fi.ModTime().String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestLXCBreakOutUserNS: every probe of TestLXCBreakOut is refused in a
// container with a user namespace too.
func TestLXCBreakOutUserNS(t *testing.T) {
	checkBreakOut(t, usernsSpec(t, "ct-jail-userns"))
}

// TestLXCUserNSAllCaps gives a user-namespaced container every
// capability (--cap-add ALL) and checks that they count only inside: it
// may mount a tmpfs in its own namespace, remount its /proc/sys
// read-write and mount its own view of the memory hierarchy, but the
// host's kernel settings and its own group's limits belong to the host's
// root and stay unwritable (pid_max, per pid namespace since Linux 6.14,
// is its own, and the host's stays as it was); /sys stays read-only;
// device nodes, a negative nice value, a raised hard limit, a new user
// namespace and a module stay refused.
func TestLXCUserNSAllCaps(t *testing.T) {
	s := usernsSpec(t, "ct-allcaps")
	s.CapAdd = []string{"ALL"}
	pidMax := readFile(t, "/proc/sys/kernel/pid_max")
	dirty := readFile(t, "/proc/sys/vm/dirty_ratio")
	t.Cleanup(func() { // should the probe ever get through
		if b, err := os.ReadFile("/proc/sys/vm/dirty_ratio"); err == nil && string(b) != dirty {
			_ = os.WriteFile("/proc/sys/vm/dirty_ratio", []byte(dirty), 0)
		}
	})
	got, log := probes(t, s, strings.Join([]string{
		`mkdir -p /tmp/m`,
		// Positive controls: the capabilities work in the namespace.
		`probe mount-tmpfs mount -t tmpfs none /tmp/m`,
		`probe remount-proc-sys mount -o remount,rw /proc/sys`,
		`probe ip-link ip link set lo mtu 1400`,
		// What needs the host's.
		`probe sys-write sh -c 'mount -o remount,rw /sys 2>/dev/null; echo never >/sys/kernel/mm/transparent_hugepage/enabled'`,
		`probe sysctl-write sh -c 'echo 1 >/proc/sys/vm/drop_caches'`,
		`probe sysctl-dirty sh -c 'echo 11 >/proc/sys/vm/dirty_ratio'`,
		`probe pid-max sh -c 'echo 4096 >/proc/sys/kernel/pid_max'`,
		`probe mknod-block mknod /tmp/sda b 8 0`,
		`probe mknod-char mknod /tmp/mem c 1 1`,
		`probe nice renice -n -5 $$`,
		`probe rlimit sh -c 'ulimit -H -n $(( $(ulimit -H -n) + 1 ))'`,
		`probe mount-cgroup mount -t cgroup -o memory cgroup /tmp/m`,
		`probe cgroup-limit sh -c 'echo 4096 >/tmp/m/memory.limit_in_bytes'`,
		`probe cgroup-procs sh -c 'echo $$ >/tmp/m/cgroup.procs'`,
		`probe mount-userns unshare -U -r -m true`,
		`dd if=/dev/zero of=/tmp/x.ko bs=1k count=4 2>/dev/null`,
		`probe insmod insmod /tmp/x.ko`,
		`grep -E '^(CapEff|CapBnd):' /proc/self/status`,
	}, "; "))
	t.Log(log)
	want := map[string]string{
		"mount-tmpfs": "allowed", "remount-proc-sys": "allowed", "ip-link": "allowed", "pid-max": "allowed",
		"mount-cgroup": "allowed",
		"sys-write":    "refused", "sysctl-write": "refused", "sysctl-dirty": "refused",
		"cgroup-limit": "refused", "cgroup-procs": "refused",
		"mknod-block": "refused", "mknod-char": "refused", "nice": "refused", "rlimit": "refused",
		"mount-userns": "refused", "insmod": "refused",
	}
	for name, verdict := range want {
		if v, _, _ := strings.Cut(got[name], " "); v != verdict {
			t.Errorf("%s: %q, want %s", name, got[name], verdict)
		}
	}
	for _, name := range []string{"sysctl-write", "sysctl-dirty", "cgroup-limit", "cgroup-procs"} {
		if !strings.Contains(got[name], "ermission denied") {
			t.Errorf("%s: %q, want permission denied (the file is the host root's)", name, got[name])
		}
	}
	if readFile(t, "/proc/sys/kernel/pid_max") != pidMax || readFile(t, "/proc/sys/vm/dirty_ratio") != dirty {
		t.Errorf("the host's pid_max or dirty_ratio changed")
	}
	all := capMask(events.ContainerCapabilities([]string{"ALL"}, nil))
	if !strings.Contains(log, "CapEff:\t"+all+"\n") {
		t.Errorf("want CapEff %s (every capability, in the namespace):\n%s", all, log)
	}
}

// TestAdoptContainerUserNS: a user-namespaced container is adopted by a
// new driver as any other (TestAdoptContainer) and stops gracefully.
func TestAdoptContainerUserNS(t *testing.T) {
	cfg := drivertest.Config(t)
	s := usernsSpec(t, "ct-adopt-userns")
	s.Command = []string{"/bin/sh", "-c", `trap "exit 9" TERM; echo ready; sleep 1000 & wait`}
	first := start(t, driver.NewLXC(cfg), s)
	waitLog(t, first, "ready", 10*time.Second)
	first.Release()
	inst, err := driver.NewLXC(cfg).Adopt(testCtx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, inst) })
	if inst.PID() != first.PID() {
		t.Errorf("adopted pid %d, want %d", inst.PID(), first.PID())
	}
	if st := readFile(t, "/proc/"+strconv.Itoa(inst.PID())+"/status"); !strings.Contains(st, "Uid:\t100000\t") {
		t.Errorf("the adopted container's PID 1 is not host uid 100000:\n%s", st)
	}
	st, err := inst.Stop(testCtx(t), 10*time.Second)
	if err != nil || st.Code != 9 {
		t.Errorf("Stop: %v, %v; want code 9", st, err)
	}
}

// TestLXCPrivateLayerUserNS: two user-namespaced containers on one rootfs
// do not see each other's writes, and a restarted one keeps its own.
func TestLXCPrivateLayerUserNS(t *testing.T) {
	d := driver.NewLXC(drivertest.Config(t))
	a, b := usernsSpec(t, "ct-ua"), usernsSpec(t, "ct-ub")
	a.Command = []string{"/bin/sh", "-c", "echo a >/etc/motd; echo wrote; sleep 1000"}
	ia := start(t, d, a)
	waitLog(t, ia, "wrote", 10*time.Second)
	b.Command = []string{"/bin/sh", "-c", "cat /etc/motd 2>&1; echo b >/etc/motd; cat /etc/motd"}
	ib := start(t, d, b)
	if st := wait(t, ib); st.Code != 0 {
		t.Fatalf("b: %v\n%s", st, readFile(t, ib.LogPath()))
	}
	if log := readFile(t, ib.LogPath()); !strings.Contains(log, "No such file") || !strings.HasSuffix(log, "b\n") {
		t.Errorf("container b saw a's write, or could not write its own:\n%s", log)
	}
	destroy(t, ia)
	a.Command = []string{"/bin/sh", "-c", "echo restarted=$(cat /etc/motd)"}
	ia = start(t, d, a)
	if st := wait(t, ia); st.Code != 0 {
		t.Fatalf("a again: %v\n%s", st, readFile(t, ia.LogPath()))
	}
	if log := readFile(t, ia.LogPath()); !strings.Contains(log, "restarted=a\n") {
		t.Errorf("after a restart container a lacks its own /etc/motd:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(a.Rootfs, "etc/motd")); !os.IsNotExist(err) {
		t.Errorf("the shared rootfs has /etc/motd: %v", err)
	}
}

// TestLXCUserNSBadMap: a map that would give the container the host's
// root, or none for its own root, is refused before anything starts.
func TestLXCUserNSBadMap(t *testing.T) {
	cfg := drivertest.Config(t)
	for _, m := range [][]events.IDRange{
		{{Container: 0, Host: 0, Count: 65536}},
		{{Container: 1, Host: 100000, Count: 10}},
	} {
		s := usernsSpec(t, "ct-badmap")
		s.IDMap = m
		if _, err := driver.NewLXC(cfg).Start(testCtx(t), s); !errors.Is(err, driver.ErrInvalidSpec) {
			t.Errorf("Start with map %v: %v, want ErrInvalidSpec", m, err)
		}
		if pids, err := cfg.Cgroups.Pids(s.Guest); err == nil && len(pids) > 0 {
			t.Errorf("a refused container runs: %v", pids)
		}
	}
}
