package events

import (
	"errors"
	"testing"
)

func TestCanonicalAllowedDevice(t *testing.T) {
	for in, want := range map[string]string{
		"/dev/kvm":           "/dev/kvm:rwm",
		" /dev/net/tun:wr ":  "/dev/net/tun:rw",
		"/dev/fuse:m":        "/dev/fuse:m",
		"c 10:200":           "c 10:200 rwm",
		"b 7:*  mr":          "b 7:* rm",
		"c *:* r":            "c *:* r",
		"c 4294967295:0 rwm": "c 4294967295:0 rwm",
	} {
		got, err := CanonicalAllowedDevice(in)
		if err != nil || got != want {
			t.Errorf("CanonicalAllowedDevice(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a", "/dev", "/dev/", "/etc/passwd", "/dev/../etc/passwd", "/dev/a,b", "/dev/x:", "/dev/x:rr",
		"/dev/x:rwx", "c 1:3 rwmr", "c 1:3 q", "x 1:3", "c 1", "c 1:+3", "c 1:4294967296", "c 1:3 rw extra"} {
		if got, err := CanonicalAllowedDevice(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("CanonicalAllowedDevice(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

func TestDevicesKnob(t *testing.T) {
	k, err := LookupKnob("devices")
	if err != nil {
		t.Fatal(err)
	}
	if k.Default != NoDevices {
		t.Errorf("default %q, want %q", k.Default, NoDevices)
	}
	for in, want := range map[string]string{
		"none":                        "none",
		"":                            "none",
		"c 10:200 rw, /dev/fuse":      "/dev/fuse:rwm,c 10:200 rw",
		"/dev/loop-control:r":         "/dev/loop-control:r",
		"b 7:0 r,b 7:1 r,/dev/kvm:wr": "/dev/kvm:rw,b 7:0 r,b 7:1 r",
	} {
		if got, err := k.Canonical(in); err != nil || got != want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/dev/fuse:r,/dev/fuse:w", "c 1:3 r,c 1:3 w", "/dev/fuse,", "all"} {
		if got, err := k.Canonical(in); err == nil {
			t.Errorf("Canonical(%q) = %q, want an error", in, got)
		}
	}
	tuned := GuestTuned{Knob: "devices", Old: "none", New: "/dev/fuse:rw", Live: true, Persistent: true}
	if err := tuned.Validate(); err != nil {
		t.Errorf("valid tuning refused: %v", err)
	}
	tuned.New = "c 10:229 wr"
	if err := tuned.Validate(); err == nil {
		t.Errorf("non-canonical tuning accepted")
	}
}

func TestMergeAllowedDevices(t *testing.T) {
	for _, tc := range []struct {
		old         string
		allow, deny []string
		want        string
	}{
		{"none", []string{"/dev/fuse:rw"}, nil, "/dev/fuse:rw"},
		{"/dev/fuse:rw", []string{"/dev/fuse:r"}, nil, "/dev/fuse:r"},
		{"/dev/fuse:rw,c 10:200 rwm", nil, []string{"c 10:200"}, "/dev/fuse:rw"},
		{"/dev/fuse:rw", []string{"/dev/kvm"}, []string{"/dev/fuse"}, "/dev/kvm:rwm"},
		{"/dev/fuse:rw", nil, []string{"/dev/fuse:r"}, "none"},
	} {
		got, err := MergeAllowedDevices(tc.old, tc.allow, tc.deny)
		if err != nil || got != tc.want {
			t.Errorf("Merge(%q, %v, %v) = %q, %v; want %q", tc.old, tc.allow, tc.deny, got, err, tc.want)
		}
	}
	if _, err := MergeAllowedDevices("/dev/fuse:rw", nil, []string{"/dev/null"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("denying a device that is not listed: want ErrInvalid, got %v", err)
	}
}

func TestGuestDefinedDevices(t *testing.T) {
	g := GuestDefined{Name: "web", Driver: DriverProcess, MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: DefaultCPUShares,
		Command: []string{"/bin/true"}, Devices: []string{"/dev/fuse:rw", "c 10:200 rwm"}}
	if err := g.Validate(); err != nil {
		t.Fatalf("canonical devices refused: %v", err)
	}
	for _, bad := range [][]string{{"c 10:200 rwm", "/dev/fuse:rw"}, {"/dev/fuse"}, {"/dev/fuse:rw", "/dev/fuse:rw"}, {"/tmp/x:r"}} {
		g.Devices = bad
		if err := g.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("devices %q: want ErrInvalid, got %v", bad, err)
		}
	}
}
