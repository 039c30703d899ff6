package cluster

import (
	"maps"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// tuneAtCreation decides the persistent tuning a guest is created with
// (api.CreateGuest.Tuning) as TuneGuest would decide it for the guest just
// defined: the same checks, one guest.tuned event per knob that differs
// from its default. It returns the events and the guest as they leave it,
// which is what a placement at creation must fit.
func tuneAtCreation(s *State, d *events.GuestDefined, set map[string]string, now time.Time, actor string) ([]events.Event, *Guest, error) {
	g := &Guest{GuestDefined: *d, Desired: DesiredStopped, Status: StatusPending}
	view := *s
	view.Guests = maps.Clone(s.Guests)
	view.Guests[d.Name] = g
	c := &TuneGuest{api.TuneGuest{Name: d.Name, Set: set, Persistent: true, Reason: "at creation"}}
	out, err := c.Decide(&view, now, actor)
	if err != nil {
		return nil, nil, err
	}
	return out, tunedCopy(g, out), nil
}
