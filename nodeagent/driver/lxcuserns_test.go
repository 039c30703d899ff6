package driver_test

import (
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
	inst := start(t, d, s)
	waitLog(t, inst, "ready", 10*time.Second)
	log := readFile(t, inst.LogPath())
	t.Log(log)
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
