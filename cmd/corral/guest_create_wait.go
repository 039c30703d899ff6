package main

import (
	"context"
	"fmt"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// defaultWaitTimeout is how long `guest create --wait` waits for the
// guest to start.
const defaultWaitTimeout = time.Minute

// waitStarted follows the event stream after index since (the create's
// own events) until guest name reports guest.started, and returns that
// event; a guest.exited first (it could not start, or ended at once) is
// an error saying why. The stream pushes each event as it commits: there
// is no polling.
func waitStarted(ctx context.Context, c *api.Client, name string, since uint64, timeout time.Duration) (events.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var got *events.Event
	q := api.EventQuery{Since: since, Follow: true, Guest: name,
		Types: []string{events.TypeGuestStarted.String(), events.TypeGuestExited.String()}}
	err := c.Events(ctx, q, func(e events.Event) error {
		got = &e
		cancel()
		return nil
	})
	switch {
	case got != nil && got.Type == events.TypeGuestStarted:
		return *got, nil
	case got != nil:
		why := "it exited"
		if x, ok := got.Payload.(*events.GuestExited); ok {
			why = formatExit(x)
		}
		return *got, fmt.Errorf("guest %s did not start: %s (corral guest logs %s shows its output)", name, why, name)
	case err != nil:
		return events.Event{}, fmt.Errorf("waiting for guest %s to start: %w", name, err)
	}
	return events.Event{}, fmt.Errorf("guest %s not started within %v; it may still start (corral guest show %s), or raise --wait-timeout", name, timeout, name)
}
