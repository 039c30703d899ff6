package cgroupdriver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the launch half of numatune: a memory policy a guest's
// process gets before it executes anything of its own. set_mempolicy
// applies to the calling thread and survives execve, so the policy is set
// by this binary, re-executed as a small shim, on the thread that then
// execs the guest's program; every thread and child the guest makes
// inherits it (as numactl --preferred / --interleave do). It composes with
// the cgroup entry shim of enter.go: that one joins the groups and execs
// this one.

// MemPolicy is a memory policy a guest is launched with: Mode preferred or
// interleave, over the memory nodes in Nodes (a cpuset list). The zero
// value sets none.
type MemPolicy struct {
	Mode  string `json:"mode"`
	Nodes string `json:"nodes"`
}

// MemPolicyFor returns the launch policy r asks for on this host: none in
// strict and restrictive mode (cpuset.mems confines those), else the mode
// over r's nodeset or, without one, every node the partition may use.
func (d *Driver) MemPolicyFor(r Resources) MemPolicy {
	if numaBinds(r.NUMAMode) {
		return MemPolicy{}
	}
	nodes := r.CpusetMems
	if nodes == "" {
		nodes = d.host.Mems
	}
	if nodes == "" {
		nodes = "0"
	}
	return MemPolicy{Mode: r.NUMAMode, Nodes: nodes}
}

// memPolicyEnv marks a process started through [WithMemPolicy]; its value
// is a JSON memPolicyRequest.
const memPolicyEnv = "_CORRAL_MEMPOLICY_SHIM"

type memPolicyRequest struct {
	MemPolicy
	Path string `json:"path"` // the program to exec
}

// WithMemPolicy makes cmd, not yet started, set policy p before its
// program runs: cmd then starts this binary (/proc/self/exe), which must
// call [RunShimIfRequested] first thing in main. cmd may then be started
// with [Driver.Start] as usual; a policy the kernel refuses ends the
// process with status 127 and the reason on its stderr. The zero policy
// leaves cmd as it is.
func WithMemPolicy(cmd *exec.Cmd, p MemPolicy) error {
	if p == (MemPolicy{}) {
		return nil
	}
	if _, _, err := memPolicyArgs(p); err != nil {
		return err
	}
	if cmd.Process != nil {
		return errors.New("corral: WithMemPolicy: command already started")
	}
	enc, err := json.Marshal(memPolicyRequest{MemPolicy: p, Path: cmd.Path})
	if err != nil {
		return err
	}
	if len(cmd.Args) == 0 {
		cmd.Args = []string{cmd.Path}
	}
	cmd.Env = append(slices.Clip(cmd.Environ()), memPolicyEnv+"="+string(enc))
	cmd.Path = "/proc/self/exe"
	return nil
}

// memPolicyArgs turns p into set_mempolicy's mode and node mask.
func memPolicyArgs(p MemPolicy) (mode int, mask []uint64, err error) {
	switch p.Mode {
	case NUMAPreferred:
		mode = unix.MPOL_PREFERRED
	case NUMAInterleave:
		mode = unix.MPOL_INTERLEAVE
	default:
		return 0, nil, fmt.Errorf("%w: memory policy %q: a launch policy is preferred or interleave", ErrInvalidResources, p.Mode)
	}
	set, perr := parseCPUSet(p.Nodes)
	if perr != nil || len(set) == 0 {
		return 0, nil, fmt.Errorf("%w: memory policy %s: nodes %q is not a list like 0-1", ErrInvalidResources, p.Mode, p.Nodes)
	}
	for n := range set {
		for len(mask) <= n/64 {
			mask = append(mask, 0)
		}
		mask[n/64] |= 1 << (n % 64)
	}
	return mode, mask, nil
}

// runMemPolicyShimIfRequested sets the policy and execs the program when
// this process was started through WithMemPolicy; otherwise it returns.
func runMemPolicyShimIfRequested() {
	v, ok := syscall.Getenv(memPolicyEnv)
	if !ok {
		return
	}
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "corral memory policy shim: %v\n", err)
		os.Exit(shimExitCode)
	}
	var req memPolicyRequest
	if err := json.Unmarshal([]byte(v), &req); err != nil {
		fail(fmt.Errorf("bad %s: %w", memPolicyEnv, err))
	}
	mode, mask, err := memPolicyArgs(req.MemPolicy)
	if err != nil {
		fail(err)
	}
	// The policy is the thread's: the same thread must exec.
	runtime.LockOSThread()
	// maxnode counts one more than the mask's bits: the kernel drops one.
	if _, _, e := unix.RawSyscall(unix.SYS_SET_MEMPOLICY, uintptr(mode), uintptr(unsafe.Pointer(&mask[0])), uintptr(len(mask)*64+1)); e != 0 {
		fail(fmt.Errorf("set_mempolicy %s %s: %w", req.Mode, req.Nodes, e))
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return len(kv) > len(memPolicyEnv) && kv[:len(memPolicyEnv)+1] == memPolicyEnv+"="
	})
	err = syscall.Exec(req.Path, os.Args, env)
	fail(fmt.Errorf("exec %s: %w", req.Path, err))
}
