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
// of file writes; the v2 device filter is the same allow-list program, built
// without cilium/ebpf).
//
// Processes enter a guest's groups before they run a single instruction of
// their own ([Driver.Start]): on cgroup v2 by cloning into the cgroup, on v1
// through a re-exec shim. Every binary that starts guests must call
// [RunShimIfRequested] first thing in main.
//
// Dependency rule: this package imports nothing of corral's. The agent and
// its drivers build on it, and the wire API carries its [Resources] as a
// desired guest's settings; it must never import events, coordinator/...,
// scheduler, nodeagent/... or cmd, nor raft or NATS. Test support lives in
// the cgrouptest subpackage. Linux only, 64-bit (the BPF attribute layout
// assumes 64-bit pointers).
package cgroupdriver
