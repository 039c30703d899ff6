package driver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Accel is QEMU's accelerator setting.
type Accel string

const (
	// AccelAuto uses KVM when [ProbeKVM] proves it can run guests, TCG
	// otherwise.
	AccelAuto Accel = "auto"
	// AccelKVM uses KVM without probing: the operator vouches for it.
	AccelKVM Accel = "kvm"
	// AccelTCG emulates the CPU in software: slow, but works anywhere.
	AccelTCG Accel = "tcg"
)

// ParseAccel parses "kvm", "tcg" or "auto".
func ParseAccel(s string) (Accel, error) {
	switch a := Accel(s); a {
	case AccelAuto, AccelKVM, AccelTCG:
		return a, nil
	}
	return "", fmt.Errorf("corral: accelerator %q: use kvm, tcg or auto", s)
}

// ProbeKVM proves that dev (normally /dev/kvm) can run guest code at a
// usable speed, and says what failed otherwise (wrapping [ErrKVMUnusable]).
// That /dev/kvm exists and opens proves nothing: under nested
// virtualisation without hardware support a vCPU may run a HLT fine and
// still need ~25 µs per guest page fault, so a kernel that sets up its
// memory never gets anywhere and QEMU looks hung.
//
// The probe builds a VM with 16 MiB of memory and one vCPU set straight
// into 64-bit long mode (page tables identity-mapping the memory with 2 MiB
// pages), whose code stores zeros over 8 MiB (2048 fresh pages, each a
// fault the host must serve) and then halts. KVM works when the vCPU exits
// with KVM_EXIT_HLT within timeout with the registers the code set; a
// healthy host takes a few milliseconds. A vCPU still running at the
// deadline is interrupted with a signal to its thread.
func ProbeKVM(dev string, timeout time.Duration) error {
	res := make(chan error, 1)
	tid := make(chan int, 1)
	deadline := time.Now().Add(timeout)
	go func() {
		// Never unlocked: the thread that ran a vCPU exits with the
		// goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		res <- runKVMProbe(dev, deadline, func() { tid <- unix.Gettid() })
	}()
	t := time.NewTimer(timeout + 50*time.Millisecond)
	defer t.Stop()
	select {
	case err := <-res:
		return err
	case <-t.C:
	}
	// KVM_RUN returns EINTR once a signal is pending for its thread; the
	// runtime ignores a stray SIGURG (it uses it for preemption).
	select {
	case id := <-tid:
		for range 100 {
			_ = unix.Tgkill(unix.Getpid(), id, unix.SIGURG)
			select {
			case err := <-res:
				return err
			case <-time.After(10 * time.Millisecond):
			}
		}
	default:
	}
	return fmt.Errorf("%w: the probe did not return within %v", ErrKVMUnusable, timeout)
}

// KVM ioctls (linux/kvm.h, x86_64) and sizes of the structures they take.
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84
	kvmExitHLT             = 5
	sregsSize              = 312
)

// Guest-physical layout of the probe VM.
const (
	probeMem   = 16 << 20
	probeCode  = 0x1000
	probePML4  = 0x2000
	probePDPT  = 0x3000
	probePD    = 0x4000
	probeStart = 2 << 20 // first byte the code zeroes
	probeBytes = 8 << 20
)

// probeCode64: mov rdi, probeStart; mov rcx, probeBytes/8; xor eax, eax;
// rep stosq; mov eax, 0x1234; hlt.
var probeProgram = []byte{
	0x48, 0xc7, 0xc7, 0x00, 0x00, 0x20, 0x00,
	0x48, 0xc7, 0xc1, 0x00, 0x00, 0x10, 0x00,
	0x31, 0xc0,
	0xf3, 0x48, 0xab,
	0xb8, 0x34, 0x12, 0x00, 0x00,
	0xf4,
}

func kvmIoctl(fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if e == unix.EINTR && req != kvmRun {
			continue
		}
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

func runKVMProbe(dev string, deadline time.Time, ready func()) (err error) {
	fail := func(step string, e error) error { return fmt.Errorf("%w: %s: %s: %w", ErrKVMUnusable, dev, step, e) }
	kvm, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open", err)
	}
	defer unix.Close(kvm)
	if v, err := kvmIoctl(kvm, kvmGetAPIVersion, 0); err != nil || v != 12 {
		return fail("KVM_GET_API_VERSION", errors.Join(err, fmt.Errorf("version %d, want 12", v)))
	}
	vmfd, err := kvmIoctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return fail("KVM_CREATE_VM", err)
	}
	vm := int(vmfd)
	defer unix.Close(vm)
	mem, err := unix.Mmap(-1, 0, probeMem, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return fail("mmap guest memory", err)
	}
	defer unix.Munmap(mem)
	copy(mem[probeCode:], probeProgram)
	le := binary.LittleEndian
	le.PutUint64(mem[probePML4:], probePDPT|7)
	le.PutUint64(mem[probePDPT:], probePD|7)
	for i := range probeMem >> 21 {
		le.PutUint64(mem[probePD+8*i:], uint64(i)<<21|0x87) // present, writable, user, 2 MiB page
	}
	region := struct {
		slot, flags          uint32
		gpa, size, userspace uint64
	}{0, 0, 0, probeMem, uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := kvmIoctl(vm, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		return fail("KVM_SET_USER_MEMORY_REGION", err)
	}
	runSize, err := kvmIoctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fail("KVM_GET_VCPU_MMAP_SIZE", err)
	}
	vcpufd, err := kvmIoctl(vm, kvmCreateVCPU, 0)
	if err != nil {
		return fail("KVM_CREATE_VCPU", err)
	}
	vcpu := int(vcpufd)
	defer unix.Close(vcpu)
	run, err := unix.Mmap(vcpu, 0, int(runSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap kvm_run", err)
	}
	defer unix.Munmap(run)

	var sregs [sregsSize]byte
	if _, err := kvmIoctl(vcpu, kvmGetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fail("KVM_GET_SREGS", err)
	}
	longModeSregs(&sregs)
	if _, err := kvmIoctl(vcpu, kvmSetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fail("KVM_SET_SREGS", err)
	}
	var regs [18]uint64 // rax..r15, rip, rflags
	regs[16], regs[17] = probeCode, 2
	if _, err := kvmIoctl(vcpu, kvmSetRegs, uintptr(unsafe.Pointer(&regs[0]))); err != nil {
		return fail("KVM_SET_REGS", err)
	}
	ready()
	for {
		_, err := kvmIoctl(vcpu, kvmRun, 0)
		if err == unix.EINTR && time.Now().Before(deadline) {
			continue
		}
		if err == unix.EINTR {
			return fmt.Errorf("%w: %s: the vCPU did not finish zeroing %d MiB of guest memory before the deadline (guest page faults too slow, e.g. nested virtualisation without hardware support)", ErrKVMUnusable, dev, probeBytes>>20)
		}
		if err != nil {
			return fail("KVM_RUN", err)
		}
		break
	}
	if reason := le.Uint32(run[8:]); reason != kvmExitHLT {
		return fail("KVM_RUN", fmt.Errorf("exit reason %d, want HLT (%d)", reason, kvmExitHLT))
	}
	if _, err := kvmIoctl(vcpu, kvmGetRegs, uintptr(unsafe.Pointer(&regs[0]))); err != nil {
		return fail("KVM_GET_REGS", err)
	}
	if regs[0] != 0x1234 || regs[16] != probeCode+uint64(len(probeProgram)) {
		return fail("KVM_RUN", fmt.Errorf("rax=%#x rip=%#x after HLT, want 0x1234 and %#x", regs[0], regs[16], probeCode+len(probeProgram)))
	}
	if time.Now().After(deadline) {
		return fmt.Errorf("%w: %s: the probe guest finished only after the deadline", ErrKVMUnusable, dev)
	}
	return nil
}

// longModeSregs puts the vCPU in 64-bit mode with paging through the probe's
// page tables: flat code (selector 8) and data (16) segments, CR0 PE|PG,
// CR4 PAE, EFER LME|LMA.
func longModeSregs(s *[sregsSize]byte) {
	le := binary.LittleEndian
	seg := func(off int, selector uint16, typ, db, long byte) {
		b := s[off : off+24]            // struct kvm_segment
		le.PutUint64(b[0:], 0)          // base
		le.PutUint32(b[8:], 0xffffffff) // limit
		le.PutUint16(b[12:], selector)
		// type, present, dpl, db, s, l, g, avl, unusable
		copy(b[14:], []byte{typ, 1, 0, db, 1, long, 1, 0, 0})
	}
	seg(0, 8, 11, 0, 1) // cs: execute/read, accessed, 64-bit
	for _, off := range []int{24, 48, 72, 96, 120} {
		seg(off, 16, 3, 1, 0) // ds, es, fs, gs, ss: read/write, accessed
	}
	le.PutUint64(s[224:], 0x80050033) // cr0: PE MP ET NE WP AM PG
	le.PutUint64(s[240:], probePML4)  // cr3
	le.PutUint64(s[248:], 1<<5)       // cr4: PAE
	le.PutUint64(s[264:], 0x500)      // efer: LME LMA
}
