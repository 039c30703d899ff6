package events

import (
	"fmt"
	"slices"
	"strings"
)

// GuestDisk is one disk of a qemu guest, attached with virtio-blk in the
// order given (the first is /dev/vda). Image is a base image on the node:
// the guest writes to a copy-on-write qcow2 overlay of its own in its
// state directory, never to Image, so guests sharing a base never see
// each other's writes.
type GuestDisk struct {
	Image string `json:"image"`
	// Format is the base image's format: raw (the default) or qcow2. It is
	// checked against the image on the node, never guessed from it.
	Format string `json:"format,omitempty"`
	// Cache is QEMU's cache mode, as libvirt's driver cache attribute:
	// none, writeback, writethrough, directsync or unsafe; QEMU's default
	// (writeback) when empty.
	Cache string `json:"cache,omitempty"`
	// SizeBytes grows the overlay beyond the base image's size; zero keeps
	// the base's size.
	SizeBytes int64 `json:"size_bytes,omitempty"`
}

// Disk formats and cache modes a [GuestDisk] may name.
var (
	DiskFormats    = []string{"raw", "qcow2"}
	DiskCacheModes = []string{"none", "writeback", "writethrough", "directsync", "unsafe"}
)

// MaxDisks is the most disks one guest may have.
const MaxDisks = 16

// ImageFormat is the disk's format, raw when not given.
func (d GuestDisk) ImageFormat() string {
	if d.Format == "" {
		return "raw"
	}
	return d.Format
}

// ParseDisk reads a disk as `guest create --disk` takes it:
// IMAGE[,format=raw|qcow2][,cache=MODE][,size=SIZE]. The image path may
// not contain a comma.
func ParseDisk(spec string) (GuestDisk, error) {
	parts := strings.Split(spec, ",")
	d := GuestDisk{Image: parts[0]}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		switch {
		case !ok:
			return GuestDisk{}, fieldErr("disk", truncate(spec), fmt.Sprintf("%q is not KEY=VALUE; use IMAGE[,format=raw|qcow2][,cache=MODE][,size=SIZE] (an image path may not contain a comma)", p))
		case k == "format":
			d.Format = v
		case k == "cache":
			d.Cache = v
		case k == "size":
			n, err := ParseSize("disk size", v)
			if err != nil {
				return GuestDisk{}, err
			}
			d.SizeBytes = n
		default:
			return GuestDisk{}, fieldErr("disk", truncate(spec), fmt.Sprintf("unknown option %q; use format, cache or size", k))
		}
	}
	return d, d.Validate()
}

// Validate checks what can be checked without the node: the image path,
// format, cache mode and size. That the image exists and has the format
// is checked on the node when the guest starts.
func (d GuestDisk) Validate() error {
	if err := validatePath("disk image", d.Image, true); err != nil {
		return err
	}
	if d.Format != "" && !slices.Contains(DiskFormats, d.Format) {
		return fieldErr("disk format", d.Format, "use raw or qcow2")
	}
	if d.Cache != "" && !slices.Contains(DiskCacheModes, d.Cache) {
		return fieldErr("disk cache", d.Cache, "use none, writeback, writethrough, directsync or unsafe")
	}
	if d.SizeBytes < 0 || d.SizeBytes > MaxDiskBytes {
		return fieldErr("disk size", FormatSize(d.SizeBytes), "use a positive size up to "+FormatSize(MaxDiskBytes))
	}
	return nil
}

// MaxDiskBytes is the largest overlay size a disk may ask for.
const MaxDiskBytes = 64 << 40

func validateDisks(driver string, disks []GuestDisk) error {
	if len(disks) == 0 {
		return nil
	}
	if driver != DriverQEMU {
		return fieldErr("disk", disks[0].Image, "only qemu guests have disks; an lxc guest's file system is its --rootfs")
	}
	if len(disks) > MaxDisks {
		return fieldErr("disk", fmt.Sprint(len(disks)), fmt.Sprintf("at most %d disks per guest", MaxDisks))
	}
	for _, d := range disks {
		if err := d.Validate(); err != nil {
			return err
		}
	}
	return nil
}
