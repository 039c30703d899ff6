package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/corral-dev/corral/events"
)

// FuzzCreateGuest feeds arbitrary request bodies through the API's decoding
// and the command's validation. It must never panic, and whatever it accepts
// must apply to the state (with the placement at creation, when a node
// takes the guest) and name a guest whose ID is path-safe.
func FuzzCreateGuest(f *testing.F) {
	f.Add([]byte(`{"name":"web","driver":"process","memory":"64MiB","vcpus":1,"command":["/bin/true"]}`))
	f.Add([]byte(`{"name":"..","driver":"lxc","memory":"1G","rootfs":"/x"}`))
	f.Add([]byte(`{"name":"q","driver":"qemu","memory":"1T","kernel":"/k","labels":{"a":"b"}}`))
	f.Add([]byte(`{"name":"a","driver":"process","memory":"-1","cpu_shares":99999999}`))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		var c CreateGuest
		if err := events.DecodeStrict(body, &c); err != nil {
			return
		}
		// Once with no node, once with one that may take the guest at
		// creation, so the placement Decide adds is checked too.
		empty := NewState()
		withNode := NewState()
		if _, err := withNode.Apply(subject(events.New(now, "fuzz", &events.NodeRegistered{ID: "n1", CPUs: 8, MemoryBytes: 16 << 30,
			Drivers: map[string]string{events.DriverProcess: "1", events.DriverLXC: "1", events.DriverQEMU: "1"}}), "", "n1")); err != nil {
			t.Fatal(err)
		}
		for _, st := range []*State{empty, withNode} {
			evs, err := c.Decide(st, now, "fuzz")
			if err != nil {
				if !errors.Is(err, events.ErrInvalid) {
					t.Fatalf("refusal is not an invalid-argument error: %v", err)
				}
				return
			}
			for i, e := range evs {
				if e.Type == events.TypeGuestPlaced && (i != len(evs)-1 || e.Actor != PlacementActor || len(st.Nodes) == 0) {
					t.Fatalf("placement %d of %d by %q with %d nodes", i+1, len(evs), e.Actor, len(st.Nodes))
				}
				b, err := events.Marshal(e)
				if err != nil {
					t.Fatalf("accepted command yields an unencodable event: %v", err)
				}
				d, err := events.Unmarshal(b)
				if err != nil {
					t.Fatalf("accepted command yields an undecodable event: %v", err)
				}
				if _, err := st.Apply(d); err != nil {
					t.Fatalf("accepted command refused by the state machine: %v", err)
				}
			}
			if err := events.ValidateID("guest", c.Name); err != nil {
				t.Fatalf("accepted unsafe name %q", c.Name)
			}
		}
	})
}
