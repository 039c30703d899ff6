package cgroupdriver

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// hostMountinfo is /proc/self/mountinfo of the project's CI host: v1
// controllers mounted one each, plus an empty cgroup2.
const hostMountinfo = `22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hostCgroup = `10:net_cls,net_prio:/
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/2f2f
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
`

func TestDetectHybridHost(t *testing.T) {
	rep, err := Detect(strings.NewReader(hostMountinfo), strings.NewReader(hostCgroup))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != ModeHybrid {
		t.Errorf("mode = %s, want hybrid", rep.Mode)
	}
	if len(rep.Hierarchies) != 10 {
		t.Fatalf("got %d hierarchies, want 10 (9 v1 + unified): %+v", len(rep.Hierarchies), rep.Hierarchies)
	}
	mem, ok := rep.Controller("memory")
	if !ok || mem.MountPoint != "/sys/fs/cgroup/memory" || mem.Group != "/process_api/2f2f" {
		t.Errorf("memory = %+v, %v", mem, ok)
	}
	sd, ok := rep.Controller("name=systemd")
	if !ok || sd.MountPoint != "/sys/fs/cgroup/systemd" {
		t.Errorf("name=systemd = %+v (xattr must not count as a controller)", sd)
	}
	if _, ok := rep.Controller("net_cls"); ok {
		t.Error("net_cls is in /proc/self/cgroup but not mounted; it must not be reported")
	}
	u, ok := rep.Unified()
	if !ok || u.Group != "/" || u.MountPoint != "/sys/fs/cgroup/unified" {
		t.Errorf("unified = %+v", u)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
}

func TestDetectLayouts(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, cgroup string
		mode                    Mode
		check                   func(t *testing.T, r Report)
	}{{
		name: "all co-mounted at /dev/cgroups",
		mountinfo: "40 22 0:40 / /dev/cgroups rw - cgroup cgconfig rw,cpu,cpuacct,memory,devices\n" +
			"41 22 0:41 / /dev/freezer rw - cgroup cgconfig rw,freezer\n",
		cgroup: "2:freezer:/\n1:cpu,cpuacct,memory,devices:/batch\n",
		mode:   ModeV1,
		check: func(t *testing.T, r Report) {
			h, _ := r.Controller("memory")
			c, _ := r.Controller("cpuacct")
			if h.MountPoint != "/dev/cgroups" || c.MountPoint != "/dev/cgroups" || h.Group != "/batch" {
				t.Errorf("memory %+v cpuacct %+v", h, c)
			}
			if len(h.Controllers) != 4 {
				t.Errorf("controllers = %v", h.Controllers)
			}
		},
	}, {
		name:      "escaped mount point, bind mounted twice",
		mountinfo: "50 22 0:50 /sub /mnt/cg\\040one rw - cgroup cgroup rw,cpu,cpuacct\n" + "51 22 0:50 / /mnt/cg\\040all rw - cgroup cgroup rw,cpu,cpuacct\n",
		cgroup:    "1:cpu,cpuacct:/sub/agent\n",
		mode:      ModeV1,
		check: func(t *testing.T, r Report) {
			if len(r.Hierarchies) != 1 {
				t.Fatalf("duplicate mount reported twice: %+v", r.Hierarchies)
			}
			h := r.Hierarchies[0]
			if h.MountPoint != "/mnt/cg all" || h.MountRoot != "/" {
				t.Errorf("want the mount showing the whole tree, got %+v", h)
			}
		},
	}, {
		name:      "bind mount of a subtree only",
		mountinfo: "50 22 0:50 /sub /mnt/cg rw - cgroup cgroup rw,memory\n",
		cgroup:    "1:memory:/sub/agent\n",
		mode:      ModeV1,
		check: func(t *testing.T, r Report) {
			d, err := r.Hierarchies[0].Dir("/sub/agent/corral")
			if err != nil || d != "/mnt/cg/agent/corral" {
				t.Errorf("Dir = %q, %v", d, err)
			}
			if _, err := r.Hierarchies[0].Dir("/other"); err == nil {
				t.Error("a group outside the mounted subtree must be an error")
			}
		},
	}, {
		name:      "pure v2",
		mountinfo: "30 22 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
		cgroup:    "0::/system.slice/corral.service\n",
		mode:      ModeV2,
		check: func(t *testing.T, r Report) {
			if h := r.Hierarchies[0]; h.Version != 2 || h.Group != "/system.slice/corral.service" {
				t.Errorf("%+v", h)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Detect(strings.NewReader(tc.mountinfo), strings.NewReader(tc.cgroup))
			if err != nil {
				t.Fatal(err)
			}
			if r.Mode != tc.mode {
				t.Errorf("mode %s, want %s", r.Mode, tc.mode)
			}
			tc.check(t, r)
		})
	}
}

func TestDetectRefuses(t *testing.T) {
	_, err := Detect(strings.NewReader("22 1 253:1 / / rw - ext4 /dev/vda rw\n"), strings.NewReader("0::/\n"))
	if !errors.Is(err, ErrNoCgroups) {
		t.Errorf("no cgroups: %v", err)
	}
	_, err = Detect(strings.NewReader("40 22 0:40 / /cg rw - cgroup c rw,cpuset,noprefix\n"), strings.NewReader("1:cpuset:/\n"))
	if err == nil || !strings.Contains(err.Error(), "noprefix") {
		t.Errorf("noprefix: %v", err)
	}
	_, err = Detect(strings.NewReader("garbage\n"), strings.NewReader("0::/\n"))
	if err == nil {
		t.Error("malformed mountinfo accepted")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:  "/a b",
		`/a\011b`:  "/a\tb",
		`/a\134b`:  `/a\b`,
		`/a\04`:    `/a\04`,
		`/plain`:   "/plain",
		`/x\040`:   "/x ",
		`/y\999zz`: `/y\999zz`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
