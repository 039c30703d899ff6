package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) guestHistoryCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "history NAME",
		Short: "List every retained event about a guest, with old → new values of tuning",
		Long: `List every retained event about a guest, oldest first: INDEX TIME TYPE ACTOR
DETAILS. Tuning rows show the knob with its old and new value, such as
"cpu_shares 1024 → 500". The history outlives the guest: it works after destroy.
With -o json each event is one JSON object per line, as with corral events.`,
		Example: "  corral guest history web\n  corral guest history web -o json",
		Args:    oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			c, err := a.readClient()
			if err != nil {
				return err
			}
			out := a.eventWriter(false, false)
			if err := c.History(cmd.Context(), name, out.write); err != nil {
				return err
			}
			if out.n == 0 {
				return fmt.Errorf("no retained events about guest %q: it never existed, or retention dropped its history", name)
			}
			return out.flush()
		},
	}
}
