package main

import (
	"strings"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestGuestShowDisksAndVMNetwork: guest show prints a qemu guest's disks
// in the guest's order, as --disk takes them, and a VM without a network
// as having no NIC (a container has lo).
func TestGuestShowDisksAndVMNetwork(t *testing.T) {
	var out strings.Builder
	a := &app{stdout: &out, stderr: &out, getenv: func(string) string { return "" }, output: "table"}
	gv := &api.GuestView{}
	gv.Name, gv.Driver, gv.Desired, gv.Status = "vm2", events.DriverQEMU, "running", "running"
	gv.MemoryBytes, gv.VCPUs, gv.Kernel = 512<<20, 1, "/srv/vmlinuz"
	gv.Disks = []events.GuestDisk{
		{Image: "/srv/images/base.raw"},
		{Image: "/srv/images/data.qcow2", Format: "qcow2", Cache: "none", SizeBytes: 10 << 30},
	}
	if err := printGuest(a, gv); err != nil {
		t.Fatal(err)
	}
	for _, row := range [][]string{
		{"Disk", "/dev/vda:", "/srv/images/base.raw,format=raw"},
		{"Disk", "/dev/vdb:", "/srv/images/data.qcow2,format=qcow2,cache=none,size=10GiB"},
		{"Network:", "none", "(no", "NIC)"},
	} {
		if !containsRow(out.String(), row...) {
			t.Errorf("guest show lacks the row %q:\n%s", strings.Join(row, " "), out.String())
		}
	}
	if strings.Index(out.String(), "/dev/vda") > strings.Index(out.String(), "/dev/vdb") {
		t.Errorf("disks out of the guest's order:\n%s", out.String())
	}

	out.Reset()
	gv.Driver, gv.Disks, gv.Kernel, gv.Rootfs = events.DriverLXC, nil, "", "/srv/rootfs"
	if err := printGuest(a, gv); err != nil {
		t.Fatal(err)
	}
	if !containsRow(out.String(), "Network:", "none", "(lo", "only)") || strings.Contains(out.String(), "Disk /dev/") {
		t.Errorf("a container without disks or network:\n%s", out.String())
	}
}
