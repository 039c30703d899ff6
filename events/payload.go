package events

import "time"

// Drivers a guest can run under.
const (
	DriverProcess = "process"
	DriverLXC     = "lxc"
	DriverQEMU    = "qemu"
)

// NodeRegistered says a host's agent joined (or re-joined) the cluster and
// what it offers.
type NodeRegistered struct {
	ID                 string            `json:"id"`
	Address            string            `json:"address,omitempty"`
	CPUs               int               `json:"cpus"`
	MemoryBytes        int64             `json:"memory_bytes"`
	ReserveCPUs        int               `json:"reserve_cpus,omitempty"`
	ReserveMemoryBytes int64             `json:"reserve_memory_bytes,omitempty"`
	Drivers            map[string]string `json:"drivers,omitempty"` // name -> version
	Labels             map[string]string `json:"labels,omitempty"`
	CgroupMode         string            `json:"cgroup_mode,omitempty"`
	Controllers        []string          `json:"controllers,omitempty"`
	// ShapeInterfaces are the interfaces the agent shapes guests' traffic
	// on (domiftune); Shaping, when set, says why it cannot.
	ShapeInterfaces []string `json:"shape_interfaces,omitempty"`
	// Bridge and BridgeCIDR are the node's guest network (corral agent
	// --bridge, --bridge-cidr); none when the agent runs without one.
	Bridge     string `json:"bridge,omitempty"`
	BridgeCIDR string `json:"bridge_cidr,omitempty"`
	Shaping    string `json:"shaping,omitempty"`
	// CPUSet and NUMANodes are the CPUs and memory nodes the node's guests
	// may use (its corral partition's cpuset), as lists ("0-3"); VCPUGroups
	// says it gives QEMU guests per-vCPU and emulator groups (the cpu
	// controller on cgroup v1). Older agents report none of them.
	CPUSet     string `json:"cpuset,omitempty"`
	NUMANodes  string `json:"numa_nodes,omitempty"`
	VCPUGroups bool   `json:"vcpu_groups,omitempty"`
	// SecretHash is the SHA-256 (hex) of the secret the node's agent
	// proves itself with; the coordinator fills it in, never the agent.
	// Nodes without one have no agent (static nodes).
	SecretHash string `json:"secret_hash,omitempty"`
	// FenceTimeoutMs and HeartbeatMs are the agent's self-fencing timeout
	// and heartbeat interval; the coordinator checks them against its
	// node-down timeout.
	FenceTimeoutMs int64 `json:"fence_timeout_ms,omitempty"`
	HeartbeatMs    int64 `json:"heartbeat_ms,omitempty"`
}

// NodeUp says a node's agent is reachable again.
type NodeUp struct{}

// NodeDown says the coordinator declared a node lost. Guests placed on it
// may be placed elsewhere after this event.
type NodeDown struct{}

// GuestDefined creates a guest. Memory is in bytes.
type GuestDefined struct {
	Name        string            `json:"name"`
	Driver      string            `json:"driver"`
	MemoryBytes int64             `json:"memory_bytes"`
	VCPUs       int               `json:"vcpus"`
	CPUShares   int               `json:"cpu_shares"`
	Command     []string          `json:"command,omitempty"`
	Rootfs      string            `json:"rootfs,omitempty"`
	Kernel      string            `json:"kernel,omitempty"`
	Initrd      string            `json:"initrd,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Placement rules, checked by the scheduler: label constraints such
	// as "rack=a" or "rack!=b", a label key no two guests with the same
	// value may share a node by, and exclusive CPUs: an explicit cpuset
	// ("0-3,6") or a count for the scheduler to choose.
	Constraints []string `json:"constraints,omitempty"`
	SpreadBy    string   `json:"spread_by,omitempty"`
	CPUSet      string   `json:"cpuset,omitempty"`
	PinCPUs     int      `json:"pin_cpus,omitempty"`
	// Devices the guest may use beyond its minimal set, canonical and
	// sorted (see [CanonicalAllowedDevices]); the "devices" knob tunes
	// them later.
	Devices []string `json:"devices,omitempty"`
	// Partition names the cluster partition the guest lives in, fixed
	// at create; "" for none.
	Partition string `json:"partition,omitempty"`
	// Reserve keeps the guest's vCPUs and memory on its node while it is
	// stopped or has ended, so that its next start always fits there.
	// Without it a guest holds capacity only while it runs or is asked to.
	Reserve bool `json:"reserve,omitempty"`
	// Capabilities an lxc guest gets beyond, or gives up from, the
	// default set ([DefaultContainerCapabilities]): canonical, sorted;
	// ALL for every one.
	CapAdd  []string `json:"cap_add,omitempty"`
	CapDrop []string `json:"cap_drop,omitempty"`
	// Restart is the restart and reschedule policy (restart.go); nil
	// restarts nothing, as --restart no.
	Restart *RestartPolicy `json:"restart,omitempty"`
	// Disks of a qemu guest, each over a copy-on-write overlay of its own.
	Disks []GuestDisk `json:"disks,omitempty"`
	// IDMap gives an lxc guest a user namespace mapping these uids and
	// gids (both) to the host's; none when empty: the container's root
	// is then the host's. See [DefaultIDMap].
	IDMap []IDRange `json:"idmap,omitempty"`
	// Network is the guest's network: NetworkBridge for an interface on
	// its node's bridge with an address from the node's range; "" (none)
	// for no interface but lo (lxc, qemu) or the host's (process).
	Network string `json:"network,omitempty"`
}

// Guest networks ([GuestDefined.Network]).
const (
	NetworkNone   = "none"
	NetworkBridge = "bridge"
)

// GuestPlaced assigns a guest to a node. The index of this event is the
// placement's generation: agents key their actions by (guest, generation),
// and reports about the guest name it.
type GuestPlaced struct {
	Node string `json:"node"`
	// CPUs are the exclusive CPUs the guest got on Node, when it asked for
	// pinning ("2-3").
	CPUs string `json:"cpus,omitempty"`
}

// GuestStartRequested sets a guest's desired state to running.
type GuestStartRequested struct{}

// GuestStopRequested sets a guest's desired state to stopped.
type GuestStopRequested struct{}

// GuestSuspendRequested pauses a guest where it runs: its groups are
// frozen (and a qemu guest's vCPUs stopped), as virsh suspend does.
type GuestSuspendRequested struct{}

// GuestResumeRequested lets a suspended guest run again.
type GuestResumeRequested struct{}

// GuestStarted is an agent's report that a guest runs inside its groups.
type GuestStarted struct {
	Node       string   `json:"node"`
	Generation uint64   `json:"generation"`
	PID        int      `json:"pid"`
	Cgroups    []string `json:"cgroups,omitempty"`
	// Restart is the run of the generation this is about: 0 for the
	// first, n after n guest.restarting events. A report about an
	// earlier run is refused.
	Restart int `json:"restart,omitempty"`
	// Addresses, MAC and Interface are a guest's network on the node's
	// bridge: its addresses (CIDR; a container's eth0, the address the
	// node gives a VM), its MAC and its host-side interface (veth or tap).
	Addresses []string `json:"addresses,omitempty"`
	MAC       string   `json:"mac,omitempty"`
	Interface string   `json:"interface,omitempty"`
}

// GuestExited is an agent's report that a guest's process ended, or that it
// could not be started (Error set).
type GuestExited struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Code       int    `json:"code"`
	Signal     string `json:"signal,omitempty"`
	OOMKilled  bool   `json:"oom_killed,omitempty"`
	Error      string `json:"error,omitempty"`
	// Restart is the run that ended (see GuestStarted.Restart).
	Restart int `json:"restart,omitempty"`
}

// GuestUndefined removes a guest. Its agent stops it and removes its groups.
type GuestUndefined struct{}

// GuestTuned changes one tunable of a guest. Old and New are canonical
// string forms (see Knobs); Live means apply to the running guest now,
// Persistent means keep it for later starts.
type GuestTuned struct {
	Knob       string `json:"knob"`
	Old        string `json:"old"`
	New        string `json:"new"`
	Live       bool   `json:"live"`
	Persistent bool   `json:"persistent"`
}

// ServerRegistered records a coordinator server's addresses so that any
// server can forward writes to the leader's HTTP API.
type ServerRegistered struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

// NodeUsage is one node's usage report for one interval: what the kernel
// counted for each of its guests. One event per node per interval.
type NodeUsage struct {
	IntervalMs int64        `json:"interval_ms"`
	Guests     []GuestUsage `json:"guests"`
	// Partitions are the node's partitions as it holds them.
	Partitions []PartitionApplied `json:"partitions,omitempty"`
}

// GuestUsage is one guest's counters, cumulative since it started.
type GuestUsage struct {
	Guest           string `json:"guest"`
	Generation      uint64 `json:"generation"`
	CPUNanos        uint64 `json:"cpu_ns"`
	UserNanos       uint64 `json:"user_ns,omitempty"`
	SystemNanos     uint64 `json:"system_ns,omitempty"`
	MemoryBytes     uint64 `json:"memory_bytes"`
	MemoryPeakBytes uint64 `json:"memory_peak_bytes,omitempty"`
	LimitHits       uint64 `json:"limit_hits"`
	Pids            uint64 `json:"pids,omitempty"`
}

// GuestLimitHit says a guest's memory limit was hit again: LimitHits is
// the counter now (failcnt, or memory.events max+oom on v2), Delta how much
// it rose since the last report.
type GuestLimitHit struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	LimitHits  uint64 `json:"limit_hits"`
	Delta      uint64 `json:"delta"`
}

// GuestTuningApplied is the agent's answer to a tuning: the value it
// actually wrote for the knob, in canonical form.
type GuestTuningApplied struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Knob       string `json:"knob"`
	Value      string `json:"value"`
}

// GuestDrift says a managed knob was found changed on the host (someone
// wrote the cgroup file by hand), and whether the agent put it back.
type GuestDrift struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Knob       string `json:"knob"`
	Expected   string `json:"expected"`
	Found      string `json:"found"`
	Corrected  bool   `json:"corrected"`
}

// NodeCleanup lists what an agent removed because the log does not name
// it: cgroups, processes, state directories.
type NodeCleanup struct {
	Removed []string `json:"removed"`
}

// Node eligibilities.
const (
	Eligible   = "eligible"
	Ineligible = "ineligible"
	Draining   = "draining"
)

// NodeEligibility says whether the scheduler may place new guests on a node.
// Draining also moves the node's guests elsewhere, at most MaxParallel at a
// time (0: all at once), and all remaining ones once Deadline passes.
type NodeEligibility struct {
	Eligibility string    `json:"eligibility"`
	Deadline    time.Time `json:"deadline,omitzero"`
	MaxParallel int       `json:"max_parallel,omitempty"`
}

// SchedulerConfig sets the cluster's placement policy.
type SchedulerConfig struct {
	Algorithm        string  `json:"algorithm"` // binpack or spread
	CPUOvercommit    float64 `json:"cpu_overcommit"`
	MemoryOvercommit float64 `json:"memory_overcommit"`
	// BalloonMemory counts a ballooned guest's memory for placement as its
	// balloon target (setmem) rather than its maximum (setmaxmem). Off by
	// default: a guest may take its maximum back when its target is
	// raised, which then finds no room.
	BalloonMemory bool `json:"balloon_memory,omitempty"`
}

func (*NodeRegistered) EventType() Type        { return TypeNodeRegistered }
func (*NodeEligibility) EventType() Type       { return TypeNodeEligibility }
func (*NodeUsage) EventType() Type             { return TypeNodeUsage }
func (*GuestLimitHit) EventType() Type         { return TypeGuestLimitHit }
func (*GuestTuningApplied) EventType() Type    { return TypeGuestTuningApplied }
func (*GuestDrift) EventType() Type            { return TypeGuestDrift }
func (*NodeCleanup) EventType() Type           { return TypeNodeCleanup }
func (*GuestSuspendRequested) EventType() Type { return TypeGuestSuspendRequested }
func (*GuestResumeRequested) EventType() Type  { return TypeGuestResumeRequested }
func (*SchedulerConfig) EventType() Type       { return TypeSchedulerConfig }
func (*NodeUp) EventType() Type                { return TypeNodeUp }
func (*NodeDown) EventType() Type              { return TypeNodeDown }
func (*GuestDefined) EventType() Type          { return TypeGuestDefined }
func (*GuestPlaced) EventType() Type           { return TypeGuestPlaced }
func (*GuestStartRequested) EventType() Type   { return TypeGuestStartRequested }
func (*GuestStopRequested) EventType() Type    { return TypeGuestStopRequested }
func (*GuestStarted) EventType() Type          { return TypeGuestStarted }
func (*GuestExited) EventType() Type           { return TypeGuestExited }
func (*GuestUndefined) EventType() Type        { return TypeGuestUndefined }
func (*GuestTuned) EventType() Type            { return TypeGuestTuned }
func (*ServerRegistered) EventType() Type      { return TypeServerRegistered }
