package main

import (
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/spf13/cobra"
)

func (a *app) guestLogsCommand() *cobra.Command {
	var q api.LogQuery
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a guest's output (stdout and stderr, or a QEMU guest's serial console)",
		Long: `Print a guest's output as its node keeps it: stdout and stderr of a process or
container, the serial console of a QEMU guest. Any server answers; it reads the
log from the guest's node. The log is size-capped on the node, so the oldest
output may be gone. With --follow, new output is printed as the guest writes it
until Ctrl-C or the guest is destroyed.`,
		Example: "  corral guest logs web\n  corral guest logs web --follow\n  corral guest logs web --tail 4096 -f",
		Args:    oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			if q.Tail < 0 {
				return usagef("--tail %d must be a byte count ≥ 0", q.Tail)
			}
			c, err := a.readClient()
			if err != nil {
				return err
			}
			return c.Logs(cmd.Context(), name, q, a.stdout)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&q.Follow, "follow", "f", false, "keep printing new output until Ctrl-C")
	f.Int64Var(&q.Tail, "tail", 0, "start this many bytes before the end (0: from the start of the log)")
	return cmd
}
