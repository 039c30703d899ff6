package cgroupdriver

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// This file is the per-thread layer of a QEMU guest's CPU groups, as
// libvirt builds it: under the guest's group in every hierarchy carrying
// cpu, cpuacct or cpuset, one child group per vCPU (vcpu0, vcpu1, …) and
// one, "emulator", for every other QEMU thread. Once the threads are
// placed, the guest's own group holds none; vcpu_* is written to each vcpuN,
// emulator_* to emulator and global_* to the guest's group, which caps them
// all. Every other controller keeps the whole process in the guest's group.
//
// On cgroup v2 the children are threaded groups, as libvirt and systemd
// make them: the guest's group stays the domain that memory, io, pids and
// the device program account to (the kernel shows it as "domain
// threaded", and its cgroup.procs lists the process), the children take
// the threaded controllers cpu and cpuset, enabled in the guest's
// cgroup.subtree_control, and threads move through cgroup.threads. A
// threaded group's cgroup.procs cannot be read (EOPNOTSUPP): the process
// is listed by the guest's group only. Without the cpu controller the
// children still count each vCPU's time in cpu.stat, which v2 keeps in
// every group.

// EmulatorGroup is the child group of a QEMU guest that holds its threads
// other than the vCPUs.
const EmulatorGroup = "emulator"

// VCPUGroup is the name of the child group holding vCPU n's thread.
func VCPUGroup(n int) string { return "vcpu" + strconv.Itoa(n) }

// placeRounds bounds how often PlaceThreads sweeps the threads QEMU starts
// while they are being moved.
const placeRounds = 20

// periodField and quotaField map a schedinfo knob (vcpu_*, emulator_*,
// global_*) to its field of r.
func (r *Resources) periodField(knob string) **uint64 {
	switch knob {
	case "emulator_period":
		return &r.EmulatorPeriodUs
	case "global_period":
		return &r.GlobalPeriodUs
	}
	return &r.CPUPeriodUs
}

func (r *Resources) quotaField(knob string) **int64 {
	switch knob {
	case "emulator_quota":
		return &r.EmulatorQuotaUs
	case "global_quota":
		return &r.GlobalQuotaUs
	}
	return &r.CPUQuotaUs
}

// schedinfoErrors checks the emulator_* and global_* knobs as vcpu_* are
// checked: the cpu controller is there, the values are in range, and on
// cgroup v2 (one file, cpu.max) a period comes with a quota.
func schedinfoErrors(l *layout, r *Resources) error {
	var errs []error
	for _, k := range []string{"emulator", "global"} {
		period, quota := *r.periodField(k + "_period"), *r.quotaField(k + "_quota")
		if period == nil && quota == nil {
			continue
		}
		i, ver := l.at(cCPU)
		if i < 0 {
			var v any
			if quota != nil {
				v = *quota
			} else {
				v = *period
			}
			errs = append(errs, missingErr(k+"_quota", v, "%s", missingReason(l, cCPU)))
			continue
		}
		if period != nil {
			if v := *period; v < minPeriodUs || v > maxPeriodUs {
				errs = append(errs, fieldErr(k+"_period", v, "must be %d..%d microseconds", minPeriodUs, maxPeriodUs))
			}
			if ver == 2 && quota == nil {
				errs = append(errs, fieldErr(k+"_period", *period, "cgroup v2 keeps period and quota in one file (cpu.max): set %s_quota too (-1 for unlimited)", k))
			}
		}
		if quota != nil {
			if v := *quota; v != Unlimited && (v < minQuotaUs || v > maxQuotaUs) {
				errs = append(errs, fieldErr(k+"_quota", v, "must be -1 (unlimited) or %d..%d microseconds", minQuotaUs, int64(maxQuotaUs)))
			}
		}
	}
	return errors.Join(errs...)
}

// ErrThreadsUnsupported says this host has no hierarchy in which corral
// makes per-vCPU groups: the cpu controller is on neither cgroup v1 nor v2,
// and there is no cgroup2 to count vCPU time in. The guest keeps one group.
var ErrThreadsUnsupported = errors.New("corral: no per-vCPU groups on this host: the cpu controller is not mounted on cgroup v1 and there is no cgroup v2 hierarchy; the guest keeps one group")

// threadGroups reports whether [Driver.PlaceThreads] makes per-thread
// groups on this layout: where the cpu controller is (v1 or v2), or on v2
// without it, where cpu.stat still counts each vCPU's time.
func (l *layout) threadGroups() bool {
	return l.route[cCPU] >= 0 || (l.v2 >= 0 && l.route[cCPUAcct] == l.v2)
}

// threadHierarchies lists, once each, the hierarchies that carry cpu,
// cpuacct or cpuset: those in which a QEMU guest's threads are placed.

func (l *layout) threadHierarchies() []int {
	var out []int
	for _, c := range []controller{cCPU, cCPUAcct, cCPUSet} {
		if i := l.route[c]; i >= 0 && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	return out
}

// placedGroups returns the vCPU numbers whose groups exist under a QEMU
// guest's cpu group (or, without cpu, its first thread hierarchy's),
// sorted, and whether its emulator group exists. Both are empty before
// [Driver.PlaceThreads] and for other kinds.
func placedGroups(l *layout, g Guest) (vcpus []int, emulator bool) {
	hs := l.threadHierarchies()
	if g.Kind != KindQEMU || len(hs) == 0 || !l.threadGroups() {
		return nil, false
	}
	i := hs[0]
	if c := l.route[cCPU]; c >= 0 {
		i = c
	}
	subs, err := subdirs(l.guestDir(i, g))
	if err != nil {
		return nil, false
	}
	for _, s := range subs {
		if s == EmulatorGroup {
			emulator = true
			continue
		}
		if n, ok := vcpuNumber(s); ok {
			vcpus = append(vcpus, n)
		}
	}
	slices.Sort(vcpus)
	return vcpus, emulator
}

// vcpuNumber parses a vCPU group's name, vcpuN with N in canonical decimal.
func vcpuNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "vcpu")
	if !ok || s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return int(n), err == nil
}

// PlaceThreads builds a running QEMU guest's per-thread groups and moves
// its threads into them: vcpus maps each vCPU number to the thread that
// runs it (QMP query-cpus-fast), every other thread in the guest's groups
// goes to the emulator group. On cgroup v1 the children of a cpuset group
// get their parent's CPUs and memory nodes; on v2 they are threaded groups.
// Threads QEMU starts meanwhile are swept too, until the guest's own group
// holds none in every hierarchy concerned.
//
// Then [Driver.Apply] writes vcpu_* and emulator_* to the children. A
// vCPU thread that is not in the guest's groups is refused: PlaceThreads
// never moves a thread it was not given charge of. Placing again (an
// adopted guest) is harmless.
func (d *Driver) PlaceThreads(g Guest, vcpus map[int]int) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if g.Kind != KindQEMU {
		return fmt.Errorf("corral: place threads of %s: only qemu guests have per-vCPU groups", g)
	}
	if len(vcpus) == 0 {
		return fmt.Errorf("corral: place threads of %s: no vCPU threads given; ask QMP query-cpus-fast", g)
	}
	if !d.l.threadGroups() {
		return ErrThreadsUnsupported
	}
	nums := make([]int, 0, len(vcpus))
	owner := map[int]int{} // thread -> vCPU
	for n, tid := range vcpus {
		if n < 0 || n > 65535 || tid <= 0 {
			return fmt.Errorf("corral: place threads of %s: vCPU %d thread %d is not a vCPU number and thread id", g, n, tid)
		}
		if m, dup := owner[tid]; dup {
			return fmt.Errorf("corral: place threads of %s: vCPUs %d and %d both run on thread %d; start QEMU with one thread per vCPU (-accel tcg,thread=multi or kvm)", g, m, n, tid)
		}
		owner[tid] = n
		nums = append(nums, n)
	}
	slices.Sort(nums)
	children := make([]string, 0, len(nums)+1)
	for _, n := range nums {
		children = append(children, VCPUGroup(n))
	}
	children = append(children, EmulatorGroup)

	hs := d.l.threadHierarchies()
	if len(hs) == 0 {
		return nil // no CPU controller: nothing to place threads for
	}
	// Every vCPU thread is checked before the first group is made.
	for _, i := range hs {
		dir := d.l.guestDir(i, g)
		present, err := groupThreads(dir, threadsFile(d.l.hs[i].Version), true)
		if err != nil {
			return fmt.Errorf("corral: place threads of %s: %w", g, err)
		}
		for _, n := range nums {
			if tid := vcpus[n]; !present[tid] {
				return fmt.Errorf("corral: place threads of %s: thread %d of vCPU %d is not in %s; refusing to move it", g, tid, n, dir)
			}
		}
	}
	for _, i := range hs {
		if err := d.makeThreadGroups(i, g, children); err != nil {
			return fmt.Errorf("corral: place threads of %s: %w", g, err)
		}
	}
	for _, i := range hs {
		dir := d.l.guestDir(i, g)
		file := threadsFile(d.l.hs[i].Version)
		for round := 0; ; round++ {
			left, err := groupThreads(dir, file, false)
			if err != nil {
				return fmt.Errorf("corral: place threads of %s: %w", g, err)
			}
			if len(left) == 0 {
				break
			}
			if round == placeRounds {
				return fmt.Errorf("corral: place threads of %s: %s still holds %d threads after %d sweeps; QEMU keeps starting threads", g, dir, len(left), placeRounds)
			}
			for tid := range left {
				to := EmulatorGroup
				if n, ok := owner[tid]; ok {
					to = VCPUGroup(n)
				}
				err := writeFile(dir+"/"+to+"/"+file, strconv.Itoa(tid))
				if err != nil && !isErrno(err, unix.ESRCH) { // ESRCH: the thread ended
					return fmt.Errorf("corral: place threads of %s: move thread %d: %w", g, tid, err)
				}
			}
		}
	}
	return nil
}

// threadsFile is the file a thread id is written to, to move that thread.
func threadsFile(version int) string {
	if version == 2 {
		return "cgroup.threads"
	}
	return "tasks"
}

// makeThreadGroups creates the children of guest g's group in hierarchy i.
func (d *Driver) makeThreadGroups(i int, g Guest, children []string) error {
	dir := d.l.guestDir(i, g)
	v2 := d.l.hs[i].Version == 2
	cpuset := !v2 && d.l.route[cCPUSet] == i
	var cpus, mems string
	if cpuset {
		var err error
		if cpus, err = readFile(dir + "/cpuset.cpus"); err == nil {
			mems, err = readFile(dir + "/cpuset.mems")
		}
		if err != nil {
			return err
		}
	}
	for _, c := range children {
		sub := dir + "/" + c
		if err := mkdir(sub); err != nil {
			return err
		}
		switch {
		case cpuset:
			if err := writeFile(sub+"/cpuset.cpus", cpus); err != nil {
				return err
			}
			if err := writeFile(sub+"/cpuset.mems", mems); err != nil {
				return err
			}
		case v2:
			if t, _ := readFile(sub + "/cgroup.type"); t != "threaded" {
				if err := writeFile(sub+"/cgroup.type", "threaded"); err != nil {
					return fmt.Errorf("%w (cgroup v2 needs threaded groups for per-vCPU limits: Linux 4.15 or later)", err)
				}
			}
		}
	}
	if v2 {
		var enable []string
		for _, c := range []controller{cCPU, cCPUSet} {
			if d.l.route[c] == i && c.v2Name() != "" {
				enable = append(enable, "+"+c.v2Name())
			}
		}
		if len(enable) > 0 {
			if err := writeFile(dir+"/cgroup.subtree_control", strings.Join(enable, " ")); err != nil {
				return err
			}
		}
	}
	return nil
}

// groupThreads reads the thread ids in dir's file, and with deep those of
// its children too.
func groupThreads(dir, file string, deep bool) (map[int]bool, error) {
	out := map[int]bool{}
	dirs := []string{dir}
	if deep {
		subs, err := subdirs(dir)
		if err != nil {
			return nil, err
		}
		for _, s := range subs {
			dirs = append(dirs, dir+"/"+s)
		}
	}
	for _, p := range dirs {
		s, err := readFile(p + "/" + file)
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Fields(s) {
			if tid, err := strconv.Atoi(f); err == nil && tid > 0 {
				out[tid] = true
			}
		}
	}
	return out, nil
}

// guestProcs lists the processes in dir and the groups below it: once a
// QEMU guest's threads are placed, its own group in the cpu hierarchies
// of v1 holds none of them. On v2 the guest's group lists them all, and
// its threaded children refuse the read (EOPNOTSUPP): they add nothing.
func guestProcs(dir string) ([]int, error) {
	s, err := readFile(dir + "/cgroup.procs")
	if isErrno(err, unix.EOPNOTSUPP) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(s) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 && !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	subs, err := subdirs(dir)
	if err != nil {
		return nil, err
	}
	for _, sub := range subs {
		more, err := guestProcs(dir + "/" + sub)
		if err != nil {
			return nil, err
		}
		for _, pid := range more {
			if !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}
