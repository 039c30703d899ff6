package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator"
)

func (a *app) nodeCommand() *cobra.Command {
	cmd := groupCommand("node", "Inspect the hosts guests run on")
	cmd.AddCommand(&cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List nodes with their capacity and what is allocated on them",
		Example: "  corral node list\n  corral node list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, nodes)
			}
			t := nodeTable(a)
			for _, n := range nodes {
				nodeRow(t, &n.Node, n.AllocatedMemoryBytes, n.AllocatedVCPUs, n.Guests)
			}
			return t.flush()
		},
	})
	return a.clientFlags(cmd)
}

func nodeTable(a *app) *table {
	return newTable(a.stdout, "ID", "STATUS", "CPUS", "MEMORY", "ALLOCATED", "GUESTS")
}

func nodeRow(t *table, n *coordinator.Node, mem int64, vcpus, guests int) {
	t.row(n.ID, n.Status, strconv.Itoa(n.CPUs), formatBytes(n.MemoryBytes),
		fmt.Sprintf("%s, %d vCPU", formatBytes(mem), vcpus), strconv.Itoa(guests))
}
