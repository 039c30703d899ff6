package cgroupdriver

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

const (
	minShares   = 2
	maxShares   = 262144
	minPeriodUs = 1000
	maxPeriodUs = 1000000
	minQuotaUs  = 1000
	maxQuotaUs  = 1<<44 - 1 // the kernel's max_cfs_runtime
)

// validate checks r against the layout and host. It returns every problem
// found, each a *FieldError, joined; nil when r can be written as is.
// Device paths are resolved on this host on the way.
func validate(l *layout, h *HostInfo, r *Resources) error {
	_, err := resolveValidate(l, h, r)
	return err
}

// resolveValidate resolves r's device paths ([BlkioDevices]) and checks
// the result; it returns the resolved copy, to plan from, and every
// problem of either step.
func resolveValidate(l *layout, h *HostInfo, r *Resources) (*Resources, error) {
	rr, rerr := resolveBlkio(r)
	return rr, errors.Join(rerr, validateResolved(l, h, rr))
}

func validateResolved(l *layout, h *HostInfo, r *Resources) error {
	var errs []error
	add := func(e *FieldError) { errs = append(errs, e) }
	// need reports the version of the hierarchy carrying c, or records a
	// missing-controller error for field.
	need := func(c controller, field string, value any) int {
		if i, v := l.at(c); i >= 0 {
			return v
		}
		add(missingErr(field, value, "%s", missingReason(l, c)))
		return 0
	}
	page := h.PageSize
	if page <= 0 {
		page = 4096
	}

	if r.CPUShares != nil {
		need(cCPU, "cpu_shares", *r.CPUShares)
		if v := *r.CPUShares; v < minShares || v > maxShares {
			add(fieldErr("cpu_shares", v, "must be %d..%d (default 1024)", minShares, maxShares))
		}
	}
	if r.CPUPeriodUs != nil {
		ver := need(cCPU, "vcpu_period", *r.CPUPeriodUs)
		if v := *r.CPUPeriodUs; v < minPeriodUs || v > maxPeriodUs {
			add(fieldErr("vcpu_period", v, "must be %d..%d microseconds", minPeriodUs, maxPeriodUs))
		}
		if ver == 2 && r.CPUQuotaUs == nil {
			add(fieldErr("vcpu_period", *r.CPUPeriodUs, "cgroup v2 keeps period and quota in one file (cpu.max): set vcpu_quota too (-1 for unlimited)"))
		}
	}
	if r.CPUQuotaUs != nil {
		need(cCPU, "vcpu_quota", *r.CPUQuotaUs)
		if v := *r.CPUQuotaUs; v != Unlimited && (v < minQuotaUs || v > maxQuotaUs) {
			add(fieldErr("vcpu_quota", v, "must be -1 (unlimited) or %d..%d microseconds", minQuotaUs, int64(maxQuotaUs)))
		}
	}
	checkSet := func(field, value, allowed, what string) {
		if value == "" {
			return
		}
		if need(cCPUSet, field, value) == 0 {
			return
		}
		set, err := parseCPUSet(value)
		if err != nil {
			add(fieldErr(field, value, "%v", err))
			return
		}
		if len(set) == 0 {
			add(fieldErr(field, value, "must name at least one %s", what))
			return
		}
		have, _ := parseCPUSet(allowed)
		if missing := set.subsetOf(have); len(missing) > 0 {
			add(fieldErr(field, value, "%s %v not available to the corral partition (allowed: %q)", what, missing, allowed))
		}
	}
	checkSet("cpuset_cpus", r.CpusetCPUs, h.CPUs, "CPU")
	checkSet("numa_nodeset", r.CpusetMems, h.Mems, "memory node")
	numaErrors(l, h, r, checkSet, add)

	checkBytes := func(field string, p *int64) bool {
		if p == nil {
			return false
		}
		need(cMemory, field, *p)
		if *p != Unlimited && *p < page {
			add(fieldErr(field, *p, "must be -1 (unlimited) or at least %d bytes (one page)", page))
			return false
		}
		return true
	}
	hardOK := checkBytes("hard_limit", r.MemoryHardLimit)
	checkBytes("soft_limit", r.MemorySoftLimit)
	if checkBytes("swap_hard_limit", r.MemorySwapHardLimit) {
		swap := *r.MemorySwapHardLimit
		_, ver := l.at(cMemory)
		switch {
		case !h.SwapAccounting:
			add(fieldErr("swap_hard_limit", swap, "this host does not account swap (no memory.memsw.limit_in_bytes / memory.swap.max; boot with swapaccount=1)"))
		case swap == Unlimited:
		case r.MemoryHardLimit == nil && ver == 2:
			add(fieldErr("swap_hard_limit", swap, "on cgroup v2 memory.swap.max holds swap alone: set hard_limit too"))
		case r.MemoryHardLimit != nil && hardOK && *r.MemoryHardLimit == Unlimited:
			add(fieldErr("swap_hard_limit", swap, "must be -1 while hard_limit is unlimited (it counts memory plus swap)"))
		case r.MemoryHardLimit != nil && hardOK && swap < *r.MemoryHardLimit:
			add(fieldErr("swap_hard_limit", swap, "must be at least hard_limit (%d): it counts memory plus swap", *r.MemoryHardLimit))
		}
	}

	if r.BlkioWeight != nil {
		w := *r.BlkioWeight
		if need(cBlkio, "blkio_weight", w) != 0 {
			lo, hi := weightRange(h.BlkioWeightFile)
			switch {
			case hi == 0:
				add(fieldErr("blkio_weight", w, "this kernel has no proportional I/O weight (neither blkio.weight nor blkio.bfq.weight)"))
			case int(w) < lo || int(w) > hi:
				add(fieldErr("blkio_weight", w, "must be %d..%d for %s", lo, hi, h.BlkioWeightFile))
			}
		}
	}
	seen := map[string]bool{}
	for i, t := range r.BlkioThrottle {
		field := fmt.Sprintf("blkio_throttle[%d]", i)
		dev := fmt.Sprintf("%d:%d", t.Major, t.Minor)
		if i == 0 {
			need(cBlkio, "blkio_throttle", dev)
		}
		if seen[dev] {
			add(fieldErr(field, dev, "device listed twice"))
		}
		seen[dev] = true
		if !slices.Contains(h.BlockDevices, dev) {
			add(fieldErr(field, dev, "not a whole disk of this host (have %s)", strings.Join(h.BlockDevices, ", ")))
		}
	}
	if r.BlkioDevices != nil {
		validateBlkioDevices(h, r.BlkioDevices, add, need)
	}

	if r.Devices != nil {
		need(cDevices, "devices", len(r.Devices.Allow))
		for i, rule := range r.Devices.Allow {
			if why := rule.problem(); why != "" {
				add(fieldErr(fmt.Sprintf("devices.allow[%d]", i), rule, "%s", why))
			}
		}
	}
	if r.NetClassID != nil {
		need(cNetCls, "net_cls_classid", *r.NetClassID)
	}
	if r.PidsMax != nil {
		need(cPids, "pids_max", *r.PidsMax)
		if v := *r.PidsMax; v != Unlimited && v < 1 {
			add(fieldErr("pids_max", v, "must be -1 (unlimited) or at least 1"))
		}
	}
	if err := schedinfoErrors(l, r); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// weightRange is the range the kernel accepts in a weight file; hi is 0
// when there is no such file.
func weightRange(file string) (lo, hi int) {
	switch file {
	case "blkio.weight":
		return 10, 1000
	case "blkio.bfq.weight", "io.bfq.weight":
		return 1, 1000
	case "io.weight":
		return 1, 10000
	}
	return 0, 0
}

func missingReason(l *layout, c controller) string {
	v1 := false
	for _, h := range l.hs {
		v1 = v1 || h.Version == 1
	}
	switch {
	case c == cNetCls && !v1:
		return "cgroup v2 has no net_cls controller; shape traffic per interface instead, or leave net_cls_classid unset"
	case c == cNetCls:
		return "net_cls is not mounted on this host; mount it (mount -t cgroup -o net_cls none DIR) or leave net_cls_classid unset"
	case l.v2 >= 0 && c.v2Name() != "":
		return fmt.Sprintf("the %s controller is not mounted on cgroup v1 and cgroup v2 does not offer it to the partition (it may be bound to an unmounted v1 hierarchy)", c.v1Name())
	}
	return fmt.Sprintf("the %s controller is not mounted on this host", c.v1Name())
}
