package driver

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A container init keeps all of its threads on one CPU until it execs the
// command. The exec tears down the init's address space (a Go runtime's,
// megabytes of the binary's pages) and kills its other threads before it
// closes the error pipe that tells the driver the command runs; with the
// threads spread over CPUs that means waking each CPU the address space
// was live on, for the TLB flushes and for the threads to die. On a
// virtual machine, whose idle vCPUs are halted, that took 1–2 ms per
// start where an init held on one CPU execs in tens of microseconds
// (measured on a 2-vCPU host, issue 14). The thread that execs gets the
// affinity the init started with back first, so the command runs where a
// container's command runs without the pinning: wherever its groups'
// cpuset lets it.

// cpuPin is the affinity an init started with, to be given back.
type cpuPin struct {
	orig unix.CPUSet
	ok   bool // the init is pinned and orig holds its mask
}

// pinToOneCPU moves every thread of this process onto the CPU the caller
// runs on and returns what to restore before the exec. It is best effort:
// a host where it fails just pays the slower exec.
func pinToOneCPU() *cpuPin {
	p := &cpuPin{}
	if unix.SchedGetaffinity(0, &p.orig) != nil || p.orig.Count() < 2 {
		return p
	}
	var cpu uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0); e != 0 || !p.orig.IsSet(int(cpu)) {
		return p
	}
	var one unix.CPUSet
	one.Set(int(cpu))
	// A thread the runtime starts meanwhile inherits its creator's mask:
	// once a sweep finds every thread pinned already, none is left.
	pinned := map[int]bool{}
	for range 8 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			break
		}
		fresh := false
		for _, e := range ents {
			tid, err := nsTID(e.Name())
			if err != nil || pinned[tid] {
				continue
			}
			if unix.SchedSetaffinity(tid, &one) == nil {
				pinned[tid], fresh = true, true
				p.ok = true
			}
		}
		if !fresh {
			break
		}
	}
	return p
}

// restore gives the calling thread, the one about to exec, the affinity
// the init started with. When its groups' cpuset has none of those CPUs
// (the kernel refuses the mask), it gets every CPU, which the kernel cuts
// to the cpuset's, as it places an init that joins such a cpuset.
func (p *cpuPin) restore() error {
	if !p.ok {
		return nil
	}
	err := unix.SchedSetaffinity(0, &p.orig)
	if err == unix.EINVAL {
		var all unix.CPUSet
		for i := range len(all) * 64 {
			all.Set(i)
		}
		err = unix.SchedSetaffinity(0, &all)
	}
	return err
}

// nsTID is the id, in this process's pid namespace, of the thread that
// /proc/self/task lists as name. Until the container's /proc is mounted,
// /proc is the host's, which names threads by their host ids.
func nsTID(name string) (int, error) {
	b, err := os.ReadFile("/proc/self/task/" + name + "/status")
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.Atoi(f[len(f)-1])
			}
		}
	}
	return 0, fmt.Errorf("no NSpid in %s's status", name)
}
