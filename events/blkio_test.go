package events

import (
	"errors"
	"strings"
	"testing"
)

func TestBlkioKnobCanonical(t *testing.T) {
	ok := []struct{ knob, in, want string }{
		{"blkio_weight", "100", "100"},
		{"blkio_weight", " 1000 ", "1000"},
		{"device_weight", "/dev/sdb,300,/dev/sda,500", "/dev/sda,500,/dev/sdb,300"},
		{"device_weight", "/dev/sda,0", ""}, // 0: no weight of its own
		{"device_read_bytes_sec", "/dev/vda,1M", "/dev/vda,1048576"},
		{"device_write_bytes_sec", "/dev/loop3,4194304, /dev/disk/by-id/x , 10MB", "/dev/disk/by-id/x,10000000,/dev/loop3,4194304"},
		{"device_read_iops_sec", "/dev/sda,200", "/dev/sda,200"},
		{"device_write_iops_sec", "/dev/sda,0,/dev/sdb,7", "/dev/sdb,7"},
		{"device_write_iops_sec", "", ""},
	}
	for _, c := range ok {
		k, err := LookupKnob(c.knob)
		if err != nil {
			t.Fatalf("LookupKnob(%s): %v", c.knob, err)
		}
		got, err := k.Canonical(c.in)
		if err != nil {
			t.Errorf("%s %q: %v", c.knob, c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s %q = %q, want %q", c.knob, c.in, got, c.want)
		}
		// Canonical text is a fixed point, so Validate takes it.
		if again, _ := k.Canonical(got); again != got {
			t.Errorf("%s: canonical %q is not stable (%q)", c.knob, got, again)
		}
		if err := (&GuestTuned{Knob: c.knob, New: got, Live: true}).Validate(); err != nil {
			t.Errorf("GuestTuned %s=%q: %v", c.knob, got, err)
		}
	}
	bad := []struct{ knob, in, says string }{
		{"blkio_weight", "99", "100 to 1000"},
		{"blkio_weight", "1001", "100 to 1000"},
		{"device_weight", "/dev/sda", "PATH,VALUE pairs"},
		{"device_weight", "/dev/sda,50", "100 to 1000"},
		{"device_weight", "sda,500", "absolute device path"},
		{"device_weight", "/etc/passwd,500", "below /dev/"},
		{"device_weight", "/dev/../etc/x,500", "below /dev/"},
		{"device_weight", "/dev/,500", "below /dev/"},
		{"device_read_bytes_sec", "/dev/sda,1M,/dev/sda,2M", "twice"},
		{"device_read_bytes_sec", "/dev/sda,-1", "bytes per second"},
		{"device_read_bytes_sec", "/dev/sda,1X", "bytes per second"},
		{"device_read_iops_sec", "/dev/sda,1k", "whole number"},
		{"device_write_iops_sec", "/dev/s\tda,1", "control characters"},
	}
	for _, c := range bad {
		k, _ := LookupKnob(c.knob)
		_, err := k.Canonical(c.in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s %q: err = %v, want ErrInvalid saying %q", c.knob, c.in, err, c.says)
		}
	}
	if err := (&GuestTuned{Knob: "device_weight", New: "/dev/sdb,300,/dev/sda,500", Live: true}).Validate(); err == nil {
		t.Error("a tuning event with an unsorted device list was accepted")
	}
}

func TestMergeDeviceList(t *testing.T) {
	cases := []struct{ old, change, want string }{
		{"", "/dev/sda,1M", "/dev/sda,1048576"},
		{"/dev/sda,1048576", "/dev/sdb,2048", "/dev/sda,1048576,/dev/sdb,2048"},
		{"/dev/sda,1048576,/dev/sdb,2048", "/dev/sda,0", "/dev/sdb,2048"},
		{"/dev/sda,1048576", "/dev/sda,4096", "/dev/sda,4096"},
		{"/dev/sda,1048576", "/dev/sda,0", ""},
	}
	for _, c := range cases {
		got, err := MergeDeviceList("device_read_bytes_sec", c.old, c.change)
		if err != nil || got != c.want {
			t.Errorf("Merge(%q, %q) = %q, %v; want %q", c.old, c.change, got, err, c.want)
		}
	}
	if _, err := MergeDeviceList("cpu_shares", "", "/dev/sda,1"); err == nil {
		t.Error("merging a knob that is not a device list was accepted")
	}
}

func TestDeviceListChange(t *testing.T) {
	cases := []struct{ applied, want, out string }{
		{"", "/dev/sda,4096", "/dev/sda,4096"},
		{"/dev/sda,4096", "/dev/sdb,100", "/dev/sda,0,/dev/sdb,100"},
		{"/dev/sda,4096,/dev/sdb,1", "", "/dev/sda,0,/dev/sdb,0"},
		{"/dev/sda,4096", "/dev/sda,8192", "/dev/sda,8192"},
	}
	for _, c := range cases {
		if got := DeviceListChange("device_read_bytes_sec", c.applied, c.want); got != c.out {
			t.Errorf("DeviceListChange(%q, %q) = %q, want %q", c.applied, c.want, got, c.out)
		}
	}
}
