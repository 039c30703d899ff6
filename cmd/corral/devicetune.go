package main

import (
	"slices"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

// minimalDevices describes the set every guest gets, as
// cgroupdriver.MinimalDeviceRules builds it on the node.
const minimalDevices = "null, zero, full, random, urandom, tty, ptmx, pts/* (and kvm for qemu on a KVM host)"

func (a *app) devicetuneCommand() *cobra.Command {
	var (
		o           tuneOptions
		allow, deny []string
		set         string
	)
	cmd := &cobra.Command{
		Use:   "devicetune NAME [--allow DEVICE]... [--deny DEVICE]... [--set LIST|none] [--live] [--config] [--current]",
		Short: "Show or change the devices a guest may use",
		Long: `Show the devices a guest may use beyond the default set or change them, like
libvirt's cgroup_device_acl but per guest. Every guest's device cgroup denies
all devices except the default set (` + minimalDevices + `)
and the ones listed here. The change is one guest.tuned event of the "devices"
knob (old → new, attributed to you) that the node's agent applies: on cgroup v1
devices.deny "a" then devices.allow, on v2 a BPF device program.

A DEVICE is /dev/PATH[:ACCESS], resolved to its type and numbers on the guest's
node (a path the node does not have is reported as guest.tuning_failed, or
fails the start), or "c|b MAJOR:MINOR [ACCESS]". ACCESS is a subset of rwm
(read, write, mknod), rwm when left out. --allow of a listed device replaces
its access; --deny takes a listed device out (the default set cannot be
denied); --set replaces the whole list ("none" empties it). The same knob is
corral schedinfo NAME --set devices=LIST.
` + scopeHelp,
		Example: `  corral devicetune web
  corral devicetune web --allow /dev/loop-control:rw
  corral devicetune vm1 --allow /dev/net/tun --allow "c 10:200 rw" --config
  corral devicetune web --deny /dev/loop-control
  corral devicetune web --set none`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			changes := map[string]string{}
			switch {
			case cmd.Flags().Changed("set") && (len(allow) > 0 || len(deny) > 0):
				return usagef("give either --set or --allow/--deny, not both")
			case cmd.Flags().Changed("set"):
				k, err := events.LookupKnob("devices")
				if err != nil {
					return err
				}
				if changes["devices"], err = k.Canonical(set); err != nil {
					return err
				}
			case len(allow) > 0 || len(deny) > 0:
				// Caught before the round trip that reads the list.
				for _, d := range append(slices.Clone(allow), deny...) {
					if _, err := events.CanonicalAllowedDevice(d); err != nil {
						return err
					}
				}
				c, err := a.readClient()
				if err != nil {
					return err
				}
				g, err := c.Guest(cmd.Context(), name)
				if err != nil {
					return err
				}
				old := o.knobIn(&g.Guest)("devices")
				v, err := events.MergeAllowedDevices(old, allow, deny)
				if err != nil {
					return err
				}
				if v != old {
					changes["devices"] = v
				}
			}
			g, err := a.tune(cmd.Context(), name, changes, o)
			if err != nil {
				return err
			}
			list, err := events.ParseAllowedDevices(g.Knob("devices"))
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, map[string]any{"default": minimalDevices, "devices": append([]string{}, list...)})
			}
			return printParams(a.stdout, [][2]string{
				{"default", minimalDevices},
				{"devices", events.AllowedDevicesText(list)},
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&allow, "allow", nil, "a device to allow, /dev/PATH[:rwm] or \"c|b MAJOR:MINOR [rwm]\"; repeat for more")
	f.StringArrayVar(&deny, "deny", nil, "a listed device to take out, /dev/PATH or \"c|b MAJOR:MINOR\"; repeat for more")
	f.StringVar(&set, "set", "", `the whole list, comma-separated, or "none"`)
	o.flags(cmd)
	return a.clientFlags(cmd)
}
