// Package driver runs guests on one host: a process, an LXC-style container
// or a QEMU virtual machine, each inside its own control groups from its
// first instruction on.
//
// It owns, per guest, the files it keeps in the guest's state directory
// (the state record state.json, the QMP socket qmp.sock, the size-capped
// output log guest.log and a container's writable layer rootfs-upper,
// rootfs-work and mount points rootfs and, with a user namespace,
// rootfs-lower; see [Spec]) and the guest's processes: the process
// tree of a process guest, the namespaces of a container, the QEMU process
// of a VM. The groups themselves belong to [cgroupdriver]; a driver creates
// them at [Driver.Start] and removes them at [Instance.Destroy].
//
// A [Set] holds the three drivers of a host; the node agent picks one per
// guest ([Set.For]) and gets an [Instance] back from [Driver.Start] or, after
// the agent itself restarted, from [Driver.Adopt], which re-attaches to a
// guest still running from its state record and never starts a second copy.
// An Instance reports the guest's end once, with the reason ([ExitStatus]),
// and offers stop (graceful, then forced), kill, suspend and resume, and for
// QEMU a [QMP] client.
//
// The lxc driver keeps one spare container init waiting once it has
// started a container (lxcspare.go): a process of this binary in the
// container's namespaces, in the caller's groups until it is handed a
// guest; it exits when its driver lets go of it or its process ends.
//
// Guests outlive the agent process by design: no parent-death signal, a new
// session per guest, output written by the guest straight into its log
// file (no pipe through the agent that would block or SIGPIPE it), QMP on a
// socket any later agent can connect to. What a restarted agent cannot get
// back is the exit code of a guest it did not start: only a process's
// parent can read it, so such a status says [ErrExitUnknown] (the OOM
// verdict still comes from the memory group's counters).
//
// Every binary that starts guests through this package must call
// [cgroupdriver.RunShimIfRequested] and then [RunInitIfRequested] first thing
// in main (and in TestMain): a container's init is this binary re-executed,
// and on cgroup v1 so is the entry shim that puts it into its groups.
//
// Dependency rule: this package imports cgroupdriver and events of
// corral's. It must never import coordinator/..., scheduler, nodeagent or
// cmd, nor raft or NATS: nodeagent builds on it, not the other way round.
// Test support lives in the drivertest subpackage. Linux only, amd64 for
// the KVM probe.
package driver
