package cgroupdriver

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// NetClsMount says how to mount the net_cls controller where the kernel
// has it and no hierarchy of it is mounted: Options are the controllers
// of the hierarchy the kernel already made for it (/proc/self/cgroup
// lists it, "net_cls,net_prio" on most hosts; a v1 mount must name
// exactly those), else "net_cls" alone. Need is false where net_cls is
// mounted already, or the kernel has no net_cls. It is pure.
func NetClsMount(mountinfo, selfCgroup, procCgroups []byte) (options string, need bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		m, ok, err := parseMountinfoLine(sc.Text())
		if err != nil {
			return "", false, err
		}
		if ok && m.fstype == "cgroup" && hasOption(m.superOpts, "net_cls") {
			return "", false, nil
		}
	}
	for _, line := range strings.Split(string(selfCgroup), "\n") {
		// hierarchy-ID:controller-list:path
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && hasOption(f[1], "net_cls") {
			return f[1], true, nil
		}
	}
	for _, line := range strings.Split(string(procCgroups), "\n") {
		// subsys_name hierarchy num_cgroups enabled
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "net_cls" && f[3] == "1" {
			return "net_cls", true, nil
		}
	}
	return "", false, nil
}

func hasOption(list, o string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// MountNetCls mounts net_cls at dir (made if missing) when the host has
// net_cls and no hierarchy of it is mounted, so that the driver detects
// it next. It returns the options it mounted with, "" when it mounted
// nothing. Call it before [New].
//
// A host with a cgroup2 mount needs no net_cls: traffic is matched by the
// guest's cgroup2 path (nftables socket cgroupv2), so unless evenWithV2
// MountNetCls mounts nothing there. It never makes dir inside a cgroup2
// file system, where a mkdir would create a group.
func MountNetCls(dir string, evenWithV2 bool) (string, error) {
	var files [3][]byte
	for i, p := range []string{"/proc/self/mountinfo", "/proc/self/cgroup", "/proc/cgroups"} {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		files[i] = b
	}
	opts, need, err := NetClsMount(files[0], files[1], files[2])
	if err != nil || !need {
		return "", err
	}
	if !evenWithV2 && bytes.Contains(files[0], []byte(" - cgroup2 ")) {
		return "", nil
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(existingAncestor(dir, "/"), &fs); err == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
		return "", fmt.Errorf("corral: %s is inside a cgroup2 file system, where a directory is a cgroup: choose another directory with --net-cls-mount", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("corral: making %s to mount net_cls at: %w (choose another with --net-cls-mount)", dir, err)
	}
	if err := unix.Mount("cgroup", dir, "cgroup", 0, opts); err != nil {
		return "", fmt.Errorf("corral: mounting cgroup -o %s at %s: %w (mount it yourself, or choose another directory with --net-cls-mount)", opts, dir, err)
	}
	return opts, nil
}
