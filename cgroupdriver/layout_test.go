package cgroupdriver

import "testing"

// TestLayoutOwnGroupOfAnAgent: a process started inside an agent's own
// group (<partition>/corral/agent) takes that agent's partition, so a
// restarted agent never nests corral/agent/corral; any other own group is
// the partition itself.
func TestLayoutOwnGroupOfAnAgent(t *testing.T) {
	for _, c := range []struct{ group, want string }{
		{"/system.slice/corral.service/corral/agent", "/sys/fs/cgroup/cpu/system.slice/corral.service"},
		{"/corral/agent", "/sys/fs/cgroup/cpu"},
		{"/user.slice/session-1.scope", "/sys/fs/cgroup/cpu/user.slice/session-1.scope"},
		{"/x/corral/agents", "/sys/fs/cgroup/cpu/x/corral/agents"},
	} {
		rep := Report{Hierarchies: []Hierarchy{{Version: 1, Controllers: []string{"cpu"}, MountPoint: "/sys/fs/cgroup/cpu", MountRoot: "/", Group: c.group}}}
		l, err := newLayout(rep, "")
		if err != nil {
			t.Fatalf("%s: %v", c.group, err)
		}
		if got := l.hs[0].part; got != c.want {
			t.Errorf("own group %s: partition %s, want %s", c.group, got, c.want)
		}
	}
}
