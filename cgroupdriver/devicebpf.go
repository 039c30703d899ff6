package cgroupdriver

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cgroup v2 has no devices files: access is decided by a BPF program of type
// BPF_PROG_TYPE_CGROUP_DEVICE attached to the group. The program below is
// assembled here rather than taken from containerd/cgroups v3.1.3
// (cgroup2.DeviceFilter and LoadAttachCgroupDeviceFilter) because that
// filter and loader were tried against this kernel (6.18) and are worse in
// the three ways this file cares about (see the package doc for the figures):
//
//   - Access: containerd's filter allows when the access asked for shares any
//     bit with the rule's (r3 & access != 0); the kernel asks for read|write
//     in one call for an O_RDWR open, so "c 1:3 r" lets /dev/null be opened
//     read-write. This program allows only a subset of the rule's access
//     (TestHostV2DeviceAccessIsSubset fails under containerd's check).
//   - Replacement: containerd's loader attaches with BPF_F_ALLOW_MULTI, which
//     adds a program beside the old one; the caller must detach the old one
//     by hand, two system calls with two programs in force between them, and
//     it cannot attach at all (EPERM) to a group that already holds a
//     program attached without flags, as every group corral has attached
//     to. Attaching without flags makes the kernel swap the group's program
//     in one step (TestHostV2DeviceProgramReplacedAtomically).
//   - Observation: cilium/ebpf's Instructions.Tag is the SHA-1 tag; this
//     kernel tags programs with SHA-256, so drift by tag needs progTags
//     anyway.
//
// Taking the filter would also add cilium/ebpf, runtime-spec and, through
// the cgroup2 package, go-systemd, godbus, logrus and protobuf to the module.

// bpfInsn is struct bpf_insn.
type bpfInsn struct {
	Code uint8
	Regs uint8 // dst in the low nibble, src in the high nibble
	Off  int16
	Imm  int32
}

const (
	opLdxW      = unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W
	opAnd64K    = unix.BPF_ALU64 | unix.BPF_AND | unix.BPF_K
	opRsh64K    = unix.BPF_ALU64 | unix.BPF_RSH | unix.BPF_K
	opMov64X    = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_X
	opMov64K    = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K
	opJne32K    = 0x06 | unix.BPF_JNE | unix.BPF_K // BPF_JMP32
	opExit      = unix.BPF_JMP | unix.BPF_EXIT
	bpfLicense  = "Apache"
	maxBPFProgs = 64
)

func insn(code uint8, dst, src uint8, off int16, imm int32) bpfInsn {
	return bpfInsn{Code: code, Regs: dst | src<<4, Off: off, Imm: imm}
}

// deviceProgram assembles an allow-list program: it returns 1 (allow) for
// the first rule that matches the access, 0 (deny) when none does.
func deviceProgram(rules []DeviceRule) []bpfInsn {
	// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
	// with access_type = access << 16 | type.
	prog := []bpfInsn{
		insn(opLdxW, 2, 1, 0, 0), // r2 = access_type
		insn(opAnd64K, 2, 0, 0, 0xffff),
		insn(opLdxW, 3, 1, 0, 0), // r3 = access_type >> 16
		insn(opRsh64K, 3, 0, 0, 16),
		insn(opLdxW, 4, 1, 4, 0), // r4 = major
		insn(opLdxW, 5, 1, 8, 0), // r5 = minor
	}
	for _, r := range rules {
		var block []bpfInsn
		switch r.Type {
		case 'b':
			block = append(block, insn(opJne32K, 2, 0, 0, unix.BPF_DEVCG_DEV_BLOCK))
		case 'c':
			block = append(block, insn(opJne32K, 2, 0, 0, unix.BPF_DEVCG_DEV_CHAR))
		}
		var allowed int32
		for _, c := range r.Access {
			switch c {
			case 'r':
				allowed |= unix.BPF_DEVCG_ACC_READ
			case 'w':
				allowed |= unix.BPF_DEVCG_ACC_WRITE
			case 'm':
				allowed |= unix.BPF_DEVCG_ACC_MKNOD
			}
		}
		if rest := ^allowed & 7; rest != 0 {
			// The access asked for must be a subset of the rule's.
			block = append(block,
				insn(opMov64X, 1, 3, 0, 0),
				insn(opAnd64K, 1, 0, 0, rest),
				insn(opJne32K, 1, 0, 0, 0))
		}
		if r.Major != AnyDevice {
			block = append(block, insn(opJne32K, 4, 0, 0, int32(uint32(r.Major))))
		}
		if r.Minor != AnyDevice {
			block = append(block, insn(opJne32K, 5, 0, 0, int32(uint32(r.Minor))))
		}
		block = append(block, insn(opMov64K, 0, 0, 0, 1), insn(opExit, 0, 0, 0, 0))
		for j := range block {
			if block[j].Code == opJne32K {
				block[j].Off = int16(len(block) - 1 - j) // to the next block
			}
		}
		prog = append(prog, block...)
		if len(block) == 2 {
			return prog // matches everything: later rules are unreachable
		}
	}
	return append(prog, insn(opMov64K, 0, 0, 0, 0), insn(opExit, 0, 0, 0, 0))
}

func parseRuleList(s string) ([]DeviceRule, error) {
	var rules []DeviceRule
	for _, f := range strings.Split(s, "; ") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		r, err := ParseDeviceRule(f)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

// attachDeviceProgram loads the program for the "; "-separated rules and
// attaches it to the group dir, replacing the one attached before. It is
// attached without BPF_F_ALLOW_OVERRIDE or BPF_F_ALLOW_MULTI, so no group
// below can widen the ACL.
func attachDeviceProgram(dir, ruleList string) error {
	rules, err := parseRuleList(ruleList)
	if err != nil {
		return err
	}
	prog := deviceProgram(rules)
	progFD, err := loadDeviceProgram(prog)
	if err != nil {
		return err
	}
	defer unix.Close(progFD)
	dirFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(dirFD)
	attr := struct {
		TargetFD, AttachBPFFD, AttachType, AttachFlags, ReplaceBPFFD uint32
	}{TargetFD: uint32(dirFD), AttachBPFFD: uint32(progFD), AttachType: unix.BPF_CGROUP_DEVICE}
	if _, err := bpf(unix.BPF_PROG_ATTACH, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return fmt.Errorf("BPF_PROG_ATTACH device program to %s: %w", dir, err)
	}
	return nil
}

// Pointers in bpf_attr are __aligned_u64. They are declared unsafe.Pointer
// so that the garbage collector and stack copying see them; this requires a
// 64-bit platform, which the array length below asserts.
var _ [unsafe.Sizeof(unsafe.Pointer(nil)) - 8]byte

type bpfProgLoadAttr struct {
	ProgType           uint32
	InsnCnt            uint32
	Insns              unsafe.Pointer
	License            unsafe.Pointer
	LogLevel           uint32
	LogSize            uint32
	LogBuf             unsafe.Pointer
	KernVersion        uint32
	ProgFlags          uint32
	ProgName           [16]byte
	ProgIfindex        uint32
	ExpectedAttachType uint32
}

func loadDeviceProgram(prog []bpfInsn) (int, error) {
	license := []byte(bpfLicense + "\x00")
	attr := bpfProgLoadAttr{
		ProgType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		InsnCnt:  uint32(len(prog)),
		Insns:    unsafe.Pointer(&prog[0]),
		License:  unsafe.Pointer(&license[0]),
	}
	copy(attr.ProgName[:], "corral_devices")
	fd, err := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	// The verifier gives up with EAGAIN when a signal arrives while it
	// works, and Go's runtime sends them (preemption): try again, as
	// cilium/ebpf does.
	for try := 0; errors.Is(err, unix.EAGAIN) && try < 10; try++ {
		fd, err = bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	}
	if err != nil {
		// Load again with the verifier's log to say why.
		log := make([]byte, 64<<10)
		attr.LogLevel, attr.LogSize = 1, uint32(len(log))
		attr.LogBuf = unsafe.Pointer(&log[0])
		_, _ = bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
		runtime.KeepAlive(log)
		msg := strings.TrimRight(string(log[:max(0, indexNULByte(log))]), "\n")
		err = fmt.Errorf("BPF_PROG_LOAD device program: %w: %s", err, msg)
	}
	runtime.KeepAlive(prog)
	runtime.KeepAlive(license)
	return fd, err
}

func indexNULByte(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// progTags returns the tags the kernel may give prog: the first 8 bytes of
// the SHA-1 (older kernels) or SHA-256 (newer ones) of its instructions.
func progTags(prog []bpfInsn) [2]string {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(prog)*int(unsafe.Sizeof(prog[0])))
	s1 := sha1.Sum(b)
	s256 := sha256.Sum256(b)
	return [2]string{hex.EncodeToString(s1[:8]), hex.EncodeToString(s256[:8])}
}

// observeDeviceProgram lists the device programs attached to dir by tag and
// reports drift unless exactly the program for ruleList is attached.
func observeDeviceProgram(dir, ruleList string) (got string, drift bool, err error) {
	rules, err := parseRuleList(ruleList)
	if err != nil {
		return "", false, err
	}
	want := progTags(deviceProgram(rules))
	tags, err := attachedDeviceProgramTags(dir)
	if err != nil {
		return "", false, err
	}
	got = "tags=" + strings.Join(tags, ",")
	drift = len(tags) != 1 || (tags[0] != want[0] && tags[0] != want[1])
	return got, drift, nil
}

func attachedDeviceProgramTags(dir string) ([]string, error) {
	dirFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(dirFD)
	var ids [maxBPFProgs]uint32
	q := struct {
		TargetFD, AttachType, QueryFlags, AttachFlags uint32
		ProgIDs                                       unsafe.Pointer
		ProgCnt                                       uint32
		_                                             uint32
	}{TargetFD: uint32(dirFD), AttachType: unix.BPF_CGROUP_DEVICE, ProgIDs: unsafe.Pointer(&ids[0]), ProgCnt: maxBPFProgs}
	_, err = bpf(unix.BPF_PROG_QUERY, unsafe.Pointer(&q), unsafe.Sizeof(q))
	runtime.KeepAlive(&ids)
	if err != nil {
		return nil, fmt.Errorf("BPF_PROG_QUERY %s: %w", dir, err)
	}
	tags := make([]string, 0, q.ProgCnt)
	for _, id := range ids[:min(q.ProgCnt, maxBPFProgs)] {
		getFD := struct{ ProgID, NextID, OpenFlags uint32 }{ProgID: id}
		fd, err := bpf(unix.BPF_PROG_GET_FD_BY_ID, unsafe.Pointer(&getFD), unsafe.Sizeof(getFD))
		if err != nil {
			return nil, fmt.Errorf("BPF_PROG_GET_FD_BY_ID %d: %w", id, err)
		}
		var info struct {
			Type, ID uint32
			Tag      [8]byte
		}
		ia := struct {
			FD, InfoLen uint32
			Info        unsafe.Pointer
		}{FD: uint32(fd), InfoLen: uint32(unsafe.Sizeof(info)), Info: unsafe.Pointer(&info)}
		_, err = bpf(unix.BPF_OBJ_GET_INFO_BY_FD, unsafe.Pointer(&ia), unsafe.Sizeof(ia))
		runtime.KeepAlive(&info)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("BPF_OBJ_GET_INFO_BY_FD: %w", err)
		}
		tags = append(tags, hex.EncodeToString(info.Tag[:]))
	}
	return tags, nil
}
