package api

import (
	"time"

	"github.com/corral-dev/corral/events"
)

// RestartRequest is a create's restart and reschedule policy, as `corral
// guest create --restart ...` gives it. Durations are Go durations ("5m",
// "1s"); a field left out takes its default (events.DefaultRestart...),
// and reschedule attempts default to 1 per hour for on-failure and always.
// Mode "no" (or "") allows no other field.
type RestartRequest struct {
	Mode               string  `json:"mode"`
	Attempts           *int    `json:"attempts,omitempty"`
	Interval           string  `json:"interval,omitempty"`
	Delay              string  `json:"delay,omitempty"`
	Backoff            float64 `json:"backoff,omitempty"`
	RescheduleAttempts *int    `json:"reschedule_attempts,omitempty"`
	RescheduleInterval string  `json:"reschedule_interval,omitempty"`
	// LimitHits restarts the guest when its memory limit was hit at least
	// that often within one usage interval; 0 never.
	LimitHits uint64 `json:"limit_hits,omitempty"`
}

// RestartStatus is what the cluster knows of a guest's restarts and
// reschedules.
type RestartStatus struct {
	// Run is the current generation's run: 0 for the first, n after n
	// restarts in place. Total counts restarts over the guest's life.
	Run   int `json:"run,omitempty"`
	Total int `json:"total,omitempty"`
	// Last is the last restart; Exhausted the last time restarts ran out
	// on a node (ExhaustedOn).
	Last        *events.GuestRestarting        `json:"last,omitempty"`
	Exhausted   *events.GuestRestartsExhausted `json:"exhausted,omitempty"`
	ExhaustedOn string                         `json:"exhausted_on,omitempty"`
	// Reschedules are the times the guest was rescheduled, for the
	// policy's sliding interval.
	Reschedules []time.Time `json:"reschedules,omitempty"`
	// Avoid is the node the guest's next placement avoids: its restarts
	// ran out there. Rescheduled says why it waits to be placed anew,
	// until it is; Stuck why it was not rescheduled, until it is started
	// again.
	Avoid       string `json:"avoid,omitempty"`
	Rescheduled string `json:"rescheduled,omitempty"`
	Stuck       string `json:"stuck,omitempty"`
}
