package main

import (
	"strings"

	"github.com/corral-dev/corral/coordinator/api"
)

// printDisks adds a qemu guest's disks to guest show, one row each, in the
// order the guest sees them (/dev/vda, /dev/vdb, …), written as --disk
// takes them.
func printDisks(t *table, g *api.Guest) {
	for i, d := range g.Disks {
		opts := []string{d.Image, "format=" + d.ImageFormat()}
		if d.Cache != "" {
			opts = append(opts, "cache="+d.Cache)
		}
		if d.SizeBytes > 0 {
			opts = append(opts, "size="+formatBytes(d.SizeBytes))
		}
		t.row("Disk /dev/vd"+string(rune('a'+i))+":", strings.Join(opts, ","))
	}
}
