package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/api"
)

// guestMigrateCommand is corral guest migrate, as virsh migrate: live for
// a running QEMU guest, by a clean stop and start otherwise.
func (a *app) guestMigrateCommand() *cobra.Command {
	var (
		m      api.MigrateGuest
		abort  bool
		detach bool
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:     "migrate NAME",
		Short:   "Move a guest to another node: live for a running QEMU guest (as virsh migrate --live), else by a clean stop and start",
		Example: "  corral guest migrate vm1 --to n2\n  corral guest migrate job --offline\n  corral guest migrate vm1 --abort",
		Args:    oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if abort {
				res, err := c.AbortMigration(cmd.Context(), api.AbortMigration{Name: name, Reason: m.Reason})
				if err != nil {
					return err
				}
				return a.printWrite(res, "migration of guest "+name+" aborted")
			}
			m.Name = name
			res, err := c.Migrate(cmd.Context(), m)
			if err != nil {
				return err
			}
			if detach || a.json() || len(res.Indexes) == 0 {
				return a.printWrite(res, "migration of guest "+name+" requested")
			}
			id := res.Indexes[0]
			fmt.Fprintf(a.stdout, "migration of guest %s requested at index %d\n", name, id)
			// Follow the migration until it ends: progress as the source
			// reports it, then how it ended.
			deadline := time.Now().Add(wait)
			var last string
			for time.Now().Before(deadline) {
				g, err := c.Guest(cmd.Context(), name)
				if err != nil {
					return err
				}
				if mg := g.Migration; mg != nil && mg.ID == id {
					line := "  " + mg.Phase
					if p := mg.Progress; p != nil {
						line += fmt.Sprintf(": %s, %s of %s RAM sent, %s remaining, %.1fs", p.Status,
							formatBytes(p.TransferredBytes), formatBytes(p.TotalBytes), formatBytes(p.RemainingBytes), float64(p.ElapsedMs)/1000)
						if p.DiskRemaining > 0 {
							line += ", disk " + formatBytes(p.DiskRemaining) + " remaining"
						}
					}
					if line != last {
						fmt.Fprintln(a.stdout, line)
						last = line
					}
				} else if lm := g.LastMigration; lm != nil && lm.ID == id {
					if lm.Phase == api.MigrationAborted {
						return fmt.Errorf("migration of guest %s aborted: %s; the guest stays on node %s", name, lm.Reason, lm.From)
					}
					summary := fmt.Sprintf("guest %s migrated from %s to %s", name, lm.From, lm.To)
					if p := lm.Progress; p != nil {
						summary += fmt.Sprintf(" (downtime %dms, total %dms)", p.DowntimeMs, p.ElapsedMs)
					} else if lm.Offline {
						summary += " (stopped and started)"
					}
					_, err := fmt.Fprintln(a.stdout, summary)
					return err
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(250 * time.Millisecond):
				}
			}
			return fmt.Errorf("migration of guest %s did not end within %s; follow it with corral guest show %s", name, wait, name)
		},
	}
	f := cmd.Flags()
	f.StringVar(&m.To, "to", "", "target node (default: the scheduler's choice among the others)")
	f.BoolVar(&m.Offline, "offline", false, "move by a clean stop and a start on the target, for any guest")
	f.StringVar(&m.Reason, "reason", "", "why, recorded in the event")
	f.BoolVar(&abort, "abort", false, "abort the guest's migration before its switch; the source runs on")
	f.BoolVar(&detach, "detach", false, "return once the migration is requested")
	f.DurationVar(&wait, "wait", 10*time.Minute, "how long to follow the migration")
	return cmd
}
