package cgrouptest

import (
	"strconv"
	"testing"
)

// A Layout builds one kind of fake host.
type Layout struct {
	Name string
	// Partition to configure; "" for the agent's own group.
	Partition string
	Build     func(testing.TB) *Fake
}

// v1Controllers are the controllers a typical v1 host mounts.
func v1Controllers() []string {
	return []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "net_cls"}
}

// Layouts returns the layouts operators really have, for table tests:
//
//   - separate: every v1 controller in its own hierarchy under
//     /sys/fs/cgroup, agent in /system.slice/corral.service;
//   - comounted: every controller in one hierarchy at /dev/cgroups, as a
//     cgconfig.conf with `cpu = /dev/cgroups; memory = /dev/cgroups; ...`
//     makes, partition /machine;
//   - cpu-custom: cpu and cpuacct together at a custom path containing a
//     space, the others separately below /srv/cg;
//   - hybrid: like a systemd hybrid host (and this project's CI host), v1
//     controllers plus an empty cgroup2 at /sys/fs/cgroup/unified, without
//     net_cls, the agent's memory group nested;
//   - hybrid-mixed: v1 without memory and pids, which cgroup2 offers
//     instead, so both kinds of hierarchy carry knobs, partition /machine.
//   - v2: the unified hierarchy only, partition /machine.slice.
func Layouts() []Layout {
	return []Layout{
		{Name: "separate", Build: separate},
		{Name: "comounted", Partition: "/machine", Build: comounted},
		{Name: "cpu-custom", Build: cpuCustom},
		{Name: "hybrid", Build: hybrid},
		{Name: "hybrid-mixed", Partition: "/machine", Build: hybridMixed},
		{Name: "v2", Partition: "/machine.slice", Build: v2},
	}
}

func separate(t testing.TB) *Fake {
	var mounts []Mount
	self := ""
	for i, c := range append(v1Controllers(), "name=systemd") {
		point := "/sys/fs/cgroup/" + c
		if c == "name=systemd" {
			point = "/sys/fs/cgroup/systemd"
		}
		mounts = append(mounts, Mount{Point: point, Options: "rw," + c})
		self = strconv.Itoa(10-i) + ":" + c + ":/system.slice/corral.service\n" + self
	}
	return NewFake(t, mounts, self, "")
}

func comounted(t testing.TB) *Fake {
	opts := "rw"
	self := "1:"
	for i, c := range v1Controllers() {
		opts += "," + c
		if i > 0 {
			self += ","
		}
		self += c
	}
	return NewFake(t, []Mount{{Point: "/dev/cgroups", Options: opts}}, self+":/\n", "")
}

func cpuCustom(t testing.TB) *Fake {
	mounts := []Mount{{Point: "/srv/cg/cpu and acct", Options: "rw,cpu,cpuacct"}}
	self := "1:cpu,cpuacct:/\n"
	for i, c := range v1Controllers()[2:] {
		mounts = append(mounts, Mount{Point: "/srv/cg/" + c, Options: "rw," + c})
		self += strconv.Itoa(i+2) + ":" + c + ":/\n"
	}
	return NewFake(t, mounts, self, "")
}

func hybrid(t testing.TB) *Fake {
	var mounts []Mount
	self := "0::/\n"
	for i, c := range append(v1Controllers()[:8], "name=systemd") {
		point := "/sys/fs/cgroup/" + c
		if c == "name=systemd" {
			point = "/sys/fs/cgroup/systemd"
		}
		mounts = append(mounts, Mount{Point: point, Options: "rw," + c})
		group := "/"
		if c == "memory" {
			group = "/process_api/2f2f4432"
		}
		self = strconv.Itoa(i+1) + ":" + c + ":" + group + "\n" + self
	}
	// A v1 hierarchy that is not mounted any more still shows up in
	// /proc/self/cgroup.
	self = "10:net_cls,net_prio:/\n" + self
	mounts = append(mounts, Mount{Point: "/sys/fs/cgroup/unified", V2: true})
	return NewFake(t, mounts, self, "hugetlb")
}

func hybridMixed(t testing.TB) *Fake {
	var mounts []Mount
	self := "0::/\n"
	for i, c := range []string{"cpu,cpuacct", "cpuset", "devices", "freezer", "blkio"} {
		mounts = append(mounts, Mount{Point: "/sys/fs/cgroup/" + c, Options: "rw," + c})
		self = strconv.Itoa(i+1) + ":" + c + ":/\n" + self
	}
	mounts = append(mounts, Mount{Point: "/sys/fs/cgroup/unified", V2: true})
	return NewFake(t, mounts, self, "memory pids")
}

func v2(t testing.TB) *Fake {
	return NewFake(t, []Mount{{Point: "/sys/fs/cgroup", V2: true}},
		"0::/system.slice/corral.service\n", "cpuset cpu io memory hugetlb pids")
}
