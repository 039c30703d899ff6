package main

import (
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

func (a *app) domiftuneCommand() *cobra.Command {
	var (
		o                 tuneOptions
		inbound, outbound string
	)
	cmd := &cobra.Command{
		Use:   "domiftune NAME [--inbound average[,peak[,burst]]] [--outbound average[,peak[,burst]]]",
		Short: "Show or set a guest's network bandwidth, like virsh domiftune",
		Long: `Show a guest's network bandwidth or change it, printing the values afterwards
in virsh's format. As in virsh, average and peak are KiB/s and burst KiB; 0
clears a direction. The guest's node shapes outbound traffic (HTB on the
interfaces its agent was started with --shape-interface) and polices inbound
traffic (nftables); a node that shapes no interface refuses the change.
` + scopeHelp,
		Example: `  corral domiftune web
  corral domiftune web --outbound 1024,2048,64 --inbound 512
  corral domiftune web --outbound 0`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			set := map[string]string{}
			for _, d := range []struct{ dir, v string }{{"inbound", inbound}, {"outbound", outbound}} {
				if !cmd.Flags().Changed(d.dir) {
					continue
				}
				f := strings.Split(d.v, ",")
				if len(f) > 3 || strings.TrimSpace(f[0]) == "" {
					return usagef("--%s %q is not average[,peak[,burst]] (KiB/s, KiB/s, KiB)", d.dir, d.v)
				}
				for i, k := range []string{"average", "peak", "burst"} {
					v := "0"
					if i < len(f) && strings.TrimSpace(f[i]) != "" {
						v = f[i]
					}
					knob, err := events.LookupKnob(d.dir + "_" + k)
					if err != nil {
						return err
					}
					if set[knob.Name], err = knob.Canonical(v); err != nil {
						return err
					}
				}
				if set[d.dir+"_average"] == "0" {
					set[d.dir+"_peak"], set[d.dir+"_burst"] = "0", "0"
				}
			}
			g, err := a.tune(cmd.Context(), name, set, o)
			if err != nil {
				return err
			}
			if a.json() {
				out := map[string]uint64{}
				for _, k := range events.BandwidthKnobs {
					out[strings.Replace(k, "_", ".", 1)], _ = strconv.ParseUint(g.Knob(k), 10, 64)
				}
				return writeJSON(a.stdout, out)
			}
			var rows [][2]string
			for _, k := range events.BandwidthKnobs {
				rows = append(rows, [2]string{strings.Replace(k, "_", ".", 1), g.Knob(k)})
			}
			return printParams(a.stdout, rows)
		},
	}
	cmd.Flags().StringVar(&inbound, "inbound", "", "average[,peak[,burst]]: KiB/s, KiB/s, KiB; 0 clears")
	cmd.Flags().StringVar(&outbound, "outbound", "", "average[,peak[,burst]]: KiB/s, KiB/s, KiB; 0 clears")
	o.flags(cmd)
	return a.clientFlags(cmd)
}
