// Package cgroupdriver turns a guest's resource settings into control groups
// and values on a Linux host, reads them back, and reports what the kernel
// counted.
//
// It owns everything below the corral root of every mounted cgroup
// hierarchy: <partition>/corral/{qemu,lxc,process}/<guest>, plus
// <partition>/corral/agent when the agent reserves resources for itself, and
// the cluster's partitions, <partition>/corral/partitions/<name>, each with
// its own limits and its guests below it in <kind>/<guest> (partition.go).
// The partition is the agent's own group in each hierarchy unless configured.
//
// The package works on cgroup v1 with controllers mounted separately or
// together, anywhere in the file system, on hybrid hosts and on pure cgroup
// v2. Layout is detected from /proc/self/mountinfo and /proc/self/cgroup,
// never assumed.
//
// Work is split into deciding and doing. [Detect], [Driver.Validate],
// [Driver.Plan] and [Driver.PlanTree] are pure: they compute a list of
// [Write] values from the layout, the probed [HostInfo] and a [Resources]
// value, and refuse what the host cannot take with a [FieldError] before
// anything is written. [Driver.Apply], [Driver.Create], [Driver.Remove] and
// friends are the thin layer that performs the I/O, with plain system calls.
//
// github.com/containerd/cgroups/v3 is used where it fits: its root package
// parses /proc/self/cgroup. Its cgroup1 and cgroup2 packages are not
// imported: they pull in modules this repository does not carry
// (runtime-spec, go-systemd, godbus, protobuf, cilium/ebpf) and assume
// /sys/fs/cgroup. Their design is followed instead (resources become a list
// of file writes).
//
// The v2 device filter is corral's own allow-list program (devicebpf.go),
// not containerd's cgroup2.DeviceFilter, after trying v3.1.3's filter and
// loader on this kernel (6.18) with cilium/ebpf v0.22.0. Under its filter
// a read-only rule "c 1:3 r" let a process in the group open /dev/null
// read-write: it allows when the access asked for overlaps the rule's, and
// an O_RDWR open asks for read|write at once; corral's program allows only a
// subset and refuses that open with EPERM. Its loader attaches with
// BPF_F_ALLOW_MULTI: two loads left two programs on the group, and on a
// group holding a program attached without flags it failed with EPERM,
// while corral's attach without flags has the kernel replace the group's
// one program in a single step (200 changes under a process opening devices
// in a loop: no moment with none or all devices allowed). Its tag helper is
// SHA-1, where this kernel's program tags are the first 8 bytes of SHA-256
// (02e1e0821494fa53 for containerd's program for "c 1:3 r" and
// "c 1:5 rwm", e9f946293236fa0d by cilium).
//
// Processes enter a guest's groups before they run a single instruction of
// their own ([Driver.Start]): on cgroup v2 by cloning into the cgroup, on v1
// through a re-exec shim. Every binary that starts guests must call
// [RunShimIfRequested] first thing in main. A process started ahead of its
// guest waits in spare groups ([Driver.StartSpare]) that become the
// guest's when it is known ([Driver.ClaimSpare]): renamed on v1, where
// moving a process costs an RCU grace period.
//
// Dependency rule: this package imports nothing of corral's. The agent and
// its drivers build on it, and the wire API carries its [Resources] as a
// desired guest's settings; it must never import events, coordinator/...,
// scheduler, nodeagent/... or cmd, nor raft or NATS. Test support lives in
// the cgrouptest subpackage. Linux only, 64-bit (the BPF attribute layout
// assumes 64-bit pointers).
package cgroupdriver
