package cgroupdriver

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// HostInfo is what validation and planning need to know about the host
// beyond the mount layout. [New] probes it unless [Config.Host] supplies it
// (tests do, to plan against a fake cgroupfs).
type HostInfo struct {
	// CPUs and Mems are the CPUs and memory nodes the partition may use,
	// in cpuset list format; empty when no cpuset controller is available.
	CPUs string `json:"cpus"`
	Mems string `json:"mems"`
	// V2Controllers are the controllers cgroup v2 lets the partition enable
	// for the groups below it (its cgroup.controllers).
	V2Controllers []string `json:"v2_controllers,omitempty"`
	// BlkioWeightFile names the weight knob: blkio.weight or
	// blkio.bfq.weight on v1, io.weight or io.bfq.weight on v2; "" when the
	// kernel has none.
	BlkioWeightFile string `json:"blkio_weight_file,omitempty"`
	// SwapAccounting reports memory.memsw.* (v1) or memory.swap.max (v2).
	SwapAccounting bool `json:"swap_accounting"`
	// BlockDevices are the whole disks of the host as "major:minor".
	BlockDevices []string `json:"block_devices"`
	// KVM reports /dev/kvm.
	KVM bool `json:"kvm"`
	// PageSize is the memory page size in bytes; limits are at least one.
	PageSize int64 `json:"page_size"`
}

// probeHost reads HostInfo for layout l from the live file system, and
// resolves l's controller routing on the way.
func probeHost(l *layout) (HostInfo, error) {
	info := HostInfo{PageSize: int64(unix.Getpagesize())}
	if l.v2 >= 0 {
		h := l.hs[l.v2]
		// What the partition (or, before it exists, its nearest ancestor)
		// can enable for the groups below it.
		dir := existingAncestor(h.part, h.MountPoint)
		info.V2Controllers = strings.Fields(readString(path.Join(dir, "cgroup.controllers")))
	}
	l.resolve(info.V2Controllers)

	if i, v := l.at(cCPUSet); i >= 0 {
		dir := existingAncestor(l.hs[i].part, l.hs[i].MountPoint)
		eff := "cpuset.effective_cpus"
		effMems := "cpuset.effective_mems"
		if v == 2 {
			eff, effMems = "cpuset.cpus.effective", "cpuset.mems.effective"
		}
		info.CPUs = firstNonEmpty(readString(path.Join(dir, eff)), readString(path.Join(dir, "cpuset.cpus")))
		info.Mems = firstNonEmpty(readString(path.Join(dir, effMems)), readString(path.Join(dir, "cpuset.mems")))
	}
	if i, v := l.at(cBlkio); i >= 0 {
		info.BlkioWeightFile = probeWeightFile(existingAncestor(l.hs[i].part, l.hs[i].MountPoint), v)
	}
	if i, v := l.at(cMemory); i >= 0 {
		if v == 1 {
			info.SwapAccounting = exists(path.Join(existingAncestor(l.hs[i].part, l.hs[i].MountPoint), "memory.memsw.limit_in_bytes"))
		} else {
			// The root group has no memory.swap.max; swap accounting is
			// there whenever the kernel has swap support.
			info.SwapAccounting = exists("/proc/swaps")
		}
	}
	devs, err := wholeDisks("/sys/dev/block")
	if err != nil {
		return HostInfo{}, err
	}
	info.BlockDevices = devs
	info.KVM = exists("/dev/kvm")
	return info, nil
}

// probeWeightFile finds the proportional I/O weight file. A root group has
// none of them, so it falls back to the statistics files BFQ adds, and to
// io.weight on v2.
func probeWeightFile(dir string, version int) string {
	if version == 1 {
		switch {
		case exists(path.Join(dir, "blkio.weight")):
			return "blkio.weight"
		case exists(path.Join(dir, "blkio.bfq.weight")), exists(path.Join(dir, "blkio.bfq.io_service_bytes")):
			return "blkio.bfq.weight"
		}
		return ""
	}
	if exists(path.Join(dir, "io.bfq.weight")) {
		return "io.bfq.weight"
	}
	return "io.weight"
}

// wholeDisks lists "major:minor" of every block device in sysDevBlock that
// is not a partition; throttles only apply to whole disks.
func wholeDisks(sysDevBlock string) ([]string, error) {
	ents, err := os.ReadDir(sysDevBlock)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("corral: list block devices: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !exists(path.Join(sysDevBlock, e.Name(), "partition")) {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// existingAncestor returns dir or its nearest existing ancestor, stopping at
// stop.
func existingAncestor(dir, stop string) string {
	for dir != stop && len(dir) > len(stop) && !exists(dir) {
		dir = path.Dir(dir)
	}
	return dir
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func readString(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
