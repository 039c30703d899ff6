package events

import (
	"errors"
	"slices"
	"testing"
)

func TestCanonicalCapabilities(t *testing.T) {
	got, err := CanonicalCapabilities("cap_add", []string{"net_admin", "cap_sys_nice", "CAP_NET_ADMIN", " SYS_PTRACE ", "all"})
	if want := []string{"ALL", "CAP_NET_ADMIN", "CAP_SYS_NICE", "CAP_SYS_PTRACE"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"CAP_FLY", "", "cap_", "NET ADMIN", "41"} {
		if _, err := CanonicalCapabilities("cap_drop", []string{bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted: %v", bad, err)
		}
	}
	if CapabilityNumber("CAP_SYS_ADMIN") != 21 || CapabilityNumber("CAP_CHECKPOINT_RESTORE") != 40 || CapabilityName(12) != "CAP_NET_ADMIN" {
		t.Error("the capability table is not the kernel's numbering")
	}
}

func TestContainerCapabilities(t *testing.T) {
	def := ContainerCapabilities(nil, nil)
	for _, never := range []string{"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_TIME", "CAP_SYS_BOOT", "CAP_SYS_RAWIO",
		"CAP_MAC_ADMIN", "CAP_AUDIT_CONTROL", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_MKNOD", "CAP_DAC_READ_SEARCH", "CAP_BPF"} {
		if slices.Contains(def, CapabilityNumber(never)) {
			t.Errorf("the default set has %s", never)
		}
	}
	if len(def) != len(DefaultContainerCapabilities()) {
		t.Errorf("default set %v, want %v", def, DefaultContainerCapabilities())
	}
	if got := ContainerCapabilities([]string{"CAP_NET_ADMIN"}, []string{"ALL"}); !slices.Equal(got, []int{12}) {
		t.Errorf("drop ALL add NET_ADMIN: %v", got)
	}
	if got := ContainerCapabilities([]string{"ALL"}, []string{"CAP_CHOWN"}); len(got) != len(capabilityNames) {
		t.Errorf("add ALL keeps %d, want every one", len(got))
	}
	g := GuestDefined{Name: "g", Driver: "process", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Command: []string{"/bin/true"}, CapAdd: []string{"CAP_NET_ADMIN"}}
	if err := g.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("capabilities on a process guest accepted: %v", err)
	}
	g.Driver, g.Rootfs, g.CapAdd = "lxc", "/r", []string{"net_admin"}
	if err := g.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a non-canonical capability in an event accepted: %v", err)
	}
	g.CapAdd = []string{"CAP_NET_ADMIN"}
	if err := g.Validate(); err != nil {
		t.Errorf("a canonical definition refused: %v", err)
	}
}
