package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

func (a *app) clusterCommand() *cobra.Command {
	cmd := groupCommand("cluster", "Inspect and change the set of coordinator servers")
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
	cmd.AddCommand(a.clusterRemovePeerCommand())
	return a.clientFlags(cmd)
}

func (a *app) clusterRemovePeerCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove-peer ID",
		Short: "Remove a coordinator server from the cluster",
		Long: `Remove a coordinator server from the raft configuration: it no longer counts
towards quorum and receives no more of the log. Use it for a server that is gone
for good, or one that joined with a wrong address. The leader cannot remove
itself: stop it first, and once another server leads, remove it through that
one. To bring a removed server back, start it again with --join.`,
		Example: "  corral cluster remove-peer s3\n  corral cluster remove-peer s3 --addr 127.0.0.1:5646",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := events.ValidateID("server id", id); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.RemovePeer(cmd.Context(), id); err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, api.RemovedPeer{Removed: id})
			}
			_, err = fmt.Fprintf(a.stdout, "server %s removed from the cluster\n", id)
			return err
		},
	}
}
