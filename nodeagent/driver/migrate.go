package driver

import (
	"context"
	"fmt"
	"net"
	"strconv"
)

// Live migration over QMP. The source sends with [QMP.Migrate] to a
// target QEMU started with [Spec.Incoming]; disks move by QEMU's
// incremental block migration (only each overlay's own clusters: the
// base image must be on the target at the same path), so a guest over
// per-guest overlays needs no shared storage, only its base image.

// MigrationInfo is what query-migrate reports (the fields corral uses).
type MigrationInfo struct {
	Status string `json:"status"`
	// TotalTime and Downtime are in milliseconds; Downtime is set once
	// the migration completed.
	TotalTime int64 `json:"total-time"`
	Downtime  int64 `json:"downtime"`
	RAM       struct {
		Transferred int64 `json:"transferred"`
		Remaining   int64 `json:"remaining"`
		Total       int64 `json:"total"`
	} `json:"ram"`
	Disk *struct {
		Transferred int64 `json:"transferred"`
		Remaining   int64 `json:"remaining"`
		Total       int64 `json:"total"`
	} `json:"disk"`
	ErrorDesc string `json:"error-desc"`
}

// Migrate starts sending the VM to the target listening at address
// (host:port); with disks, their overlays go too. It returns once QEMU
// took the command: [QMP.QueryMigrate] follows the transfer.
func (q *QMP) Migrate(ctx context.Context, address string, disks bool, maxBandwidth int64) error {
	if maxBandwidth > 0 {
		if err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": maxBandwidth}, nil); err != nil {
			return err
		}
	}
	args := map[string]any{"uri": "tcp:" + address}
	if disks {
		args["inc"] = true
	}
	return q.Execute(ctx, "migrate", args, nil)
}

// QueryMigrate reports the migration's state, on either end.
func (q *QMP) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var info MigrationInfo
	err := q.Execute(ctx, "query-migrate", nil, &info)
	return info, err
}

// MigrateCancel cancels the migration the VM is sending; the source runs
// on.
func (q *QMP) MigrateCancel(ctx context.Context) error {
	return q.Execute(ctx, "migrate_cancel", nil, nil)
}

// FreePort returns a TCP port free on host now, for a target QEMU to
// listen on. Another process may take it before QEMU does: the start
// then fails and is retried with another.
func FreePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("corral: no free port on %s for a migration: %w", host, err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return strconv.Atoi(port)
}
