package cluster

import (
	"errors"
	"slices"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestCreateGuestIDMap: --userns gives the default map, --idmap its own,
// and a bad range or a map for a process guest is refused as invalid.
func TestCreateGuestIDMap(t *testing.T) {
	base := api.CreateGuest{Name: "ct", Driver: events.DriverLXC, Memory: "64MiB", Rootfs: "/srv/rootfs"}
	c := CreateGuest{base}
	c.UserNS = true
	d, err := c.Definition()
	if err != nil || !slices.Equal(d.IDMap, events.DefaultIDMap) {
		t.Errorf("--userns: %v, %v; want the default map", d, err)
	}
	c.IDMap = []string{"0:200000:1000", "1000:300000:10"}
	d, err = c.Definition()
	if err != nil || !slices.Equal(d.IDMap, []events.IDRange{{Container: 0, Host: 200000, Count: 1000}, {Container: 1000, Host: 300000, Count: 10}}) {
		t.Errorf("--idmap: %v, %v", d, err)
	}
	if d, err := (&CreateGuest{base}).Definition(); err != nil || d.IDMap != nil {
		t.Errorf("no userns: %v, %v; want no map", d, err)
	}
	for _, bad := range []api.CreateGuest{
		func() api.CreateGuest { b := base; b.IDMap = []string{"0:0:65536"}; return b }(),
		func() api.CreateGuest { b := base; b.IDMap = []string{"0:100000"}; return b }(),
		func() api.CreateGuest { b := base; b.IDMap = []string{"5:100000:10"}; return b }(),
		{Name: "p", Driver: events.DriverProcess, Memory: "64MiB", Command: []string{"/bin/true"}, UserNS: true},
	} {
		if _, err := (&CreateGuest{bad}).Definition(); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
}
