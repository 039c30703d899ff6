package cgroupdriver_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
)

func TestDevicesKnobText(t *testing.T) {
	for _, text := range []string{"none", "/dev/fuse:rw", "/dev/kvm:rwm,/dev/net/tun:rw,b 7:* r,c 10:200 rwm"} {
		var r cgroupdriver.Resources
		if err := r.SetKnob("devices", text); err != nil {
			t.Fatalf("SetKnob(%q): %v", text, err)
		}
		if r.Devices == nil || r.Devices.Allow != nil {
			t.Fatalf("SetKnob(%q): want an ACL with the minimal base, got %+v", text, r.Devices)
		}
		if got := r.Knobs()["devices"]; got != text {
			t.Errorf("Knobs()[devices] = %q, want %q", got, text)
		}
	}
	for _, bad := range []string{"", "a", "/etc/passwd:r", "/dev/fuse:rx", "/dev/fuse", "c 1:3", "/dev/fuse:rw,,"} {
		var r cgroupdriver.Resources
		err := r.SetKnob("devices", bad)
		var fe *cgroupdriver.FieldError
		if !errors.As(err, &fe) || fe.Field != "devices" || r.Devices != nil {
			t.Errorf("SetKnob(devices, %q) = %v, Devices %+v; want a devices FieldError and nothing set", bad, err, r.Devices)
		}
	}
}

func TestMinimalDeviceRules(t *testing.T) {
	kvm := cgroupdriver.DeviceRule{Type: 'c', Major: 10, Minor: 232, Access: "rw"}
	for _, tc := range []struct {
		kind cgroupdriver.Kind
		kvm  bool
		want bool
	}{
		{cgroupdriver.KindQEMU, true, true}, {cgroupdriver.KindQEMU, false, false},
		{cgroupdriver.KindLXC, true, false}, {cgroupdriver.KindProcess, true, false},
	} {
		acl := cgroupdriver.DeviceACL{}
		rules := acl.Rules(tc.kind, tc.kvm)
		if got := slices.Contains(rules, kvm); got != tc.want {
			t.Errorf("%s kvm=%v: /dev/kvm allowed %v, want %v", tc.kind, tc.kvm, got, tc.want)
		}
		if len(rules) < 8 || rules[0] != (cgroupdriver.DeviceRule{Type: 'c', Major: 1, Minor: 3, Access: "rw"}) {
			t.Errorf("%s: minimal set %v lacks /dev/null first", tc.kind, rules)
		}
	}
	own := cgroupdriver.DeviceACL{Allow: []cgroupdriver.DeviceRule{{Type: 'c', Major: 1, Minor: 3, Access: "r"}}}
	if got := own.Rules(cgroupdriver.KindQEMU, true); len(got) != 1 {
		t.Errorf("an ACL's own base list is replaced: %v", got)
	}
}

func TestResolveDeviceRule(t *testing.T) {
	got, err := cgroupdriver.ResolveDeviceRule(cgroupdriver.DeviceRule{Path: "/dev/null", Access: "rw"})
	if want := (cgroupdriver.DeviceRule{Type: 'c', Major: 1, Minor: 3, Access: "rw"}); err != nil || got != want {
		t.Errorf("/dev/null resolves to %v, %v; want %v", got, err, want)
	}
	num := cgroupdriver.DeviceRule{Type: 'b', Major: 7, Minor: 0, Access: "r"}
	if got, err := cgroupdriver.ResolveDeviceRule(num); err != nil || got != num {
		t.Errorf("a rule by number changed: %v, %v", got, err)
	}
	for _, p := range []string{"/dev/corral-no-such-device", "/dev/shm", "/tmp"} {
		if _, err := cgroupdriver.ResolveDeviceRule(cgroupdriver.DeviceRule{Path: p, Access: "r"}); !errors.Is(err, cgroupdriver.ErrInvalidResources) {
			t.Errorf("%s: want ErrInvalidResources, got %v", p, err)
		}
	}
	// The text form round-trips through JSON's MarshalText.
	r, err := cgroupdriver.ParseDeviceRule("/dev/fuse rw")
	if err != nil || r != (cgroupdriver.DeviceRule{Path: "/dev/fuse", Access: "rw"}) {
		t.Errorf("ParseDeviceRule(/dev/fuse rw) = %+v, %v", r, err)
	}
}
