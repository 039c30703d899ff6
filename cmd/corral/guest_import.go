package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/cmd/corral/domainxml"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
)

type importOptions struct {
	file   string
	name   string
	dryRun bool
	strict bool
	start  bool
}

func (a *app) guestImportCommand() *cobra.Command {
	var o importOptions
	cmd := &cobra.Command{
		Use:   "import --from-libvirt-xml FILE [--name NAME] [--dry-run] [--strict] [--start]",
		Short: "Define a guest from a libvirt domain's XML (virsh dumpxml)",
		Long: `Define a guest from a libvirt domain, as virsh dumpxml DOMAIN writes it: a
kvm or qemu domain becomes a qemu guest, an lxc domain an lxc guest. Memory,
vCPUs, cputune, memtune, blkiotune, numatune, vcpupin and emulatorpin, disks
(qemu), the root filesystem and init (lxc) and host devices of an lxc domain
become the guest's definition and persistent tuning, created in one step.

What corral has no place for (a network interface, a display, a CD-ROM, a PCI
device, ...) is listed, one line per element with its value and why; the guest
is defined without it. --strict refuses the import instead, creating nothing.
Like virsh define, the guest is defined, not started, unless --start.

File paths (disk images, the root filesystem, the kernel) are taken as they
are: they must exist on the node the guest is placed on.`,
		Example: `  virsh dumpxml web-vm > web-vm.xml
  corral guest import --from-libvirt-xml web-vm.xml --dry-run
  corral guest import --from-libvirt-xml web-vm.xml --name web
  corral guest import --from-libvirt-xml ct1.xml --strict --start`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			doc, err := os.ReadFile(o.file)
			if err != nil {
				return fmt.Errorf("--from-libvirt-xml: %w", err)
			}
			r, err := domainxml.Map(doc, o.name)
			if err != nil {
				return err
			}
			r.Guest.NoStart = !o.start
			if _, err := (&cluster.CreateGuest{CreateGuest: r.Guest}).Definition(); err != nil {
				return fmt.Errorf("domain %s: %w", r.Domain, err)
			}
			if o.strict && len(r.Unmapped) > 0 {
				printUnmapped(a.stderr, r)
				return fmt.Errorf("domain %s has %d elements corral cannot map (listed above) and --strict was given: nothing was created; import without --strict to define the guest without them",
					r.Domain, len(r.Unmapped))
			}
			if o.dryRun {
				return a.printImport(r, nil)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.CreateGuest(cmd.Context(), r.Guest)
			if err != nil {
				return err
			}
			return a.printImport(r, &res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.file, "from-libvirt-xml", "", "the domain's XML, as virsh dumpxml DOMAIN writes it")
	f.StringVar(&o.name, "name", "", "the guest's name (default: the domain's)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print what the domain maps to and what it cannot, and create nothing")
	f.BoolVar(&o.strict, "strict", false, "refuse the import, creating nothing, when any element cannot be mapped")
	f.BoolVar(&o.start, "start", false, "ask for the guest to run once it is defined (default: define only, as virsh define)")
	cmd.MarkFlagRequired("from-libvirt-xml")
	return cmd
}

// importOutput is corral guest import -o json.
type importOutput struct {
	*domainxml.Result
	Created *api.WriteResult `json:"created,omitempty"`
}

func (a *app) printImport(r *domainxml.Result, res *api.WriteResult) error {
	if a.json() {
		return writeJSON(a.stdout, importOutput{Result: r, Created: res})
	}
	if res == nil {
		fmt.Fprintf(a.stdout, "domain %s would become %s guest %s (nothing created: --dry-run):\n", r.Domain, r.Guest.Driver, r.Guest.Name)
		t := newTable(a.stdout, "LIBVIRT", "VALUE", "CORRAL")
		for _, m := range r.Mapped {
			t.row(m.Element, m.Value, m.To)
		}
		if err := t.flush(); err != nil {
			return err
		}
	} else {
		what := "guest " + r.Guest.Name + " defined from libvirt domain " + r.Domain
		if !r.Guest.NoStart {
			what = "guest " + r.Guest.Name + " created from libvirt domain " + r.Domain
		}
		if err := a.printWrite(*res, what); err != nil {
			return err
		}
	}
	printUnmapped(a.stderr, r)
	return nil
}

// printUnmapped lists what the guest does not carry, as warnings.
func printUnmapped(w io.Writer, r *domainxml.Result) {
	if len(r.Unmapped) == 0 {
		return
	}
	fmt.Fprintf(w, "corral: warning: %d elements of domain %s are not mapped:\n", len(r.Unmapped), r.Domain)
	t := newTable(w, "ELEMENT", "VALUE", "WHY")
	for _, u := range r.Unmapped {
		t.row(u.Element, u.Value, u.Why)
	}
	t.flush()
}
