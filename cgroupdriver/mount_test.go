package cgroupdriver

import "testing"

func TestNetClsMount(t *testing.T) {
	const (
		cpuMount    = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
		netClsMount = "31 25 0:27 / /mnt/nc rw,nosuid - cgroup cgroup rw,net_cls,net_prio\n"
		procCgroups = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t3\t1\t1\nnet_cls\t10\t1\t1\n"
		noNetCls    = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t3\t1\t1\n"
	)
	for _, c := range []struct {
		name, mountinfo, self, cgroups string
		opts                           string
		need                           bool
	}{
		{"kernel's hierarchy unmounted", cpuMount, "3:cpu,cpuacct:/\n10:net_cls,net_prio:/\n", procCgroups, "net_cls,net_prio", true},
		{"mounted already", cpuMount + netClsMount, "10:net_cls,net_prio:/\n", procCgroups, "", false},
		{"no hierarchy yet", cpuMount, "3:cpu,cpuacct:/\n", procCgroups, "net_cls", true},
		{"kernel without net_cls", cpuMount, "3:cpu,cpuacct:/\n", noNetCls, "", false},
		{"net_prio alone is not net_cls", cpuMount, "11:net_prio:/\n", noNetCls, "", false},
	} {
		opts, need, err := NetClsMount([]byte(c.mountinfo), []byte(c.self), []byte(c.cgroups))
		if err != nil || opts != c.opts || need != c.need {
			t.Errorf("%s: %q, %v, %v; want %q, %v", c.name, opts, need, err, c.opts, c.need)
		}
	}
}
