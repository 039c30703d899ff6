package events

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseDisk(t *testing.T) {
	for spec, want := range map[string]GuestDisk{
		"/srv/base.raw": {Image: "/srv/base.raw"},
		"/srv/b.qcow2,format=qcow2,cache=none,size=2G": {Image: "/srv/b.qcow2", Format: "qcow2", Cache: "none", SizeBytes: 2 << 30},
	} {
		got, err := ParseDisk(spec)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseDisk(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
	}
	for _, spec := range []string{"", "base.raw", "/a,format=vmdk", "/a,cache=fast", "/a,size=0", "/a,size=-1", "/a,bus=ide", "/a,raw", "/a\n"} {
		if _, err := ParseDisk(spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDisk(%q) = %v, want ErrInvalid", spec, err)
		}
	}
	g := &GuestDefined{Name: "c", Driver: DriverLXC, MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Rootfs: "/r", Disks: []GuestDisk{{Image: "/a"}}}
	if err := g.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("an lxc guest with a disk validated: %v", err)
	}
}
