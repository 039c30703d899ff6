package main

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

// blkioParams are blkiotune's parameters in virsh's order: the name virsh
// prints, the knob, and the flag that sets it.
var blkioParams = []struct{ name, knob, flag string }{
	{"weight", "blkio_weight", "weight"},
	{"device_weight", "device_weight", "device-weights"},
	{"device_read_iops_sec", "device_read_iops_sec", "device-read-iops-sec"},
	{"device_write_iops_sec", "device_write_iops_sec", "device-write-iops-sec"},
	{"device_read_bytes_sec", "device_read_bytes_sec", "device-read-bytes-sec"},
	{"device_write_bytes_sec", "device_write_bytes_sec", "device-write-bytes-sec"},
}

func (a *app) blkiotuneCommand() *cobra.Command {
	var (
		o    tuneOptions
		vals = map[string]*string{}
	)
	cmd := &cobra.Command{
		Use:   "blkiotune NAME [--weight N] [--device-weights PATH,W[,...]] [--device-{read,write}-{bytes,iops}-sec PATH,N[,...]]",
		Short: "Show or set a guest's block I/O weight and per-device limits, like virsh blkiotune",
		Long: `Show a guest's block I/O parameters or change them, printing the values
afterwards in virsh's format. Each change is a guest.tuned event (old → new,
attributed to you) that the node's agent applies.

--weight is the guest's proportional I/O weight, 100 to 1000 as libvirt takes
it (the node's kernel file may allow less: blkio.weight 10-1000, BFQ 1-1000).
The per-device flags take PATH,VALUE pairs, "/dev/sda,500,/dev/sdb,300", as
virsh does: weights 100 to 1000, bytes per second (plain bytes, or with a unit:
10M, 512KiB), or I/O operations per second. Devices not named keep their
values; 0 removes a device's setting. The node resolves each path to its
block device (a whole disk) and refuses one it does not have: the refusal is
a guest.tuning_failed event, shown by guest show.
` + scopeHelp,
		Example: `  corral blkiotune web
  corral blkiotune web --weight 500
  corral blkiotune web --device-write-bytes-sec /dev/vdb,10M --device-read-iops-sec /dev/vdb,200
  corral blkiotune web --device-write-bytes-sec /dev/vdb,0`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			given := map[string]string{}
			for _, p := range blkioParams {
				if cmd.Flags().Changed(p.flag) {
					given[p.knob] = *vals[p.knob]
				}
			}
			set, err := a.blkioSet(cmd.Context(), name, given, o)
			if err != nil {
				return err
			}
			g, err := a.tune(cmd.Context(), name, set, o)
			if err != nil {
				return err
			}
			if a.json() {
				out := map[string]any{}
				for _, p := range blkioParams {
					out[p.name] = g.Knob(p.knob)
				}
				n, _ := strconv.ParseUint(g.Knob("blkio_weight"), 10, 16)
				out["weight"] = n
				return writeJSON(a.stdout, out)
			}
			rows := make([][2]string, 0, len(blkioParams))
			for _, p := range blkioParams {
				rows = append(rows, [2]string{p.name, g.Knob(p.knob)})
			}
			return printParams(a.stdout, rows)
		},
	}
	for _, p := range blkioParams {
		vals[p.knob] = new(string)
		help := "PATH,VALUE[,PATH,VALUE]; 0 removes a device"
		if p.knob == "blkio_weight" {
			help = "I/O weight, 100 to 1000"
		}
		cmd.Flags().StringVar(vals[p.knob], p.flag, "", help)
	}
	o.flags(cmd)
	return a.clientFlags(cmd)
}

// blkioSet turns blkiotune's flags (knob -> text as given) into the
// canonical values to send. A per-device list is merged into the guest's
// current one, as virsh does; the guest is read only when one is given.
func (a *app) blkioSet(ctx context.Context, name string, given map[string]string, o tuneOptions) (map[string]string, error) {
	// Every value is checked before the guest is read.
	set, err := blkioValues(given, func(string) string { return "" })
	if err != nil {
		return nil, err
	}
	for k := range given {
		if events.IsDeviceKnob(k) {
			c, err := a.readClient()
			if err != nil {
				return nil, err
			}
			g, err := c.Guest(ctx, name)
			if err != nil {
				return nil, err
			}
			return blkioValues(given, o.knobIn(&g.Guest))
		}
	}
	return set, nil
}

// blkioValues checks every value given before any is sent, and merges
// per-device lists into current(knob).
func blkioValues(given map[string]string, current func(knob string) string) (map[string]string, error) {
	set := map[string]string{}
	for _, p := range blkioParams {
		v, ok := given[p.knob]
		if !ok {
			continue
		}
		if !events.IsDeviceKnob(p.knob) {
			k, err := events.LookupKnob(p.knob)
			if err != nil {
				return nil, err
			}
			if set[p.knob], err = k.Canonical(v); err != nil {
				return nil, err
			}
			continue
		}
		if _, err := events.ParseDeviceList(p.knob, v); err != nil {
			return nil, err
		}
		if v == "" {
			return nil, usagef("--%s needs PATH,VALUE pairs; give PATH,0 to remove a device", p.flag)
		}
		merged, err := events.MergeDeviceList(p.knob, current(p.knob), v)
		if err != nil {
			return nil, err
		}
		set[p.knob] = merged
	}
	return set, nil
}
