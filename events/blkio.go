package events

import (
	"path"
	"slices"
	"strconv"
	"strings"
)

// This file is blkiotune's per-device knobs (device_weight,
// device_read_bytes_sec, device_write_bytes_sec, device_read_iops_sec,
// device_write_iops_sec): a list of device paths and values, written as
// virsh takes it, "/dev/sda,500,/dev/sdb,300". A path is only checked for
// form here; the guest's node resolves it to a block device when it
// applies the value.

// Blkio weights, as libvirt accepts them for blkiotune --weight and
// --device-weights; the node checks its kernel file's own range too.
const (
	MinBlkioWeight = 100
	MaxBlkioWeight = 1000
)

// DeviceValue is one entry of a per-device blkio knob: a device path and
// its weight, bytes per second or I/O operations per second. Value 0
// removes the device's setting.
type DeviceValue struct {
	Path  string
	Value uint64
}

// maxDevicePath bounds a device path (PATH_MAX).
const maxDevicePath = 4096

// deviceKnobs are the per-device knobs and what one value of each is.
var deviceKnobs = map[string]string{
	"device_weight":          "weight",
	"device_read_bytes_sec":  "bytes",
	"device_write_bytes_sec": "bytes",
	"device_read_iops_sec":   "iops",
	"device_write_iops_sec":  "iops",
}

// IsDeviceKnob reports whether knob is one of blkiotune's per-device lists.
func IsDeviceKnob(knob string) bool { _, ok := deviceKnobs[knob]; return ok }

// ParseDeviceList reads a per-device knob value, "PATH,VALUE[,PATH,VALUE]",
// keeping entries of 0 (they remove a device's setting when merged). Bytes
// take a size unit (1M, 512KiB) or are plain bytes; weights are 0 or
// 100..1000; IOPS are whole numbers. The empty string is the empty list.
func ParseDeviceList(knob, s string) ([]DeviceValue, error) {
	kind, ok := deviceKnobs[knob]
	if !ok {
		return nil, fieldErr("knob", knob, "not a per-device blkio knob")
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	f := strings.Split(s, ",")
	if len(f)%2 != 0 {
		return nil, fieldErr(knob, s, "give PATH,VALUE pairs separated by commas, like /dev/sda,"+example(kind))
	}
	out := make([]DeviceValue, 0, len(f)/2)
	for i := 0; i < len(f); i += 2 {
		p := strings.TrimSpace(f[i])
		if err := checkDevicePath(knob, p); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(d DeviceValue) bool { return d.Path == p }) {
			return nil, fieldErr(knob, s, "names "+p+" twice; give each device once")
		}
		v, err := deviceValue(knob, kind, strings.TrimSpace(f[i+1]))
		if err != nil {
			return nil, err
		}
		out = append(out, DeviceValue{Path: p, Value: v})
	}
	slices.SortFunc(out, func(a, b DeviceValue) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// FormatDeviceList is the canonical text of a per-device knob: entries
// sorted by path, numbers in decimal (bytes as bytes), entries of 0
// left out, as a device without a setting has none.
func FormatDeviceList(list []DeviceValue) string {
	list = slices.Clone(list)
	slices.SortFunc(list, func(a, b DeviceValue) int { return strings.Compare(a.Path, b.Path) })
	var b strings.Builder
	for _, d := range list {
		if d.Value == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(d.Path)
		b.WriteByte(',')
		b.WriteString(strconv.FormatUint(d.Value, 10))
	}
	return b.String()
}

// MergeDeviceList applies change to the canonical list old as virsh
// blkiotune does: a device in change gets its new value, one with 0 is
// removed, and the others keep theirs. It returns the canonical result.
func MergeDeviceList(knob, old, change string) (string, error) {
	have, err := ParseDeviceList(knob, old)
	if err != nil {
		return "", err
	}
	ch, err := ParseDeviceList(knob, change)
	if err != nil {
		return "", err
	}
	for _, c := range ch {
		if i := slices.IndexFunc(have, func(d DeviceValue) bool { return d.Path == c.Path }); i >= 0 {
			have[i].Value = c.Value
		} else {
			have = append(have, c)
		}
	}
	return FormatDeviceList(have), nil
}

func deviceList(knob string) func(string) (string, error) {
	return func(s string) (string, error) {
		list, err := ParseDeviceList(knob, s)
		if err != nil {
			return "", err
		}
		return FormatDeviceList(list), nil
	}
}

// checkDevicePath checks the form of a device path: absolute, clean, below
// /dev/. Whether it is a block device is the node's to say.
func checkDevicePath(knob, p string) error {
	const want = "give an absolute device path below /dev/, like /dev/sda or /dev/disk/by-id/..."
	if !strings.HasPrefix(p, "/dev/") || len(p) <= len("/dev/") || len(p) > maxDevicePath || path.Clean(p) != p {
		return fieldErr(knob, p, want)
	}
	for _, c := range p {
		if c <= ' ' || c == 0x7f {
			return fieldErr(knob, p, "a device path has no spaces or control characters; "+want)
		}
	}
	return nil
}

func deviceValue(knob, kind, s string) (uint64, error) {
	if s == "0" {
		return 0, nil
	}
	switch kind {
	case "bytes":
		n, err := ParseSize(knob, s)
		if err != nil {
			return 0, fieldErr(knob, s, "give bytes per second, plain or with a unit (1M, 512KiB), or 0 to remove the limit")
		}
		return uint64(n), nil
	case "weight":
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n < MinBlkioWeight || n > MaxBlkioWeight {
			return 0, fieldErr(knob, s, "give a weight from 100 to 1000, or 0 to remove the device's weight")
		}
		return n, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fieldErr(knob, s, "give a whole number of I/O operations per second, or 0 to remove the limit")
	}
	return n, nil
}

func example(kind string) string {
	switch kind {
	case "weight":
		return "500"
	case "bytes":
		return "10M"
	}
	return "1000"
}

// DeviceListChange returns the entries that take a host from the list
// applied to want (both canonical): want's, plus 0 for every device of
// applied that want leaves out, which removes its setting. The result is
// not canonical (it keeps the zeros); a value that does not parse is
// returned as want, for the host to refuse.
func DeviceListChange(knob, applied, want string) string {
	have, err1 := ParseDeviceList(knob, applied)
	next, err2 := ParseDeviceList(knob, want)
	if err1 != nil || err2 != nil {
		return want
	}
	for _, d := range have {
		if !slices.ContainsFunc(next, func(n DeviceValue) bool { return n.Path == d.Path }) {
			next = append(next, DeviceValue{Path: d.Path})
		}
	}
	slices.SortFunc(next, func(a, b DeviceValue) int { return strings.Compare(a.Path, b.Path) })
	parts := make([]string, 0, 2*len(next))
	for _, d := range next {
		parts = append(parts, d.Path, strconv.FormatUint(d.Value, 10))
	}
	return strings.Join(parts, ",")
}
