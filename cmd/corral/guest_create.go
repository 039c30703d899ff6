package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/coordinator/cluster"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

type createOptions struct {
	driver      string
	memory      string
	vcpus       int
	cpuShares   int
	command     string
	rootfs      string
	kernel      string
	initrd      string
	labels      []string
	noStart     bool
	reserve     bool
	constraints []string
	spreadBy    string
	cpuset      string
	vcpupin     bool
	dryRun      bool
	devices     []string
	disks       []string
	partition   string
	capAdd      []string
	network     string
	capDrop     []string
	restart     restartFlags
	userns      bool
	idmap       []string
	wait        bool
	waitTimeout time.Duration
}

func (a *app) guestCreateCommand() *cobra.Command {
	var o createOptions
	cmd := &cobra.Command{
		Use:   "create NAME --driver process|lxc|qemu --memory SIZE [flags] [-- COMMAND [ARG...]]",
		Short: "Define a guest and ask for it to run",
		Long: `Define a guest and, unless --no-start, ask for it to run. The scheduler places
it on a node with room for it.

NAME is 1 to 63 characters from a-z, 0-9 and '-', starting with a letter or digit.
SIZE takes units: 512MiB, 1G, 64M, 2048K (powers of 1024), 1GB (powers of 1000)
or plain bytes. The command is given with --command (split like a shell would,
quotes respected, nothing expanded) or as the arguments after --.

Every guest may use only the default devices (null, zero, full, random,
urandom, tty, ptmx, /dev/pts/*, and /dev/kvm for qemu on a KVM host); --device
allows one more, and corral devicetune changes the list later.`,
		Example: `  corral guest create web --driver process --memory 64MiB -- /bin/sleep 1000
  corral guest create web --driver process --memory 64MiB --command "sh -c 'echo hi; sleep 60'"
  corral guest create ct1 --driver lxc --memory 128MiB --rootfs /srv/rootfs -- /bin/sh
  corral guest create ct2 --driver lxc --memory 128MiB --rootfs /srv/rootfs --userns -- /bin/sh
  corral guest create vm1 --driver qemu --memory 512MiB --vcpus 2 --kernel /srv/vmlinuz --initrd /srv/initrd.img
  corral guest create batch --driver process --memory 1G --cpu-shares 256 --label team=data --no-start -- /usr/bin/make
  corral guest create vm2 --driver qemu --memory 512MiB --kernel /srv/vmlinuz --device /dev/net/tun:rw
  corral guest create job --driver process --memory 64MiB --restart on-failure --restart-attempts 2 -- /usr/bin/worker`,
		Args: func(cmd *cobra.Command, args []string) error {
			n := len(args)
			if d := cmd.ArgsLenAtDash(); d >= 0 {
				n = d
			}
			if n != 1 {
				return fmt.Errorf("give exactly one guest NAME before any -- (got %d arguments)", n)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := o.request(cmd, args)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if o.dryRun {
				return a.printDryRun(cmd, c, req)
			}
			res, err := c.CreateGuest(cmd.Context(), req)
			if err != nil {
				return err
			}
			what := "guest " + req.Name + " created"
			if req.NoStart {
				what = "guest " + req.Name + " defined, not started"
			}
			if err := a.printWrite(res, what); err != nil || !o.wait || req.NoStart {
				return err
			}
			e, err := waitStarted(cmd.Context(), c, req.Name, res.Index, o.waitTimeout)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(a.stdout, e)
			}
			_, err = fmt.Fprintf(a.stdout, "guest %s started on %s (index %d)\n", req.Name, e.Node, e.Index)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.driver, "driver", "", "how the guest runs: process, lxc or qemu")
	f.StringVar(&o.memory, "memory", "", "memory of the guest, e.g. 512MiB or 1G")
	f.IntVar(&o.vcpus, "vcpus", 1, "virtual CPUs of the guest")
	f.IntVar(&o.cpuShares, "cpu-shares", events.DefaultCPUShares, "relative CPU weight, 2 to 262144")
	f.StringVar(&o.command, "command", "", `command line to run, split like a shell would: "CMD ARGS"`)
	f.StringVar(&o.rootfs, "rootfs", "", "root file system directory on the node (lxc)")
	f.StringVar(&o.kernel, "kernel", "", "kernel image on the node (qemu)")
	f.StringVar(&o.initrd, "initrd", "", "initrd image on the node (qemu)")
	f.StringArrayVar(&o.labels, "label", nil, "label key=value; repeat for more")
	f.BoolVar(&o.noStart, "no-start", false, "define the guest without asking for it to run (it is placed when started)")
	f.BoolVar(&o.reserve, "reserve", false, "keep the guest's vCPUs and memory on its node while it is stopped or has ended")
	f.StringArrayVar(&o.constraints, "constraint", nil, "node label rule, key=value or key!=value; repeat for more")
	f.StringVar(&o.spreadBy, "spread-by", "", "label key: no two guests with the same value of it share a node (the guest needs that label)")
	f.StringVar(&o.cpuset, "cpuset", "", "pin the guest to these exclusive host CPUs, e.g. 0-3,6")
	f.BoolVar(&o.vcpupin, "vcpupin", false, "pin every vCPU to an exclusive host CPU the scheduler chooses")
	f.BoolVar(&o.dryRun, "dry-run", false, "print where the guest would be placed, and why, without creating it")
	f.StringArrayVar(&o.capAdd, "cap-add", nil, "lxc: keep this capability beyond the default set (NET_ADMIN, cap_net_admin or CAP_NET_ADMIN; ALL for every one); repeat for more")
	f.StringArrayVar(&o.capDrop, "cap-drop", nil, "lxc: drop this capability from the default set (ALL for every one); repeat for more")
	f.BoolVar(&o.userns, "userns", false, "lxc: run the container in its own user namespace, its root the host's uid and gid 100000 (map 0:100000:65536)")
	f.StringArrayVar(&o.idmap, "idmap", nil, "lxc: map container ids to host ids in a user namespace, CONTAINER:HOST:COUNT for uids and gids (implies --userns); repeat for more ranges")
	f.StringArrayVar(&o.devices, "device", nil, `allow a device beyond the default set: /dev/PATH[:rwm] (resolved on the node) or "c|b MAJOR:MINOR [rwm]"; access defaults to rwm; repeat for more`)
	f.StringArrayVar(&o.disks, "disk", nil, "attach a disk image on the node with virtio-blk (qemu): IMAGE[,format=raw|qcow2][,cache=none|writeback|writethrough|directsync|unsafe][,size=SIZE]; the guest writes to an overlay of its own; repeat for more")
	f.StringVar(&o.network, "network", "none", "lxc, qemu: bridge gives the guest an interface on its node's bridge (corral agent --bridge) with an address from the node's range; none leaves it only lo")
	f.StringVar(&o.partition, "partition", "", "create the guest in this cluster partition (corral partition list); fixed for the guest's life")
	f.BoolVar(&o.wait, "wait", false, "wait until the guest has started (or failed to) on its node, following the event stream")
	f.DurationVar(&o.waitTimeout, "wait-timeout", defaultWaitTimeout, "with --wait: give up after this long")
	o.restart.register(cmd)
	cmd.MarkFlagRequired("driver")
	cmd.MarkFlagRequired("memory")
	return cmd
}

// request builds and checks the create command locally, so that a mistake
// is reported without a round trip; the server checks it again.
func (o *createOptions) request(cmd *cobra.Command, args []string) (api.CreateGuest, error) {
	name, err := guestName(args)
	if err != nil {
		return api.CreateGuest{}, err
	}
	req := api.CreateGuest{
		Name: name, Driver: o.driver, Memory: o.memory, VCPUs: o.vcpus, CPUShares: o.cpuShares,
		Rootfs: o.rootfs, Kernel: o.kernel, Initrd: o.initrd, NoStart: o.noStart, Reserve: o.reserve,
		Constraints: o.constraints, SpreadBy: o.spreadBy, CPUSet: o.cpuset, Devices: o.devices,
		Partition: o.partition, Disks: o.disks,
		CapAdd: o.capAdd, CapDrop: o.capDrop, Network: o.network,
		UserNS: o.userns || len(o.idmap) > 0, IDMap: o.idmap,
	}
	for _, d := range o.disks {
		if _, err := events.ParseDisk(d); err != nil {
			return req, err
		}
	}
	if o.partition != "" {
		if err := events.ValidateID("partition", o.partition); err != nil {
			return req, err
		}
	}
	if o.vcpupin {
		if o.cpuset != "" {
			return req, usagef("give either --cpuset or --vcpupin, not both")
		}
		req.PinCPUs = o.vcpus
	}
	if d := cmd.ArgsLenAtDash(); d >= 0 {
		req.Command = args[d:]
	}
	if o.command != "" {
		if len(req.Command) > 0 {
			return req, usagef("give the command either with --command or after --, not both")
		}
		if req.Command, err = splitCommand(o.command); err != nil {
			return req, fmt.Errorf("--command: %w", err)
		}
	}
	if len(o.labels) > 0 {
		req.Labels = map[string]string{}
		for _, l := range o.labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return req, usagef("label %q is not key=value", l)
			}
			if _, dup := req.Labels[k]; dup {
				return req, usagef("label %q is given twice", k)
			}
			req.Labels[k] = v
		}
	}
	// The API reads 0 as "the default"; a 0 typed by the user is a mistake.
	if err := events.ValidateCPUShares(o.cpuShares); err != nil {
		return req, err
	}
	if o.vcpus < 1 {
		return req, &events.FieldError{Field: "vcpus", Value: strconv.Itoa(o.vcpus), Want: fmt.Sprintf("use 1 to %d", events.MaxVCPUs)}
	}
	if req.Restart, err = o.restart.request(cmd); err != nil {
		return req, err
	}
	if _, err := (&cluster.CreateGuest{CreateGuest: req}).Definition(); err != nil {
		return req, err
	}
	return req, nil
}

func (a *app) printDryRun(cmd *cobra.Command, c *api.Client, req api.CreateGuest) error {
	p, err := c.DryRun(cmd.Context(), req)
	if err != nil {
		return err
	}
	if a.json() {
		return writeJSON(a.stdout, p)
	}
	if p.Node == "" {
		fmt.Fprintf(a.stdout, "guest %s would stay pending:\n", req.Name)
		for _, l := range p.Unplaced {
			fmt.Fprintln(a.stdout, "  "+strings.TrimSpace(l))
		}
		return nil
	}
	fmt.Fprintf(a.stdout, "guest %s would be placed on node %s (score %.3f, best of %d feasible nodes)", req.Name, p.Node, p.Score, p.Ranked)
	if p.CPUs != "" {
		fmt.Fprintf(a.stdout, " with exclusive CPUs %s", p.CPUs)
	}
	fmt.Fprintln(a.stdout)
	return nil
}
