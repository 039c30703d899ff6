package api

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// HTTP headers of the API.
const (
	HeaderRequestID = "X-Corral-Request-ID"
	HeaderActor     = "X-Corral-Actor"
	// HeaderToken carries the secret of the caller's ACL token
	// ("Authorization: Bearer SECRET" works too).
	HeaderToken = "X-Corral-Token"
	// HeaderNodeSecret carries the secret a node's agent proves itself with.
	HeaderNodeSecret = "X-Corral-Node-Secret"
	// HeaderIndex on a response is the log index the answer reflects.
	HeaderIndex = "X-Corral-Index"
	// HeaderMinIndex on a stale read is the least index the answer may
	// reflect: the client's last write or read, so a stale read through
	// any server still sees the client's own writes.
	HeaderMinIndex = "X-Corral-Min-Index"
	// HeaderLogOffset says at which byte of the guest's log file the
	// answer of GET /v1/guests/{name}/logs starts.
	HeaderLogOffset = "X-Corral-Log-Offset"
)

// MaxBody bounds a request body.
const MaxBody = 1 << 20

// Guest statuses.
const (
	StatusPending = "pending" // defined, not placed
	StatusPlaced  = "placed"  // placed, not (yet) reported running
	StatusRunning = "running"
	StatusExited  = "exited"
	StatusFailed  = "failed" // the agent could not start it
)

// Desired states.
const (
	DesiredRunning = "running"
	DesiredStopped = "stopped"
)

// Node statuses.
const (
	NodeStatusUp   = "up"
	NodeStatusDown = "down"
)

// Guest is one guest as the log has it: its definition, placement, desired
// and reported state, tuning and last usage. It is the state machine's
// record and what the API shows.
type Guest struct {
	events.GuestDefined
	Desired    string `json:"desired"`
	Status     string `json:"status"`
	Node       string `json:"node,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	PID        int    `json:"pid,omitempty"`
	// Addresses, MAC and Interface are the guest's network on its node's
	// bridge, as its last start reported them.
	Addresses []string `json:"addresses,omitempty"`
	MAC       string   `json:"mac,omitempty"`
	Interface string   `json:"interface,omitempty"`
	// CPUs are the exclusive CPUs the placement chose, when pinned.
	CPUs string `json:"cpus,omitempty"`
	// MovedFrom is the node a drain or a node loss moved the guest off,
	// until the guest reports started on its new node.
	MovedFrom string `json:"moved_from,omitempty"`
	// LastNode is the node a guest ran on before it was taken off to be
	// placed again (started after its node's capacity went to others):
	// its placement prefers that node.
	LastNode string `json:"last_node,omitempty"`
	// StartAfterStop is set when a start was asked while a stop was still
	// on its way to the node (the guest was running, asked to stop): the
	// stop's exit then starts the guest again on its node.
	StartAfterStop bool `json:"start_after_stop,omitempty"`
	// HoldsCapacity is set in views of a guest that counts against its
	// node's capacity (it runs, is asked to, or keeps a reservation).
	HoldsCapacity bool `json:"holds_capacity,omitempty"`
	// Paused is set while the guest is asked to be suspended.
	Paused bool `json:"paused,omitempty"`
	// Applied holds the knob values the agent reports it wrote for the
	// current generation; Usage its last usage report.
	Applied map[string]string  `json:"applied,omitempty"`
	Usage   *events.GuestUsage `json:"usage,omitempty"`
	// TuningFailed holds, per knob, the host's last refusal of a value
	// for the current generation, until the knob is applied.
	TuningFailed map[string]*events.GuestTuningFailed `json:"tuning_failed,omitempty"`
	// Balloon is the host's last balloon report for the current
	// generation (target, actual, usage, compliance), and
	// BalloonNoncompliant its report that the guest missed the target in
	// time, until a later report finds it compliant.
	Balloon             *events.GuestBalloon             `json:"balloon,omitempty"`
	BalloonNoncompliant *events.GuestBalloonNoncompliant `json:"balloon_noncompliant,omitempty"`
	// Tuning is the persistent definition's tuning, what the next start
	// uses: knob -> canonical value, when not the default. LiveTuning
	// holds the running instance's values where they differ from it (a
	// --live change, or the old value a --config change left running);
	// it is emptied when the instance ends or the guest is placed again.
	Tuning      map[string]string   `json:"tuning,omitempty"`
	LiveTuning  map[string]string   `json:"live_tuning,omitempty"`
	LastExit    *events.GuestExited `json:"last_exit,omitempty"`
	CreateIndex uint64              `json:"create_index"`
	ModifyIndex uint64              `json:"modify_index"`

	// Restarts are its restarts and reschedules (restart.go).
	Restarts RestartStatus `json:"restarts,omitzero"`

	// Migration is its migration in progress, LastMigration the last
	// one that ended (migration.go).
	Migration     *Migration `json:"migration,omitempty"`
	LastMigration *Migration `json:"last_migration,omitempty"`
}

// Knob returns the value of a knob in force, in canonical form: the
// running instance's, which for a guest not running is its ConfigKnob.
func (g *Guest) Knob(name string) string {
	if v, ok := g.LiveTuning[name]; ok {
		return v
	}
	if _, tuned := g.Tuning[name]; name == "hard_limit" && !tuned {
		return g.defaultHardLimit(g.Knob("max_memory"))
	}
	return g.ConfigKnob(name)
}

// ConfigKnob returns the persistent value of a knob, what the guest's
// next start uses, in canonical form: its tuning, else what its
// definition implies, else the knob's default.
func (g *Guest) ConfigKnob(name string) string {
	if v, ok := g.Tuning[name]; ok {
		return v
	}
	switch name {
	case "cpu_shares":
		return fmt.Sprint(g.CPUShares)
	case "hard_limit":
		return g.defaultHardLimit(g.ConfigKnob("max_memory"))
	case "max_memory":
		return fmt.Sprint(g.definedMaxMemory())
	case "devices":
		return events.AllowedDevicesText(g.Devices)
	}
	k, err := events.LookupKnob(name)
	if err != nil {
		return ""
	}
	return k.Default
}

// Node is one host as the log has it.
type Node struct {
	events.NodeRegistered
	Status string `json:"status"`
	// Eligibility is eligible, ineligible or draining; Drain holds the
	// drain's deadline and parallelism while draining.
	Eligibility string                  `json:"eligibility"`
	Drain       *events.NodeEligibility `json:"drain,omitempty"`
	CreateIndex uint64                  `json:"create_index"`
	ModifyIndex uint64                  `json:"modify_index"`
}

// ServerInfo is a coordinator server's addresses.
type ServerInfo = events.ServerRegistered

// NodeView is a node with what is allocated on it.
type NodeView struct {
	Node
	// Agent is true for a node whose agent registered it with a secret,
	// false for a static node.
	Agent                bool  `json:"agent"`
	AllocatedMemoryBytes int64 `json:"allocated_memory_bytes"`
	AllocatedVCPUs       int   `json:"allocated_vcpus"`
	// CapacityMemoryBytes and CapacityVCPUs are what the node carries for
	// guests under the cluster's scheduler policy: its memory and CPUs
	// less the host reserve, times the overcommit ratios. Only guests that
	// run or are asked to (or keep a reservation) are allocated.
	CapacityMemoryBytes int64   `json:"capacity_memory_bytes"`
	CapacityVCPUs       int     `json:"capacity_vcpus"`
	CPUOvercommit       float64 `json:"cpu_overcommit"`
	Guests              int     `json:"guests"`
}

// NodeDetail is a node with what it holds.
type NodeDetail struct {
	NodeView
	GuestList []*Guest `json:"guest_list"`
}

// GuestView is a guest as the API shows it: its record and, while it waits
// for a placement, why no node takes it, one line per node.
type GuestView struct {
	Guest
	Unplaced []string `json:"unplaced,omitempty"`
}

// State is the cluster as of an index, as GET /v1/state answers it: the
// same views the list endpoints give, so every view agrees.
type State struct {
	Index     uint64                 `json:"index"`
	Servers   map[string]*ServerInfo `json:"servers"`
	Nodes     []NodeView             `json:"nodes"`
	Guests    []*Guest               `json:"guests"`
	Scheduler events.SchedulerConfig `json:"scheduler"`
}

// PlacementPreview is what a dry run answers: where the guest would go, or
// why it would stay pending.
type PlacementPreview struct {
	Node     string   `json:"node,omitempty"`
	CPUs     string   `json:"cpus,omitempty"`
	Score    float64  `json:"score,omitempty"`
	Ranked   int      `json:"ranked,omitempty"`
	Unplaced []string `json:"unplaced,omitempty"`
}

// WriteResult is the answer to a write: the indexes of the events it
// committed.
type WriteResult struct {
	Index   uint64   `json:"index"`
	Indexes []uint64 `json:"indexes"`
}

// Member is one coordinator server as `corral cluster members` shows it.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr,omitempty"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// CreateGuest defines a guest and, unless NoStart, asks for it to run.
type CreateGuest struct {
	Name      string            `json:"name"`
	Driver    string            `json:"driver"`
	Memory    string            `json:"memory"`
	VCPUs     int               `json:"vcpus"`
	CPUShares int               `json:"cpu_shares,omitempty"`
	Command   []string          `json:"command,omitempty"`
	Rootfs    string            `json:"rootfs,omitempty"`
	Kernel    string            `json:"kernel,omitempty"`
	Initrd    string            `json:"initrd,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Placement rules: constraints like "rack=a" or "rack!=b", a label key
	// to spread by (anti-affinity), and exclusive CPUs as an explicit
	// cpuset or a count for the scheduler to choose.
	Constraints []string `json:"constraints,omitempty"`
	SpreadBy    string   `json:"spread_by,omitempty"`
	CPUSet      string   `json:"cpuset,omitempty"`
	PinCPUs     int      `json:"pin_cpus,omitempty"`
	// Devices the guest may use beyond its minimal set: /dev/PATH[:rwm]
	// or c|b MAJOR:MINOR [rwm] (see events.CanonicalAllowedDevice).
	Devices []string `json:"devices,omitempty"`
	NoStart bool     `json:"no_start,omitempty"`
	// Partition is the cluster partition to create the guest in; fixed
	// for the guest's life.
	Partition string `json:"partition,omitempty"`
	// Reserve keeps the guest's capacity on its node while it is stopped.
	Reserve bool `json:"reserve,omitempty"`
	// Capabilities an lxc guest gets beyond, or gives up from, the
	// default set (events.DefaultContainerCapabilities), as capsh or
	// Docker writes them, or ALL.
	CapAdd  []string `json:"cap_add,omitempty"`
	CapDrop []string `json:"cap_drop,omitempty"`
	// Restart is the restart and reschedule policy (restart.go).
	Restart *RestartRequest `json:"restart,omitempty"`
	// Disks of a qemu guest as --disk takes them:
	// IMAGE[,format=raw|qcow2][,cache=MODE][,size=SIZE] (events.ParseDisk).
	Disks []string `json:"disks,omitempty"`
	// UserNS gives an lxc guest its own user namespace with the default
	// id map (events.DefaultIDMap); IDMap with these ranges instead,
	// each CONTAINER:HOST:COUNT for uids and gids alike.
	UserNS bool     `json:"userns,omitempty"`
	IDMap  []string `json:"idmap,omitempty"`
	// Network is "bridge" for an interface on the node's bridge, "none"
	// or "" for none (events.GuestDefined.Network).
	Network string `json:"network,omitempty"`
	// Tuning is the guest's persistent tuning from its first event on:
	// knob -> value as TuneGuest's Set takes it, recorded as guest.tuned
	// events (persistent scope) in the same proposal as its definition,
	// so the guest never exists without it (corral guest import).
	Tuning map[string]string `json:"tuning,omitempty"`
}

// GuestAction is start, stop, suspend, resume or destroy of one guest.
type GuestAction struct {
	Name   string `json:"name"`
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// TuneGuest changes knobs of a guest.
type TuneGuest struct {
	Name string            `json:"name"`
	Set  map[string]string `json:"set"`
	// Live and Persistent select where the change applies, as virsh's
	// --live and --config do: Live the running instance only (refused
	// for a guest not running), Persistent what the next start uses,
	// both both. Neither is virsh's --current: both for a running guest,
	// Persistent for one that is not.
	Live       bool   `json:"live,omitempty"`
	Persistent bool   `json:"persistent,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// SetNodeStatus declares a node up or down.
type SetNodeStatus struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// SetEligibility makes a node eligible or ineligible for new guests, or
// drains it.
type SetEligibility struct {
	ID          string    `json:"id"`
	Eligibility string    `json:"eligibility"`
	Deadline    time.Time `json:"deadline,omitzero"`
	MaxParallel int       `json:"max_parallel,omitempty"`
	Reason      string    `json:"reason,omitempty"`
}

// ReportItem is one thing an agent reports: an event payload, about one of
// its guests or about the node.
type ReportItem struct {
	Guest   string          `json:"guest,omitempty"`
	Type    events.Type     `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// NewReportItem encodes a payload as a report item.
func NewReportItem(guest string, p events.Payload) ReportItem {
	b, _ := json.Marshal(p)
	return ReportItem{Guest: guest, Type: p.EventType(), Payload: b}
}

// AgentReport is the body of POST /v1/nodes/{id}/report.
type AgentReport struct {
	Items []ReportItem `json:"items"`
}

// HeartbeatRequest is what an agent sends on its heartbeat subject.
type HeartbeatRequest struct {
	Secret string `json:"secret"`
}

// HeartbeatReply answers an agent's heartbeat: the leader's applied index
// and the index of the last event that concerned the agent's node, so an
// agent that missed one knows to list again.
type HeartbeatReply struct {
	Index     uint64 `json:"index"`
	NodeIndex uint64 `json:"node_index"`
	Error     string `json:"error,omitempty"`
}

// Desired is a node's desired state at an index: every guest the log
// places on it, as the host must run it.
type Desired struct {
	Index  uint64         `json:"index"`
	Node   *Node          `json:"node"`
	Guests []DesiredGuest `json:"guests"`
	// Partitions are every partition of the cluster: each node holds them all.
	Partitions []DesiredPartition `json:"partitions,omitempty"`
}

// DesiredGuest is one guest as its host must run it: the driver spec (in
// Definition), the placement generation, the desired state and every
// resource setting as the cgroup driver's own type, with the placement's
// pinned CPUs and every tuning already folded in. An agent needs nothing
// else to start, tune, suspend or stop it.
type DesiredGuest struct {
	Name string `json:"name"`
	// Generation is the index of the placement.
	Generation uint64 `json:"generation"`
	// Desired is running or stopped; Status what the log last heard
	// (placed, running, exited or failed).
	Desired    string              `json:"desired"`
	Status     string              `json:"status"`
	Paused     bool                `json:"paused,omitempty"`
	Definition events.GuestDefined `json:"definition"`
	// Resources are the guest's groups' settings: every field set is
	// managed (written at start, rewritten when it changes, watched for
	// drift).
	Resources cgroupdriver.Resources `json:"resources"`
	// Memory is the balloon target in bytes (virsh setmem's current
	// memory), at most the definition's memory; 0 leaves the guest all of
	// it. A qemu guest's balloon is set to it and its memory cgroup's soft
	// limit follows it plus QEMU's room; a process or lxc guest's soft
	// limit is it.
	Memory int64 `json:"memory,omitempty"`
	// Bandwidth is the guest's traffic shaping (domiftune); nil for none.
	Bandwidth *Bandwidth `json:"bandwidth,omitempty"`
	// BalloonEnforce is the guest's balloon_enforce knob: when it missed
	// its target for the agent's balloon timeout, the agent presses its
	// memory cgroup down to the soft limit by reclaim.
	BalloonEnforce bool `json:"balloon_enforce,omitempty"`
	// Restart is the generation's current run (RestartStatus.Run): the
	// agent names it in the run's reports.
	Restart int `json:"restart,omitempty"`
	// Migration is the node's part in the guest's migration, if any.
	Migration *DesiredMigration `json:"migration,omitempty"`
}

// NodeUpdate is what the leader publishes on a node's subject for every
// event that concerns the node: the event, and the guest it is about as
// the node must now run it (nil when the event is about no guest of the
// node, Removed when the guest left the node). Prev is the index of the
// previous event that concerned the node, so the agent can tell a gap.
type NodeUpdate struct {
	Index   uint64          `json:"index"`
	Prev    uint64          `json:"prev"`
	Event   json.RawMessage `json:"event"`
	Guest   *DesiredGuest   `json:"guest,omitempty"`
	Removed string          `json:"removed,omitempty"`
	// Partition is a partition as the node must now hold it;
	// PartitionRemoved names one deleted.
	Partition        *DesiredPartition `json:"partition,omitempty"`
	PartitionRemoved string            `json:"partition_removed,omitempty"`
}

// PublishGap is the body of a notice on bus.EventGapSubject: events From
// to To were committed but never published, and the leader's event store
// no longer holds them.
type PublishGap struct {
	From   uint64 `json:"from"`
	To     uint64 `json:"to"`
	Reason string `json:"reason"`
}

// LogChunkMax is the most an agent sends in one LogReply.
const LogChunkMax = 256 << 10

// LogRequest asks a node's agent for part of a guest's log.
type LogRequest struct {
	Guest string `json:"guest"`
	// Offset is the byte of the log file to start at.
	Offset int64 `json:"offset"`
	// Tail, when positive, starts that many bytes before the end of the
	// file instead of at Offset.
	Tail int64 `json:"tail,omitempty"`
	// Max bounds len(Data); the agent caps it at LogChunkMax.
	Max int `json:"max"`
}

// LogReply is an agent's answer to a LogRequest.
type LogReply struct {
	Data []byte `json:"data,omitempty"`
	// Next is the offset to ask for next; Size the file's size when read.
	Next int64 `json:"next"`
	Size int64 `json:"size"`
	// Truncated says the file was shorter than the offset asked for: its
	// head was cut to keep it under its cap (or a new run started it
	// again), and Data starts at the file's head, offset 0.
	Truncated bool `json:"truncated,omitempty"`
	// Code and Error say why the read failed; Code is one of the API's
	// error codes.
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}
