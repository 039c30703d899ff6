package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/api"
)

// setmaxmem, as virsh has it: a guest's maximum memory (knob max_memory),
// a qemu guest's RAM (-m) and the base of every guest's hard limit. A
// running guest keeps its maximum until it stops, so the change is always
// to the persistent definition.

func (a *app) setmaxmemCommand() *cobra.Command {
	var o tuneOptions
	cmd := &cobra.Command{
		Use:   "setmaxmem NAME SIZE [--config|--live|--current]",
		Short: "Set a guest's maximum memory, like virsh setmaxmem",
		Long: `Set the most memory a guest may have: a qemu guest's RAM (QEMU's -m), and the
base of its memory cgroup's hard limit (for qemu the maximum plus QEMU's own
room, the larger of 256MiB and a quarter of it) unless memtune --hard-limit
sets one. corral setmem's balloon target stays at most this.

A running guest cannot change its maximum (virsh refuses --live for QEMU and
LXC too): --live is refused, and --config, --current and no flag all change
what the guest's next start uses, printing the running value beside it.
Lowering the maximum below the guest's persistent balloon target lowers the
target with it, as virsh lowers currentMemory. A maximum that would no longer
fit on the guest's node is refused. As with virsh, a plain number is KiB.`,
		Example: `  corral setmaxmem web 1GiB --config
  corral setmaxmem web 1048576`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("give a guest NAME and a SIZE (got %d arguments)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			v, err := parseMemSize("max_memory", args[1])
			if err != nil {
				return err
			}
			if o.current && (o.live || o.config) {
				return usagef("--current means the running guest if it runs, else its definition: give it alone, not with --live or --config")
			}
			// The server refuses a live change with what to do instead;
			// every other scope is the persistent definition.
			g, err := a.sendTuneSet(cmd.Context(), name, map[string]string{"max_memory": v}, o.live, o.config, o.reason)
			if err != nil {
				return err
			}
			return a.printMaxMemory(g)
		},
	}
	o.flags(cmd)
	return a.clientFlags(cmd)
}

// printMaxMemory prints a guest's maximum and current memory, the running
// instance's and its next start's, as virsh dominfo names them.
func (a *app) printMaxMemory(g *api.Guest) error {
	if a.json() {
		return writeJSON(a.stdout, map[string]any{"max_memory": g.Knob("max_memory"), "config_max_memory": g.ConfigKnob("max_memory"),
			"memory": g.Knob("memory"), "config_memory": g.ConfigKnob("memory")})
	}
	rows := [][2]string{{"max_memory", formatKnob("max_memory", g.ConfigKnob("max_memory"))}, {"memory", balloonText(g.ConfigKnob("memory"))}}
	if g.Status == api.StatusRunning && (g.Knob("max_memory") != g.ConfigKnob("max_memory") || g.Knob("memory") != g.ConfigKnob("memory")) {
		rows = append(rows, [2]string{"running_max", formatKnob("max_memory", g.Knob("max_memory")) + " (the running guest's, until it stops)"},
			[2]string{"running_memory", balloonText(g.Knob("memory"))})
	}
	return printParams(a.stdout, rows)
}

// balloonText prints a balloon target; none leaves the guest its maximum.
func balloonText(v string) string {
	if v == "" {
		return "all of it (no setmem target)"
	}
	return formatKnob("memory", v)
}

// printMemory adds guest show's rows of a guest's maximum and current
// memory, as virsh dominfo's "Max memory" and "Used memory": the values in
// force, and what the next start uses where it differs.
func printMemory(t *table, g *api.Guest) {
	next := func(knob string, show func(string) string) string {
		v := show(g.Knob(knob))
		if c := g.ConfigKnob(knob); c != g.Knob(knob) {
			v += " (next start: " + show(c) + ")"
		}
		return v
	}
	t.row("Max memory:", next("max_memory", func(v string) string { return formatKnob("max_memory", v) })+" (corral setmaxmem)")
	t.row("Current memory:", next("memory", balloonText)+" (corral setmem)")
}
