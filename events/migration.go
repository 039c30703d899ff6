package events

import (
	"net"
	"strconv"
)

// A migration moves a guest from one node to another as a sequence of
// events, each the step one party took, so that a crash of either agent
// or of the leader resumes from the log and leaves exactly one running
// copy (see the README's Migration section):
//
//	guest.migration_requested    the target is chosen and reserved; the guest
//	                             holds capacity on both nodes. Its index is the
//	                             target instance's generation.
//	guest.migration_target_ready the target QEMU listens for the migration stream
//	guest.migration_progress     the source's transfer, at most once a second
//	guest.migration_switched     the target holds the whole guest: the commit
//	                             point. The guest is placed on the target from
//	                             here, and only then does the target run it.
//	guest.migrated               the source's copy is gone, its capacity released
//	guest.migration_aborted      any failure before the switch: the target's
//	                             copy goes, the source's runs on
//
// An offline migration (--offline, and every process or lxc guest) is
// only requested: the source stops the guest cleanly, and its exit places
// it on the target, where it starts.

// Migration statuses as the source's QEMU reports them (query-migrate).
const (
	MigrationActive    = "active"
	MigrationCompleted = "completed"
)

// GuestMigrationRequested asks for a guest to move from From to To. The
// subject node is To. Generation is the source placement's generation,
// CPUs the exclusive CPUs reserved on To.
type GuestMigrationRequested struct {
	From       string `json:"from"`
	To         string `json:"to"`
	Generation uint64 `json:"generation"`
	CPUs       string `json:"cpus,omitempty"`
	// Offline moves the guest by a clean stop and a start on To.
	Offline bool `json:"offline,omitempty"`
}

// GuestMigrationTargetReady is the target agent's report that its QEMU
// waits for the migration stream at Address (host:port). Generation is
// the migration's (the index of its request).
type GuestMigrationTargetReady struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Address    string `json:"address"`
}

// GuestMigrationProgress is the source agent's report of the transfer:
// Generation is the source placement's, Migration the request's index.
// The last report (Status completed) carries QEMU's downtime and total
// time.
type GuestMigrationProgress struct {
	Node             string `json:"node"`
	Generation       uint64 `json:"generation"`
	Migration        uint64 `json:"migration"`
	Status           string `json:"status"`
	TransferredBytes int64  `json:"transferred_bytes"`
	RemainingBytes   int64  `json:"remaining_bytes"`
	TotalBytes       int64  `json:"total_bytes"`
	DiskRemaining    int64  `json:"disk_remaining_bytes,omitempty"`
	ElapsedMs        int64  `json:"elapsed_ms"`
	DowntimeMs       int64  `json:"downtime_ms,omitempty"`
}

// GuestMigrationSwitched is the target agent's report that its QEMU
// received the whole guest (paused, not yet running): once committed the
// guest is placed on the target at the migration's generation and the
// target resumes it.
type GuestMigrationSwitched struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	PID        int    `json:"pid"`
}

// GuestMigrated is the source agent's report that its copy of a guest
// that switched over is destroyed: the migration is done and the source
// node's capacity released. Generation is the source placement's.
type GuestMigrated struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Migration  uint64 `json:"migration"`
}

// GuestMigrationAborted ends a migration before its switch: the target's
// copy is destroyed and the source's runs on. Node is the reporting node
// (either end), empty when the leader or an operator aborts it.
type GuestMigrationAborted struct {
	Node      string `json:"node,omitempty"`
	Migration uint64 `json:"migration"`
	Reason    string `json:"reason"`
}

// Validate checks a migration request.
func (p *GuestMigrationRequested) Validate() error {
	if err := ValidateID("from", p.From); err != nil {
		return err
	}
	if err := ValidateID("to", p.To); err != nil {
		return err
	}
	if p.From == p.To {
		return fieldErr("to", p.To, "name a node other than the one the guest is on")
	}
	return nil
}

// Validate checks a target's address.
func (p *GuestMigrationTargetReady) Validate() error {
	host, port, err := net.SplitHostPort(p.Address)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return fieldErr("address", truncate(p.Address), "give the host:port the target QEMU listens on")
	}
	return nil
}

// Validate checks a progress report.
func (p *GuestMigrationProgress) Validate() error {
	if p.Status == "" || len(p.Status) > 32 {
		return fieldErr("status", truncate(p.Status), "give QEMU's migration status")
	}
	if p.TransferredBytes < 0 || p.RemainingBytes < 0 || p.TotalBytes < 0 || p.ElapsedMs < 0 || p.DowntimeMs < 0 || p.DiskRemaining < 0 {
		return fieldErr("transferred_bytes", strconv.FormatInt(p.TransferredBytes, 10), "byte counts and times are never negative")
	}
	return nil
}

// Validate checks an abort.
func (p *GuestMigrationAborted) Validate() error {
	if p.Reason == "" || len(p.Reason) > MaxTuningError {
		return fieldErr("reason", truncate(p.Reason), "say why the migration was aborted in 1 to "+strconv.Itoa(MaxTuningError)+" bytes")
	}
	return nil
}

func (*GuestMigrationRequested) EventType() Type   { return TypeGuestMigrationRequested }
func (*GuestMigrationTargetReady) EventType() Type { return TypeGuestMigrationTargetReady }
func (*GuestMigrationProgress) EventType() Type    { return TypeGuestMigrationProgress }
func (*GuestMigrationSwitched) EventType() Type    { return TypeGuestMigrationSwitched }
func (*GuestMigrated) EventType() Type             { return TypeGuestMigrated }
func (*GuestMigrationAborted) EventType() Type     { return TypeGuestMigrationAborted }
