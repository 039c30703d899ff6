package cluster

import (
	"strings"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/scheduler"
)

func failureLines(f scheduler.Failure) []string {
	return strings.Split(f.String(), "\n")
}

// Explain runs the scheduler for one guest against the current state, as if
// it were the only one pending.
func Explain(st *State, g *Guest) (api.PlacementPreview, error) {
	plan, err := st.Plan([]*Guest{g}, map[string]bool{g.Name: true}, time.Time{})
	if err != nil {
		return api.PlacementPreview{}, err
	}
	if len(plan.Placements) == 1 {
		p := plan.Placements[0]
		return api.PlacementPreview{Node: p.Node, CPUs: p.CPUs.String(), Score: p.Score, Ranked: p.Ranked}, nil
	}
	if len(plan.Failures) == 1 {
		return api.PlacementPreview{Unplaced: failureLines(plan.Failures[0])}, nil
	}
	return api.PlacementPreview{}, nil
}
