package api

import (
	"context"

	"github.com/corral-dev/corral/events"
)

// Migration phases, as a guest's Migration and its DesiredGuest carry
// them (see events/migration.go for the sequence).
const (
	// MigrationRequested: the target is reserved and starts its QEMU.
	MigrationRequested = "requested"
	// MigrationTargetReady: the target QEMU listens; the source sends.
	MigrationTargetReady = "target_ready"
	// MigrationSwitched: the target holds the guest and runs it; the
	// source destroys its copy.
	MigrationSwitched = "switched"
	// MigrationStopping: an offline migration waits for the source to
	// stop the guest.
	MigrationStopping = "stopping"
	// MigrationDone and MigrationAborted end a guest's LastMigration.
	MigrationDone    = "migrated"
	MigrationAborted = "aborted"
)

// The two ends of a migration, as a DesiredGuest names its node's part.
const (
	MigrationSource = "source"
	MigrationTarget = "target"
)

// Migration is a guest's migration in progress (Guest.Migration) or its
// last one (Guest.LastMigration).
type Migration struct {
	// ID is the index of the request: the target instance's generation.
	ID             uint64 `json:"id"`
	From           string `json:"from"`
	To             string `json:"to"`
	FromGeneration uint64 `json:"from_generation"`
	// CPUs are the exclusive CPUs reserved on To.
	CPUs    string `json:"cpus,omitempty"`
	Offline bool   `json:"offline,omitempty"`
	Phase   string `json:"phase"`
	// Address is where the target QEMU listens, once it is ready.
	Address  string                         `json:"address,omitempty"`
	Progress *events.GuestMigrationProgress `json:"progress,omitempty"`
	// Reason says why an aborted migration was aborted.
	Reason string `json:"reason,omitempty"`
	// EndIndex is the index of the event that ended it.
	EndIndex uint64 `json:"end_index,omitempty"`
}

// DesiredMigration is a node's part in a guest's migration.
type DesiredMigration struct {
	ID      uint64 `json:"id"`
	Role    string `json:"role"`
	Phase   string `json:"phase"`
	Address string `json:"address,omitempty"`
	// Generation is the source instance's.
	SourceGeneration uint64 `json:"source_generation"`
}

// MigrateGuest is the body of POST /v1/guests/{name}/migrate.
type MigrateGuest struct {
	Name string `json:"name"`
	// To is the target node; empty lets the scheduler choose.
	To string `json:"to,omitempty"`
	// Offline moves the guest by a clean stop and a start on the target.
	Offline bool   `json:"offline,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// AbortMigration is the body of POST /v1/guests/{name}/migrate/abort.
type AbortMigration struct {
	Name   string `json:"name"`
	Reason string `json:"reason,omitempty"`
}

// Migrate asks for guest m.Name to migrate (POST /v1/guests/{name}/migrate).
func (c *Client) Migrate(ctx context.Context, m MigrateGuest) (WriteResult, error) {
	if err := events.ValidateID("guest name", m.Name); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "POST", "/v1/guests/"+m.Name+"/migrate", m)
}

// AbortMigration aborts guest a.Name's migration before its switch.
func (c *Client) AbortMigration(ctx context.Context, a AbortMigration) (WriteResult, error) {
	if err := events.ValidateID("guest name", a.Name); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "POST", "/v1/guests/"+a.Name+"/migrate/abort", a)
}
