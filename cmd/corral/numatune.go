package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// numatune, emulatorpin and vcpupin, as virsh has them: the knobs
// numa_mode and numa_nodeset, emulatorpin, and vcpupin (every vCPU's
// list in one value, "0:1;1:0-1"). Each change is a guest.tuned event.

func (a *app) numatuneCommand() *cobra.Command {
	var (
		o             tuneOptions
		mode, nodeset string
	)
	cmd := &cobra.Command{
		Use:   "numatune NAME [--mode strict|preferred|interleave|restrictive] [--nodeset LIST] [--live|--config|--current]",
		Short: "Show or set a guest's NUMA memory mode and nodes, like virsh numatune",
		Long: `Show a guest's NUMA memory parameters or change them, as virsh numatune does.

strict and restrictive confine the guest's memory to the nodeset with the
cpuset controller (cpuset.mems of its group and, for a QEMU guest, of its
vcpuN and emulator groups); the nodeset can change while the guest runs.
preferred and interleave are a memory policy (set_mempolicy) the guest's
process gets when it starts, inherited by all its threads; they change with
--config only. As in virsh, the mode of a running guest cannot change: give
--config, and the next start uses it. The nodeset must name memory nodes of
the guest's node (numa_nodes in corral node show ID -o json). Without a nodeset a guest may use
every node its node lets guests use.
` + scopeHelp,
		Example: `  corral numatune web
  corral numatune web --nodeset 0
  corral numatune web --mode interleave --nodeset 0-1 --config`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			set := map[string]string{}
			for knob, v := range map[string]string{"numa_mode": mode, "numa_nodeset": nodeset} {
				if !cmd.Flags().Changed(strings.TrimPrefix(knob, "numa_")) {
					continue
				}
				k, err := events.LookupKnob(knob)
				if err != nil {
					return err
				}
				if set[knob], err = k.Canonical(v); err != nil {
					return err
				}
			}
			g, err := a.tune(cmd.Context(), name, set, o)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, map[string]string{"numa_mode": g.Knob("numa_mode"), "numa_nodeset": g.Knob("numa_nodeset")})
			}
			return printParams(a.stdout, [][2]string{{"numa_mode", g.Knob("numa_mode")}, {"numa_nodeset", g.Knob("numa_nodeset")}})
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "", "strict, preferred, interleave or restrictive")
	cmd.Flags().StringVar(&nodeset, "nodeset", "", "memory nodes, such as 0 or 0-1")
	o.flags(cmd)
	return a.clientFlags(cmd)
}

func (a *app) emulatorpinCommand() *cobra.Command {
	var o tuneOptions
	cmd := &cobra.Command{
		Use:   "emulatorpin NAME [CPULIST] [--live|--config|--current]",
		Short: "Show or pin a QEMU guest's emulator threads, like virsh emulatorpin",
		Long: `Show the CPUs a QEMU guest's emulator threads (every QEMU thread that is not a
vCPU) may run on or, with CPULIST, pin them: the cpuset.cpus of the guest's
emulator group. The list must lie within the guest's own cpuset (guest
create --cpuset) and its node's CPUs. Only QEMU guests have emulator
threads, and only on nodes that make per-vCPU groups (the cpu controller on
cgroup v1). "*" means the guest's CPUs, unpinned.
` + scopeHelp,
		Example: `  corral emulatorpin vm1
  corral emulatorpin vm1 0-1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return fmt.Errorf("give a guest NAME and optionally a CPULIST (got %d arguments)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			set := map[string]string{}
			if len(args) == 2 {
				k, _ := events.LookupKnob("emulatorpin")
				if set["emulatorpin"], err = k.Canonical(args[1]); err != nil {
					return err
				}
			}
			g, err := a.tune(cmd.Context(), name, set, o)
			if err != nil {
				return err
			}
			cpus := pinText(g, g.Knob("emulatorpin"))
			if a.json() {
				return writeJSON(a.stdout, map[string]string{"emulator": cpus})
			}
			return printEmulatorPin(a.stdout, cpus)
		},
	}
	o.flags(cmd)
	return a.clientFlags(cmd)
}

func (a *app) vcpupinCommand() *cobra.Command {
	var o tuneOptions
	cmd := &cobra.Command{
		Use:   "vcpupin NAME [VCPU CPULIST] [--live|--config|--current]",
		Short: "Show or pin a QEMU guest's vCPU threads, like virsh vcpupin",
		Long: `Show the CPUs each vCPU of a QEMU guest may run on or, with VCPU and CPULIST,
pin one vCPU: the cpuset.cpus of the guest's vcpuN group. The other vCPUs
keep their pinning. The list must lie within the guest's own cpuset and its
node's CPUs. Only QEMU guests have vCPU threads, and only on nodes that make
per-vCPU groups (the cpu controller on cgroup v1). guest create --vcpupin is
another thing: it gives the guest exclusive CPUs the scheduler chooses.
` + scopeHelp,
		Example: `  corral vcpupin vm1
  corral vcpupin vm1 0 1
  corral vcpupin vm1 1 0-1 --config`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 && len(args) != 3 {
				return fmt.Errorf("give a guest NAME, optionally with a VCPU and a CPULIST (got %d arguments)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			set := map[string]string{}
			if len(args) == 3 {
				n, err := strconv.ParseUint(args[1], 10, 16)
				if err != nil {
					return &events.FieldError{Field: "vcpu", Value: args[1], Want: "a vCPU number, 0 to the guest's vCPUs - 1"}
				}
				cpus, err := events.ParseIDList("cpulist", args[2])
				if err != nil {
					return err
				}
				c, err := a.readClient()
				if err != nil {
					return err
				}
				cur, err := c.Guest(cmd.Context(), name)
				if err != nil {
					return err
				}
				pins := map[int]string{}
				if v := o.knobIn(&cur.Guest)("vcpupin"); v != "" {
					if pins, err = events.ParseVCPUPins(v); err != nil {
						return err
					}
				}
				pins[int(n)] = events.FormatIDList(cpus)
				set["vcpupin"] = events.FormatVCPUPins(pins)
			}
			g, err := a.tune(cmd.Context(), name, set, o)
			if err != nil {
				return err
			}
			pins := map[int]string{}
			if v := g.Knob("vcpupin"); v != "" {
				pins, _ = events.ParseVCPUPins(v)
			}
			rows := make([][2]string, g.VCPUs)
			for i := range rows {
				cpus, ok := pins[i]
				if !ok {
					cpus = pinText(g, "")
				}
				rows[i] = [2]string{strconv.Itoa(i), cpus}
			}
			if a.json() {
				out := map[string]string{}
				for _, r := range rows {
					out[r[0]] = r[1]
				}
				return writeJSON(a.stdout, out)
			}
			return printVCPUPins(a.stdout, rows)
		},
	}
	o.flags(cmd)
	return a.clientFlags(cmd)
}

// pinText is a pin as the commands print it: the list, or for none the
// guest's own cpuset, or "*" (every CPU of its node).
func pinText(g *api.Guest, pin string) string {
	switch {
	case pin != "":
		return pin
	case g.CPUs != "":
		return g.CPUs
	}
	return "*"
}

// printEmulatorPin prints as virsh emulatorpin does.
func printEmulatorPin(w io.Writer, cpus string) error {
	_, err := fmt.Fprintf(w, "emulator: CPU Affinity\n----------------------------------\n       *: %s\n", cpus)
	return err
}

// printVCPUPins prints as virsh vcpupin does.
func printVCPUPins(w io.Writer, rows [][2]string) error {
	var b strings.Builder
	b.WriteString(" VCPU   CPU Affinity\n----------------------\n")
	for _, r := range rows {
		fmt.Fprintf(&b, " %-6s %s\n", r[0], r[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}
