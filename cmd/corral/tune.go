package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

// The knobs each virsh-style command shows, in virsh's order.
var (
	schedKnobs  = []string{"cpu_shares", "vcpu_period", "vcpu_quota"}
	memoryOrder = []string{"hard_limit", "soft_limit", "swap_hard_limit"}
)

// tuneOptions are the flags the tuning commands share.
type tuneOptions struct {
	live, config, current bool
	reason                string
}

// scopeHelp says what the scope flags mean, as virsh's
// VIR_DOMAIN_AFFECT_LIVE, _CONFIG and _CURRENT do.
const scopeHelp = `--live changes the running guest only: its next start
takes the persistent values again (a guest not running refuses it).
--config changes the persistent definition only: the running guest keeps
its value and the next start uses the new one. Both flags change both.
Without either (--current), a change reaches a running guest and its next
start, and only the next start of a guest that is not running. With
--config alone the persistent values are printed, else the running ones.`

func (o *tuneOptions) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&o.live, "live", false, "change the running guest only; lost at its next start")
	f.BoolVar(&o.config, "config", false, "change the persistent definition only: used from the next start")
	f.BoolVar(&o.current, "current", false, "the running guest and its definition if it runs, else the definition (the default)")
	f.StringVar(&o.reason, "reason", "", "why: recorded in the tuning event")
}

// persistentOnly reports whether the command names the persistent
// definition alone, whose values it then shows.
func (o tuneOptions) persistentOnly() bool { return o.config && !o.live }

// knobIn returns how to read g's knobs in the scope o names: the
// persistent values with --config alone, else those in force. A command
// that merges into a list (blkiotune, devicetune) merges into that scope.
func (o tuneOptions) knobIn(g *api.Guest) func(string) string {
	if o.persistentOnly() {
		return g.ConfigKnob
	}
	return g.Knob
}

// tune sends the changes in set (knob -> canonical value) and returns the
// guest as it is afterwards, its Knob giving the values in the scope o
// names. For a running guest it waits, a bounded time, for its agent to
// report the values it wrote, so what is printed is what the host holds.
func (a *app) tune(ctx context.Context, name string, set map[string]string, o tuneOptions) (*api.Guest, error) {
	client := a.readClient
	if len(set) > 0 {
		client = a.client
	}
	if o.current && (o.live || o.config) {
		return nil, usagef("--current means the running guest if it runs, else its definition: give it alone, not with --live or --config")
	}
	c, err := client()
	if err != nil {
		return nil, err
	}
	if len(set) > 0 {
		t := api.TuneGuest{Name: name, Set: set, Live: o.live, Persistent: o.config, Reason: o.reason}
		if _, err := c.Tune(ctx, t); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(appliedWait)
	for {
		g, err := c.Guest(ctx, name)
		if err != nil {
			return nil, err
		}
		if o.persistentOnly() {
			// The running instance's values are not what was asked.
			g.LiveTuning = nil
			return &g.Guest, nil
		}
		if len(set) == 0 || g.Status != api.StatusRunning || applied(&g.Guest, set) {
			return &g.Guest, nil
		}
		if err := refused(&g.Guest, set); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(a.stderr, "corral: the agent of node %s has not confirmed the new values yet; showing the desired ones\n", g.Node)
			return &g.Guest, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// appliedWait bounds how long tuning waits for the agent's answer.
const appliedWait = 10 * time.Second

// applied reports whether the agent wrote every knob of set.
func applied(g *api.Guest, set map[string]string) bool {
	for k := range set {
		if g.Applied[k] != g.Knob(k) {
			return false
		}
	}
	return true
}

// refused says which of the values in set the guest's host refused, as
// its guest.tuning_failed reports have it, or nil.
func refused(g *api.Guest, set map[string]string) error {
	var msgs []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if f := g.TuningFailed[k]; f != nil && f.Value == g.Knob(k) && f.Generation == g.Generation {
			msgs = append(msgs, fmt.Sprintf("%s %s: %s", k, formatKnob(k, f.Value), f.Error))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("corral: node %s refused %s; the guest keeps its earlier value until you tune it again with one the host takes (corral guest show %s)",
		g.Node, strings.Join(msgs, "; "), g.Name)
}

// printParams prints name: value lines as virsh does ("%-15s: %s").
func printParams(w io.Writer, rows [][2]string) error {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%-15s: %s\n", r[0], r[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (a *app) schedinfoCommand() *cobra.Command {
	var (
		o    tuneOptions
		sets []string
	)
	cmd := &cobra.Command{
		Use:   "schedinfo NAME [--set KNOB=VALUE]... [--live] [--config] [--current]",
		Short: "Show or set a guest's CPU scheduler parameters, like virsh schedinfo",
		Long: `Show a guest's CPU scheduler parameters or, with --set, change them, printing
the values afterwards in virsh's format. Each change is a guest.tuned event
(old → new, attributed to you) that the node's agent applies.

Parameters: cpu_shares (2-262144, default 1024), vcpu_period (1000-1000000 µs,
default 100000), vcpu_quota (-1 = unlimited, or 1000-17592186044415 µs).
` + scopeHelp,
		Example: `  corral schedinfo web
  corral schedinfo web --set cpu_shares=500
  corral schedinfo web --set vcpu_quota=50000 --set vcpu_period=100000 --live`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			set, err := parseSets(sets)
			if err != nil {
				return err
			}
			g, err := a.tune(cmd.Context(), name, set, o)
			if err != nil {
				return err
			}
			knobs := schedKnobs
			if g.Driver == events.DriverQEMU {
				// As virsh shows a QEMU domain's: its emulator and whole-VM
				// caps beside the per-vCPU ones.
				knobs = append(slices.Clone(schedKnobs), "emulator_period", "emulator_quota", "global_period", "global_quota")
			}
			if a.json() {
				out := map[string]any{"scheduler": "posix"}
				for _, k := range knobs {
					n, _ := strconv.ParseInt(g.Knob(k), 10, 64)
					out[k] = n
				}
				return writeJSON(a.stdout, out)
			}
			rows := [][2]string{{"Scheduler", "posix"}}
			for _, k := range knobs {
				rows = append(rows, [2]string{k, g.Knob(k)})
			}
			return printParams(a.stdout, rows)
		},
	}
	cmd.Flags().StringArrayVar(&sets, "set", nil, "KNOB=VALUE to change; repeat, or separate with commas")
	o.flags(cmd)
	return a.clientFlags(cmd)
}

// parseSets reads --set values into canonical knob values.
func parseSets(sets []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range sets {
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok || k == "" {
				return nil, usagef("--set %q is not KNOB=VALUE (knobs: %s)", kv, strings.Join(schedKnobs, ", "))
			}
			knob, err := events.LookupKnob(k)
			if err != nil {
				return nil, err
			}
			switch k {
			case "memory", "balloon_enforce":
				return nil, fmt.Errorf("%s is the balloon's: use corral setmem NAME SIZE [--enforce on|off]", k)
			case "max_memory":
				return nil, fmt.Errorf("max_memory is the maximum memory: use corral setmaxmem NAME SIZE --config")
			}
			if memoryKnobs[k] {
				return nil, fmt.Errorf("%s is a memory parameter: use corral memtune --%s", k, strings.ReplaceAll(k, "_", "-"))
			}
			if k == "blkio_weight" || events.IsDeviceKnob(k) {
				return nil, fmt.Errorf("%s is a block I/O parameter: use corral blkiotune", k)
			}
			c, err := knob.Canonical(v)
			if err != nil {
				return nil, err
			}
			if _, dup := out[k]; dup {
				return nil, usagef("--set names %s twice", k)
			}
			out[k] = c
		}
	}
	return out, nil
}

func (a *app) memtuneCommand() *cobra.Command {
	var (
		o      tuneOptions
		limits = map[string]*string{}
	)
	cmd := &cobra.Command{
		Use:   "memtune NAME [--hard-limit KiB] [--soft-limit KiB] [--swap-hard-limit KiB]",
		Short: "Show or set a guest's memory limits, like virsh memtune",
		Long: `Show a guest's memory limits or change them, printing the values afterwards in
virsh's format (KiB, or "unlimited"). Each change is a guest.tuned event (old →
new, attributed to you) that the node's agent applies.

As with virsh, a plain number is KiB and -1 means unlimited; sizes with units
(512MiB, 1G) are accepted too. swap_hard_limit is memory plus swap, as in
libvirt, so it must be at least hard_limit (on cgroup v2 the difference goes to
memory.swap.max); lifting hard_limit means lifting swap_hard_limit too. A value
the host still refuses is reported (guest.tuning_failed) and shown by guest show.
` + scopeHelp,
		Example: `  corral memtune web
  corral memtune web --hard-limit 1048576 --soft-limit 512MiB
  corral memtune web --hard-limit -1`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			set := map[string]string{}
			for _, k := range memoryOrder {
				if f := flagName(k); cmd.Flags().Changed(f) {
					if set[k], err = parseKiB(f, *limits[k]); err != nil {
						return err
					}
				}
			}
			g, err := a.tune(cmd.Context(), name, set, o)
			if err != nil {
				return err
			}
			if a.json() {
				out := map[string]int64{}
				for _, k := range memoryOrder {
					out[k] = kibOrUnlimited(g.Knob(k))
				}
				return writeJSON(a.stdout, out)
			}
			var rows [][2]string
			for _, k := range memoryOrder {
				v := events.Unlimited
				if n := kibOrUnlimited(g.Knob(k)); n >= 0 {
					v = strconv.FormatInt(n, 10)
				}
				rows = append(rows, [2]string{k, v})
			}
			return printParams(a.stdout, rows)
		},
	}
	for _, k := range memoryOrder {
		limits[k] = new(string)
		cmd.Flags().StringVar(limits[k], flagName(k), "", k+" in KiB, or with a unit (512MiB); -1 = unlimited")
	}
	o.flags(cmd)
	return a.clientFlags(cmd)
}

func flagName(knob string) string { return strings.ReplaceAll(knob, "_", "-") }

// parseKiB reads a memtune value as virsh does (a plain number is KiB, -1
// is unlimited) and also takes sizes with units. It returns the knob's
// canonical value: bytes, or "unlimited".
func parseKiB(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "-1" || s == events.Unlimited {
		return events.Unlimited, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 || n > (1<<53) {
			return "", &events.FieldError{Field: field, Value: s, Want: "give a positive number of KiB, a size such as 512MiB, or -1 for unlimited"}
		}
		return strconv.FormatInt(n<<10, 10), nil
	}
	b, err := events.ParseSize(field, s)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(b, 10), nil
}

// kibOrUnlimited turns a canonical memory knob value into KiB, or -1.
func kibOrUnlimited(v string) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return -1
	}
	return n >> 10
}
