package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/events"
)

// A qemu guest's disks ([Spec.Disks]) are base images on the node that
// the guest never writes: each gets a qcow2 overlay of its own in the
// state directory (disk0.qcow2, disk1.qcow2, ...), made with qemu-img
// when missing and kept while the directory is, so a guest stopped and
// started again on the same node finds its writes, and the node agent
// removes them with the directory when the guest is destroyed. Guests on
// the same base see only their own overlays.

// overlayName is the file of disk i's overlay in the state directory.
func overlayName(i int) string { return "disk" + strconv.Itoa(i) + ".qcow2" }

// OverlayPath is the overlay of disk i of the guest whose state directory
// is dir.
func OverlayPath(dir string, i int) string { return filepath.Join(dir, overlayName(i)) }

// imageInfo is what qemu-img info --output=json says of an image.
type imageInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"full-backing-filename"`
}

// qemuImgTimeout bounds one qemu-img run.
const qemuImgTimeout = 30 * time.Second

func (d *QEMU) qemuImg(ctx context.Context, args ...string) ([]byte, error) {
	bin, err := exec.LookPath(d.cfg.QEMU.ImgBinary)
	if err != nil {
		return nil, fmt.Errorf("%s is needed for disks and was not found (install qemu-utils): %w", d.cfg.QEMU.ImgBinary, err)
	}
	ctx, cancel := context.WithTimeout(ctx, qemuImgTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("qemu-img %s: %w: %s", args[0], err, strings.TrimSpace(errOut.String()))
	}
	return out.Bytes(), nil
}

// info reads an image's format and size without taking its lock (-U): a
// base image is shared by running guests.
func (d *QEMU) info(ctx context.Context, path string) (imageInfo, error) {
	out, err := d.qemuImg(ctx, "info", "-U", "--output=json", path)
	if err != nil {
		return imageInfo{}, err
	}
	var info imageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return imageInfo{}, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	return info, nil
}

// prepareDisks checks each base image on the node and makes the overlays
// that are missing. A base that is missing, not a regular file, or not of
// the format the definition says is refused with ErrInvalidSpec.
func (d *QEMU) prepareDisks(ctx context.Context, spec *Spec) error {
	g := spec.Guest
	for i, disk := range spec.Disks {
		if err := disk.Validate(); err != nil {
			return fmt.Errorf("%w: %s: disk %d: %w", ErrInvalidSpec, g, i, err)
		}
		if err := checkReadable(g, "disk image", disk.Image); err != nil {
			return err
		}
		base, err := d.info(ctx, disk.Image)
		if err != nil {
			return fmt.Errorf("%w: %s: disk %d: %w", ErrInvalidSpec, g, i, err)
		}
		if base.Format != disk.ImageFormat() {
			return fmt.Errorf("%w: %s: disk image %s is %s, not %s; say format=%s if that is what it is meant to be", ErrInvalidSpec, g, disk.Image, base.Format, disk.ImageFormat(), base.Format)
		}
		if disk.SizeBytes > 0 && disk.SizeBytes < base.VirtualSize {
			return fmt.Errorf("%w: %s: disk %s: size %s is smaller than the image (%s); an overlay can only grow it", ErrInvalidSpec, g, disk.Image, events.FormatSize(disk.SizeBytes), events.FormatSize(base.VirtualSize))
		}
		ov := OverlayPath(spec.StateDir, i)
		if _, err := os.Stat(ov); err == nil {
			info, err := d.info(ctx, ov)
			if err != nil {
				return fmt.Errorf("%w: %s: overlay %s: %w", ErrStart, g, ov, err)
			}
			if info.BackingFilename != disk.Image {
				return fmt.Errorf("%w: %s: overlay %s is over %q, not %s; destroy the guest to start afresh", ErrStart, g, ov, info.BackingFilename, disk.Image)
			}
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s: overlay: %w", ErrStart, g, err)
		}
		// Made under a temporary name and renamed, so a crash never
		// leaves a half-made overlay that a later start would take.
		tmp := ov + ".tmp"
		args := []string{"create", "-q", "-f", "qcow2", "-F", disk.ImageFormat(), "-b", disk.Image, tmp}
		if disk.SizeBytes > 0 {
			args = append(args, strconv.FormatInt(disk.SizeBytes, 10))
		}
		if _, err := d.qemuImg(ctx, args...); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("%w: %s: disk %d: %w", ErrStart, g, i, err)
		}
		if err := os.Rename(tmp, ov); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("%w: %s: disk %d: %w", ErrStart, g, i, err)
		}
	}
	return nil
}

// diskArgs attaches each overlay with virtio-blk, in order (vda, vdb...).
func diskArgs(spec *Spec) []string {
	var args []string
	for i, disk := range spec.Disks {
		opt := "file=" + optEscape(OverlayPath(spec.StateDir, i)) + ",if=virtio,format=qcow2"
		if disk.Cache != "" {
			opt += ",cache=" + disk.Cache
		}
		args = append(args, "-drive", opt)
	}
	return args
}
