package events

import (
	"fmt"
	"slices"
	"strings"
)

// capabilityNames are the Linux capabilities, indexed by the kernel's
// numbers (linux/capability.h).
var capabilityNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// AllCapabilities is the word "ALL" in --cap-add and --cap-drop: every
// capability, as in Docker.
const AllCapabilities = "ALL"

// defaultContainerCapabilities is what a container keeps unless its
// definition adds or drops some: Docker's default set without CAP_MKNOD
// (a container's /dev is made for it, and its device ACL gives no mknod
// access anyway); it keeps none of what libvirt's LXC driver drops. Everything else, CAP_SYS_ADMIN, CAP_SYS_MODULE,
// CAP_SYS_TIME, CAP_SYS_BOOT, CAP_SYS_RAWIO, CAP_MAC_ADMIN,
// CAP_AUDIT_CONTROL, CAP_SYS_PTRACE and CAP_NET_ADMIN among them, is
// dropped from every set including the bounding set.
var defaultContainerCapabilities = [...]string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",
	"CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
}

// DefaultContainerCapabilities returns the capabilities a container keeps
// by default, sorted.
func DefaultContainerCapabilities() []string {
	return slices.Clone(defaultContainerCapabilities[:])
}

// CapabilityNumber returns the kernel's number of a canonical capability
// name, or -1.
func CapabilityNumber(name string) int {
	return slices.Index(capabilityNames[:], name)
}

// CanonicalCapability returns the canonical form (CAP_NET_ADMIN) of a
// capability name written as capsh (cap_net_admin) or Docker (NET_ADMIN,
// CAP_NET_ADMIN) writes it, or AllCapabilities.
func CanonicalCapability(field, name string) (string, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if n == AllCapabilities {
		return n, nil
	}
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	if CapabilityNumber(n) < 0 {
		return "", fieldErr(field, truncate(name), "use a capability name as capsh or Docker writes it (NET_ADMIN, cap_net_admin, CAP_NET_ADMIN) or ALL; see capabilities(7)")
	}
	return n, nil
}

// CanonicalCapabilities returns the canonical form of a --cap-add or
// --cap-drop list, sorted, each name once.
func CanonicalCapabilities(field string, list []string) ([]string, error) {
	if len(list) > len(capabilityNames)+1 {
		return nil, fieldErr(field, fmt.Sprint(len(list)), "list each capability at most once")
	}
	out := make([]string, 0, len(list))
	for _, s := range list {
		c, err := CanonicalCapability(field, s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ContainerCapabilities returns the capabilities a container keeps, by
// number: the default set, less drop (everything when it holds ALL), plus
// add (everything when it holds ALL). Names must be canonical.
func ContainerCapabilities(add, drop []string) []int {
	keep := map[string]bool{}
	if !slices.Contains(drop, AllCapabilities) {
		for _, c := range defaultContainerCapabilities {
			keep[c] = true
		}
	}
	for _, c := range drop {
		delete(keep, c)
	}
	for _, c := range add {
		if c == AllCapabilities {
			for _, n := range capabilityNames {
				keep[n] = true
			}
		}
		keep[c] = true
	}
	var nums []int
	for i, n := range capabilityNames {
		if keep[n] {
			nums = append(nums, i)
		}
	}
	return nums
}

// CapabilityName returns the canonical name of capability number n, or
// "cap_N" for a number this table does not know (a newer kernel's).
func CapabilityName(n int) string {
	if n >= 0 && n < len(capabilityNames) {
		return capabilityNames[n]
	}
	return fmt.Sprintf("cap_%d", n)
}

func validateCapabilities(field string, list []string) error {
	c, err := CanonicalCapabilities(field, list)
	if err != nil {
		return err
	}
	if !slices.Equal(c, list) {
		return fieldErr(field, strings.Join(list, ","), "give canonical capability names (CAP_NET_ADMIN), sorted, each once")
	}
	return nil
}

// validateIsolation checks the container isolation fields: only an lxc
// guest has them.
func (g *GuestDefined) validateIsolation() error {
	if g.Driver != DriverLXC && (len(g.CapAdd) > 0 || len(g.CapDrop) > 0) {
		return fieldErr("cap_add", g.Driver, "capabilities are set for lxc guests only; a "+g.Driver+" guest runs with the agent's")
	}
	if err := validateCapabilities("cap_add", g.CapAdd); err != nil {
		return err
	}
	if err := g.validateUserNS(); err != nil {
		return err
	}
	return validateCapabilities("cap_drop", g.CapDrop)
}
