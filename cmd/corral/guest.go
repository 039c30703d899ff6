package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

func (a *app) guestCommand() *cobra.Command {
	cmd := groupCommand("guest", "Create, inspect, start, stop and destroy guests")
	cmd.AddCommand(
		a.guestCreateCommand(),
		a.guestImportCommand(),
		a.guestListCommand(),
		a.guestShowCommand(),
		a.guestActionCommand("start", "Ask for a guest to run", "start requested"),
		a.guestActionCommand("stop", "Ask for a guest to stop", "stop requested"),
		a.guestActionCommand("destroy", "Stop a guest and remove its definition", "destroyed"),
		a.guestActionCommand("suspend", "Pause a running guest: freeze its groups (and stop a VM's vCPUs), like virsh suspend", "suspend requested"),
		a.guestActionCommand("resume", "Let a suspended guest run again, like virsh resume", "resume requested"),
		a.guestHistoryCommand(),
		a.guestLogsCommand(),
		a.guestConsoleCommand(),
		a.guestMigrateCommand(),
	)
	return a.clientFlags(cmd)
}

// oneName is the Args check of commands that take exactly one NAME.
func oneName(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("give exactly one guest NAME (got %d arguments)", len(args))
	}
	return nil
}

// guestName checks the NAME argument before anything goes over the wire.
func guestName(args []string) (string, error) {
	return args[0], events.ValidateID("guest name", args[0])
}

func (a *app) guestListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List every guest",
		Example: "  corral guest list\n  corral guest list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.readClient()
			if err != nil {
				return err
			}
			gs, err := c.Guests(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, gs)
			}
			t := newTable(a.stdout, "NAME", "DRIVER", "DESIRED", "STATUS", "NODE", "MEMORY", "VCPUS", "CPU_SHARES")
			for _, g := range gs {
				t.row(g.Name, g.Driver, g.Desired, g.Status, g.Node, formatBytes(g.MemoryBytes), strconv.Itoa(g.VCPUs), g.Knob("cpu_shares"))
			}
			return t.flush()
		},
	}
}

func (a *app) guestShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a guest: desired and actual status, placement, resources, tuning, last exit",
		Example: "  corral guest show web\n  corral guest show web -o json",
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
			g, err := c.Guest(cmd.Context(), name)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, g)
			}
			return printGuest(a, g)
		},
	}
}

func printGuest(a *app, gv *api.GuestView) error {
	g := &gv.Guest
	t := newTable(a.stdout, "Name:", g.Name)
	t.row("Driver:", g.Driver)
	t.row("Desired:", g.Desired)
	status := g.Status
	if g.Paused {
		status += " (suspended)"
	}
	t.row("Status:", status)
	switch {
	case g.Node == "" && g.LastNode != "":
		t.row("Node:", "none yet (last ran on "+g.LastNode+", which a placement prefers)")
	default:
		t.row("Node:", g.Node)
	}
	switch {
	case g.HoldsCapacity && g.Reserve:
		t.row("Capacity:", "reserved on its node, also while stopped (--reserve)")
	case g.HoldsCapacity:
		t.row("Capacity:", "held on its node while it runs")
	case g.Node != "":
		t.row("Capacity:", "released: stopped or ended, it keeps its node but not its vCPUs and memory; a start takes them again if they are free, or places it elsewhere")
	}
	if g.Partition != "" {
		t.row("Partition:", g.Partition)
	}
	gen, pid := "", ""
	if g.Generation > 0 {
		gen = formatUint(g.Generation)
	}
	if g.PID > 0 {
		pid = strconv.Itoa(g.PID)
	}
	t.row("Generation:", gen)
	t.row("PID:", pid)
	t.row("Memory:", formatBytes(g.MemoryBytes)+" (at create)")
	printMemory(t, g)
	t.row("VCPUs:", strconv.Itoa(g.VCPUs))
	if len(g.Command) > 0 {
		t.row("Command:", joinCommand(g.Command))
	}
	for _, kv := range [][2]string{{"Rootfs:", g.Rootfs}, {"Kernel:", g.Kernel}, {"Initrd:", g.Initrd}} {
		if kv[1] != "" {
			t.row(kv[0], kv[1])
		}
	}
	printDisks(t, g)
	if len(g.Labels) > 0 {
		t.row("Labels:", formatMap(g.Labels))
	}
	printNetwork(t, g)
	if g.Driver == events.DriverLXC {
		printIsolation(t, &g.GuestDefined)
	}
	t.row("Tuning:", "desired / applied on the host (- : not written, the host default holds; a live-only value says what the next start uses)")
	var unset []string
	for _, k := range events.KnobNames() {
		if qemuOnlyKnob(k) && g.Driver != events.DriverQEMU {
			continue // a process or container has no emulator threads
		}
		applied := "-"
		if v, ok := g.Applied[k]; ok {
			applied = formatKnob(k, v)
		}
		desired := formatKnob(k, g.Knob(k))
		_, liveOnly := g.LiveTuning[k]
		if desired == "" && applied == "-" && !liveOnly {
			unset = append(unset, k)
			continue
		}
		if desired == "" {
			desired = "-"
		}
		row := desired + " / " + applied
		if liveOnly {
			row += " (live only; next start: " + formatKnob(k, g.ConfigKnob(k)) + ")"
		}
		t.row("  "+k, row)
	}
	if len(unset) > 0 {
		t.row("  not set", strings.Join(unset, ", "))
	}
	if len(g.TuningFailed) > 0 {
		t.row("Tuning failed:", "values the host refused; tune the knob again with a value it takes")
		for _, k := range slices.Sorted(maps.Keys(g.TuningFailed)) {
			f := g.TuningFailed[k]
			t.row("  "+k, fmt.Sprintf("%s (generation %d on %s): %s", formatKnob(k, f.Value), f.Generation, f.Node, f.Error))
		}
	}
	if target := g.Knob("memory"); target != "" {
		// The balloon target is a size; formatKnob of "hard_limit" prints it with units.
		t.row("Balloon:", "target "+formatKnob("memory", target)+" (corral setmem)")
		if b := g.Balloon; b != nil {
			of := ""
			if strconv.FormatInt(b.Target, 10) != target {
				of = ", reported for the earlier target " + formatBytes(b.Target)
			}
			t.row("  actual", fmt.Sprintf("%s (generation %d on %s%s)", formatBytes(b.Actual), b.Generation, b.Node, of))
			t.row("  usage", formatBytes(b.Usage))
			t.row("  compliant", strconv.FormatBool(b.Compliant))
		} else {
			t.row("  actual", "not reported yet")
		}
		if n := g.BalloonNoncompliant; n != nil {
			enforced := ""
			if n.Enforced {
				enforced = fmt.Sprintf("; pressed by reclaim (balloon_enforce): %s came back, it holds %s", formatBytes(n.Reclaimed), formatBytes(n.UsageAfter))
				if n.ReclaimError != "" {
					enforced += "; the kernel could not reclaim the rest: " + n.ReclaimError
				}
			}
			t.row("  noncompliant", fmt.Sprintf("held %s, above the target %s, for %s (generation %d on %s)%s",
				formatBytes(n.Actual), formatBytes(n.Target), time.Duration(n.WaitedMs)*time.Millisecond, n.Generation, n.Node, enforced))
		}
	}
	if u := g.Usage; u != nil {
		t.row("Usage:", fmt.Sprintf("cpu %s, memory %s (peak %s), limit hits %d, pids %d",
			time.Duration(u.CPUNanos).Round(time.Millisecond), formatBytes(int64(u.MemoryBytes)), formatBytes(int64(u.MemoryPeakBytes)), u.LimitHits, u.Pids))
	}
	last := "none"
	if g.LastExit != nil {
		last = fmt.Sprintf("%s (generation %d on %s)", formatExit(g.LastExit), g.LastExit.Generation, g.LastExit.Node)
	}
	t.row("Last exit:", last)
	restartRows(t, g)
	if len(g.Constraints) > 0 {
		t.row("Constraints:", strings.Join(g.Constraints, ", "))
	}
	if g.SpreadBy != "" {
		t.row("Spread by:", g.SpreadBy)
	}
	switch {
	case g.CPUs != "":
		t.row("Pinned CPUs:", g.CPUs)
	case g.CPUSet != "":
		t.row("Pinned CPUs:", g.CPUSet+" (requested)")
	case g.PinCPUs > 0:
		t.row("Pinned CPUs:", strconv.Itoa(g.PinCPUs)+" (requested)")
	}
	if g.MovedFrom != "" {
		t.row("Moving from:", g.MovedFrom)
	}
	t.row("Created:", "index "+formatUint(g.CreateIndex))
	t.row("Modified:", "index "+formatUint(g.ModifyIndex))
	if err := t.flush(); err != nil {
		return err
	}
	if len(gv.Unplaced) > 0 {
		fmt.Fprintln(a.stdout, "Placement:")
		for _, l := range gv.Unplaced {
			fmt.Fprintln(a.stdout, "  "+strings.TrimSpace(l))
		}
	}
	return nil
}

func (a *app) guestActionCommand(action, short, done string) *cobra.Command {
	return &cobra.Command{
		Use:     action + " NAME",
		Short:   short,
		Example: fmt.Sprintf("  corral guest %s web", action),
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
			res, err := c.GuestAction(cmd.Context(), name, action)
			if err != nil {
				return err
			}
			return a.printWrite(res, fmt.Sprintf("guest %s %s", name, done))
		},
	}
}

// printWrite reports a committed write: its JSON answer, or what happened
// and at which index.
func (a *app) printWrite(res api.WriteResult, what string) error {
	if a.json() {
		return writeJSON(a.stdout, res)
	}
	if len(res.Indexes) == 0 {
		_, err := fmt.Fprintf(a.stdout, "%s: nothing changed (at index %d)\n", what, res.Index)
		return err
	}
	idx := make([]string, len(res.Indexes))
	for i, n := range res.Indexes {
		idx[i] = formatUint(n)
	}
	word := "index"
	if len(idx) > 1 {
		word = "indexes"
	}
	_, err := fmt.Fprintf(a.stdout, "%s (%s %s)\n", what, word, strings.Join(idx, ", "))
	return err
}

// qemuOnlyKnob reports a knob that only a QEMU guest's threads have.
func qemuOnlyKnob(k string) bool {
	return strings.HasPrefix(k, "emulator_") || strings.HasPrefix(k, "global_")
}
