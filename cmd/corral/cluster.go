package main

import (
	"github.com/spf13/cobra"
)

func (a *app) clusterCommand() *cobra.Command {
	cmd := groupCommand("cluster", "Inspect the coordinator servers")
	cmd.AddCommand(&cobra.Command{
		Use:     "members",
		Short:   "List the coordinator servers, their addresses and the leader",
		Example: "  corral cluster members\n  corral cluster members --addr 127.0.0.1:5646 -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			ms, err := c.Members(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, ms)
			}
			t := newTable(a.stdout, "ID", "RAFT", "HTTP", "SUFFRAGE", "LEADER")
			for _, m := range ms {
				t.row(m.ID, m.RaftAddr, m.HTTPAddr, m.Suffrage, yesNo(m.Leader))
			}
			return t.flush()
		},
	})
	return a.clientFlags(cmd)
}
