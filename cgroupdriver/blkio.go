package cgroupdriver

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// BlkioDevices is blkiotune's per-device settings, one list per knob, each
// device named by its path as the operator gave it. A nil list is not
// managed; an empty one is, and sets no device (JSON keeps the two apart:
// null and []). A Value of 0 removes the device's setting: the agent sends
// 0 for a device dropped from a list.
//
// Planning resolves every path on this host with stat(2): it must be a
// block device and a whole disk (the kernel keeps I/O policy per disk).
// One that is not is refused with a [FieldError] naming the knob and the
// path. An entry of 0 whose path is gone is dropped: there is nothing to
// remove.
type BlkioDevices struct {
	// Weight (device_weight): v1 blkio.weight_device or
	// blkio.bfq.weight_device, v2 io.weight or io.bfq.weight, as the
	// kernel has them ([HostInfo.BlkioWeightFile]).
	Weight []BlkioDevice `json:"device_weight"`
	// ReadBps, WriteBps, ReadIOPS, WriteIOPS (device_read_bytes_sec, …):
	// v1 blkio.throttle.{read,write}_{bps,iops}_device, v2 io.max.
	ReadBps   []BlkioDevice `json:"device_read_bytes_sec"`
	WriteBps  []BlkioDevice `json:"device_write_bytes_sec"`
	ReadIOPS  []BlkioDevice `json:"device_read_iops_sec"`
	WriteIOPS []BlkioDevice `json:"device_write_iops_sec"`
}

// BlkioDevice is one device of a [BlkioDevices] list.
type BlkioDevice struct {
	Path  string `json:"path"`
	Value uint64 `json:"value"`
	// dev is the resolved "major:minor"; set only on the driver's own copy.
	dev string
}

// blkioKnob describes one per-device knob: its name, its list in
// [BlkioDevices], and its v1 throttle file and v2 io.max key.
type blkioKnob struct {
	name  string
	list  func(*BlkioDevices) *[]BlkioDevice
	v1    string // "" for the weight, whose file depends on the kernel
	v2Key string
}

var blkioKnobs = [...]blkioKnob{
	{"device_weight", func(b *BlkioDevices) *[]BlkioDevice { return &b.Weight }, "", ""},
	{"device_read_bytes_sec", func(b *BlkioDevices) *[]BlkioDevice { return &b.ReadBps }, "blkio.throttle.read_bps_device", "rbps"},
	{"device_write_bytes_sec", func(b *BlkioDevices) *[]BlkioDevice { return &b.WriteBps }, "blkio.throttle.write_bps_device", "wbps"},
	{"device_read_iops_sec", func(b *BlkioDevices) *[]BlkioDevice { return &b.ReadIOPS }, "blkio.throttle.read_iops_device", "riops"},
	{"device_write_iops_sec", func(b *BlkioDevices) *[]BlkioDevice { return &b.WriteIOPS }, "blkio.throttle.write_iops_device", "wiops"},
}

func lookupBlkioKnob(name string) (blkioKnob, bool) {
	for _, k := range blkioKnobs {
		if k.name == name {
			return k, true
		}
	}
	return blkioKnob{}, false
}

// setBlkioKnob sets knob's list from text "PATH,VALUE[,PATH,VALUE]",
// keeping entries of 0. It checks form only.
func (r *Resources) setBlkioKnob(k blkioKnob, value string) error {
	bad := func(why string) error {
		return &FieldError{Field: k.name, Value: value, Reason: why + `; want PATH,VALUE[,PATH,VALUE] like "/dev/sda,500"`}
	}
	list := []BlkioDevice{}
	if v := strings.TrimSpace(value); v != "" {
		f := strings.Split(v, ",")
		if len(f)%2 != 0 {
			return bad("not pairs of path and value")
		}
		for i := 0; i < len(f); i += 2 {
			p := strings.TrimSpace(f[i])
			if !path.IsAbs(p) || path.Clean(p) != p {
				return bad(fmt.Sprintf("%q is not a clean absolute path", p))
			}
			if slices.ContainsFunc(list, func(d BlkioDevice) bool { return d.Path == p }) {
				return bad(p + " is listed twice")
			}
			n, err := strconv.ParseUint(strings.TrimSpace(f[i+1]), 10, 64)
			if err != nil {
				return bad(fmt.Sprintf("%q is not a whole number", f[i+1]))
			}
			list = append(list, BlkioDevice{Path: p, Value: n})
		}
	}
	slices.SortFunc(list, func(a, b BlkioDevice) int { return strings.Compare(a.Path, b.Path) })
	if r.BlkioDevices == nil {
		r.BlkioDevices = &BlkioDevices{}
	} else {
		c := *r.BlkioDevices
		r.BlkioDevices = &c
	}
	*k.list(r.BlkioDevices) = list
	return nil
}

// blkioKnobText adds the canonical text of every managed per-device list
// to out: entries sorted by path, entries of 0 left out.
func (b *BlkioDevices) knobText(out map[string]string) {
	if b == nil {
		return
	}
	for _, k := range blkioKnobs {
		list := *k.list(b)
		if list == nil {
			continue
		}
		list = slices.Clone(list)
		slices.SortFunc(list, func(a, b BlkioDevice) int { return strings.Compare(a.Path, b.Path) })
		var parts []string
		for _, d := range list {
			if d.Value != 0 {
				parts = append(parts, d.Path+","+strconv.FormatUint(d.Value, 10))
			}
		}
		out[k.name] = strings.Join(parts, ",")
	}
}

// only returns the part of b that manages knob, or nil.
func (b *BlkioDevices) only(knob string) *BlkioDevices {
	k, ok := lookupBlkioKnob(knob)
	if b == nil || !ok || *k.list(b) == nil {
		return nil
	}
	out := &BlkioDevices{}
	*k.list(out) = *k.list(b)
	return out
}

// resolveBlkio returns a copy of r whose per-device entries carry their
// device numbers on this host, leaving out those that do not resolve, and
// a [FieldError] for each of them, joined. r is not changed.
func resolveBlkio(r *Resources) (*Resources, error) {
	if r.BlkioDevices == nil {
		return r, nil
	}
	out := *r
	out.BlkioDevices = &BlkioDevices{}
	var errs []error
	for _, k := range blkioKnobs {
		in := *k.list(r.BlkioDevices)
		if in == nil {
			continue
		}
		list := make([]BlkioDevice, 0, len(in))
		for _, d := range in {
			dev, err := resolveDevice(d.Path)
			switch {
			case err == nil:
				d.dev = dev
				list = append(list, d)
			case d.Value == 0 && errors.Is(err, os.ErrNotExist):
				// Gone with its setting: nothing to remove.
			default:
				errs = append(errs, fieldErr(k.name, d.Path, "%v", err))
			}
		}
		*k.list(out.BlkioDevices) = list
	}
	return &out, errors.Join(errs...)
}

// resolveDevice returns the "major:minor" of the whole-disk block device
// at p.
func resolveDevice(p string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("no such device on this node (%w); name a block device the node has, or remove it from the list with %s,0", os.ErrNotExist, p)
		}
		return "", fmt.Errorf("cannot stat it on this node: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("not a block device on this node; name a disk such as /dev/sda")
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if exists("/sys/dev/block/" + dev + "/partition") {
		return "", fmt.Errorf("is a partition (%s); the kernel keeps I/O weights and throttles per whole disk: name the disk it is on", dev)
	}
	return dev, nil
}

// validateBlkioDevices checks resolved per-device lists against the host.
func validateBlkioDevices(h *HostInfo, b *BlkioDevices, add func(*FieldError), need func(controller, string, any) int) {
	first := true
	for _, k := range blkioKnobs {
		for _, d := range *k.list(b) {
			if first {
				first = false
				if need(cBlkio, k.name, d.Path) == 0 {
					return
				}
			}
			switch {
			case d.dev == "":
				add(fieldErr(k.name, d.Path, "device path not resolved on this host"))
			case k.name == "device_weight" && d.Value != 0:
				lo, hi := weightRange(h.BlkioWeightFile)
				if hi == 0 {
					add(fieldErr(k.name, d.Path, "this kernel has no proportional I/O weight (neither blkio.weight nor blkio.bfq.weight)"))
				} else if int64(d.Value) < int64(lo) || d.Value > uint64(hi) {
					add(fieldErr(k.name, d.Path+","+strconv.FormatUint(d.Value, 10), "the weight must be %d..%d for %s", lo, hi, h.BlkioWeightFile))
				}
			}
		}
	}
}

// blkioDevices appends the writes of the per-device lists: one per device
// and knob, each touching only its own rate (v2 io.max keeps the keys a
// write leaves out).
func (p *planner) blkioDevices(b *BlkioDevices, h *HostInfo, v1 bool) {
	if b == nil {
		return
	}
	for _, k := range blkioKnobs {
		for _, d := range *k.list(b) {
			v := strconv.FormatUint(d.Value, 10)
			switch {
			case k.v1 == "":
				file := weightDeviceFile(h.BlkioWeightFile)
				if d.Value == 0 && file != "blkio.weight_device" {
					v = "default" // BFQ and io.weight take "default", not 0
				}
				p.add(cBlkio, k.name, file, d.dev+" "+v)
			case v1:
				p.add(cBlkio, k.name, k.v1, d.dev+" "+v)
			default:
				if d.Value == 0 {
					v = "max"
				}
				p.add(cBlkio, k.name, "io.max", d.dev+" "+k.v2Key+"="+v)
			}
		}
	}
}

// weightDeviceFile is the per-device file beside a weight file.
func weightDeviceFile(weightFile string) string {
	switch weightFile {
	case "blkio.weight":
		return "blkio.weight_device"
	case "blkio.bfq.weight":
		return "blkio.bfq.weight_device"
	}
	return weightFile // io.weight and io.bfq.weight take "MAJ:MIN W" too
}

// SameDeviceLine reports whether got, a per-device file's line for the
// device of want ("" when the file has none), expresses want, a write of
// the per-device knobs: "MAJ:MIN V", "MAJ:MIN default" or
// "MAJ:MIN key=V" (io.max, whose line lists every key). [Driver.Observe]
// uses it for those files.
func SameDeviceLine(want, got string) bool {
	dev, v, _ := strings.Cut(want, " ")
	key, kv, isKey := strings.Cut(v, "=")
	if !isKey {
		if v == "0" || v == "default" {
			return got == ""
		}
		return got == want
	}
	if got == "" {
		return kv == "max"
	}
	f := strings.Fields(got)
	if len(f) == 0 || f[0] != dev {
		return false
	}
	for _, e := range f[1:] {
		if k, val, _ := strings.Cut(e, "="); k == key {
			return val == kv
		}
	}
	return kv == "max"
}
