package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// setmem, as virsh has it: a guest's current memory (the balloon target,
// knob "memory"), at most the memory it was created with. It is a
// guest.tuned event like every other tuning; the node's agent answers a
// balloon target with guest.balloon reports rather than
// guest.tuning_applied.

func (a *app) setmemCommand() *cobra.Command {
	var (
		o       tuneOptions
		enforce string
	)
	cmd := &cobra.Command{
		Use:   "setmem NAME SIZE [--live|--config|--current] [--enforce on|off]",
		Short: "Set a guest's current memory (the balloon target), like virsh setmem",
		Long: `Set how much of its maximum memory a guest may hold. A qemu guest's balloon
driver is asked to give the rest back to the host, and the guest's memory cgroup
gets a soft limit at the target plus QEMU's own room, so the kernel reclaims
from it first under pressure; its hard limit stays at the maximum plus that room.
A process or lxc guest has no balloon: its soft limit is set to the target.

The target is at most the guest's maximum memory (its --memory at create,
or what corral setmaxmem set), in each scope the change reaches. As with
virsh, a plain number is KiB; sizes with units (64MiB, 1G) are accepted too.
The node's agent reports guest.balloon (target, actual, compliance) and, when
the guest has not come down within its --balloon-timeout, once
guest.balloon_noncompliant; guest show prints both. Without --live or
--config a change applies to both.

--enforce on (the guest's balloon_enforce knob, off by default, as libvirt
never presses a guest) adds the stick: a guest still above its target after
the timeout is pressed down to its soft limit once by reclaim. The kernel
drops what it can (page cache; anonymous memory only with swap) and the
guest keeps the rest: its hard limit is put back and it is never
OOM-killed. guest.balloon_noncompliant then says how much came back.`,
		Example: `  corral setmem web 64MiB
  corral setmem web 65536 --live
  corral setmem web 64MiB --enforce on`,
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
			v, err := parseMemSize("memory", args[1])
			if err != nil {
				return err
			}
			set := map[string]string{"memory": v}
			if cmd.Flags().Changed("enforce") {
				k, _ := events.LookupKnob("balloon_enforce")
				if set["balloon_enforce"], err = k.Canonical(enforce); err != nil {
					return err
				}
			}
			if o.current && (o.live || o.config) {
				return usagef("--current means the running guest if it runs, else its definition: give it alone, not with --live or --config")
			}
			g, err := a.sendTuneSet(cmd.Context(), name, set, o.live, o.config, o.reason)
			if err != nil {
				return err
			}
			if (o.live || !o.config) && g.Status == api.StatusRunning {
				g = a.waitBalloon(cmd.Context(), name, v, g)
			}
			return a.printBalloon(g)
		},
	}
	o.flags(cmd)
	cmd.Flags().StringVar(&enforce, "enforce", "off", "on: press the guest down to its target by reclaim when it misses it (knob balloon_enforce)")
	return a.clientFlags(cmd)
}

// parseMemSize reads a size as virsh setmem does: a plain number is KiB;
// a size with a unit is taken as written. It returns bytes in decimal.
func parseMemSize(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 || n > 1<<53 {
			return "", &events.FieldError{Field: field, Value: s, Want: "a positive number of KiB or a size such as 64MiB"}
		}
		return strconv.FormatInt(n<<10, 10), nil
	}
	b, err := events.ParseSize(field, s)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(b, 10), nil
}

// sendTune commits one knob change and returns the guest afterwards.
func (a *app) sendTune(ctx context.Context, name, knob, value string, live, config bool, reason string) (*api.Guest, error) {
	return a.sendTuneSet(ctx, name, map[string]string{knob: value}, live, config, reason)
}

// sendTuneSet commits knob changes and returns the guest afterwards.
func (a *app) sendTuneSet(ctx context.Context, name string, set map[string]string, live, config bool, reason string) (*api.Guest, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	if _, err := c.Tune(ctx, api.TuneGuest{Name: name, Set: set, Live: live, Persistent: config, Reason: reason}); err != nil {
		return nil, err
	}
	g, err := c.Guest(ctx, name)
	if err != nil {
		return nil, err
	}
	return &g.Guest, nil
}

// waitBalloon waits, a bounded time, for the agent's first report of the
// new target, so what is printed is what the host did.
func (a *app) waitBalloon(ctx context.Context, name, target string, g *api.Guest) *api.Guest {
	c, err := a.readClient()
	if err != nil {
		return g
	}
	deadline := time.Now().Add(appliedWait)
	for {
		got, err := c.Guest(ctx, name)
		if err != nil {
			return g
		}
		g = &got.Guest
		if b := g.Balloon; b != nil && b.Generation == g.Generation && strconv.FormatInt(b.Target, 10) == target {
			return g
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(a.stderr, "corral: the agent of node %s has not reported the new balloon target yet (it samples on its usage interval)\n", g.Node)
			return g
		}
		select {
		case <-ctx.Done():
			return g
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// printBalloon prints a guest's memory as virsh dominfo names it.
func (a *app) printBalloon(g *api.Guest) error {
	if a.json() {
		return writeJSON(a.stdout, map[string]any{"max_memory": g.Knob("max_memory"), "memory": g.Knob("memory"), "balloon_enforce": g.Knob("balloon_enforce"),
			"balloon": g.Balloon, "balloon_noncompliant": g.BalloonNoncompliant})
	}
	rows := [][2]string{{"max_memory", formatKnob("max_memory", g.Knob("max_memory"))}, {"memory", formatKnob("memory", g.Knob("memory"))},
		{"enforce", g.Knob("balloon_enforce")}}
	if b := g.Balloon; b != nil && b.Generation == g.Generation {
		rows = append(rows, [2]string{"actual", formatBytes(b.Actual)}, [2]string{"usage", formatBytes(b.Usage)},
			[2]string{"compliant", strconv.FormatBool(b.Compliant)})
	}
	return printParams(a.stdout, rows)
}
