package coordinator

import (
	"net/http"
	"strings"
	"time"

	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// GuestView is a guest as the API shows it: its record and, while it waits
// for a placement, why no node takes it, one line per node.
type GuestView struct {
	Guest
	Unplaced []string `json:"unplaced,omitempty"`
}

// PlacementPreview is what a dry run answers: where the guest would go, or
// why it would stay pending.
type PlacementPreview struct {
	Node     string   `json:"node,omitempty"`
	CPUs     string   `json:"cpus,omitempty"`
	Score    float64  `json:"score,omitempty"`
	Ranked   int      `json:"ranked,omitempty"`
	Unplaced []string `json:"unplaced,omitempty"`
}

// NodeDetail is a node with what it holds.
type NodeDetail struct {
	NodeView
	GuestList []*Guest `json:"guest_list"`
}

func failureLines(f scheduler.Failure) []string {
	return strings.Split(f.String(), "\n")
}

// explain runs the scheduler for one guest against the current state, as if
// it were the only one pending.
func explain(st *State, g *Guest) (PlacementPreview, error) {
	plan, err := st.Plan([]*Guest{g}, map[string]bool{g.Name: true}, time.Time{})
	if err != nil {
		return PlacementPreview{}, err
	}
	if len(plan.Placements) == 1 {
		p := plan.Placements[0]
		return PlacementPreview{Node: p.Node, CPUs: p.CPUs.String(), Score: p.Score, Ranked: p.Ranked}, nil
	}
	if len(plan.Failures) == 1 {
		return PlacementPreview{Unplaced: failureLines(plan.Failures[0])}, nil
	}
	return PlacementPreview{}, nil
}

func (s *Server) schedRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/nodes/{id}/eligibility", func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (Command, error) {
			c := SetEligibility{ID: r.PathValue("id")}
			err := events.DecodeStrict(body, &c)
			c.ID = r.PathValue("id")
			return &c, err
		})
	})
	mux.HandleFunc("POST /v1/nodes/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (Command, error) {
			c := SetNodeStatus{ID: r.PathValue("id")}
			err := events.DecodeStrict(body, &c)
			c.ID = r.PathValue("id")
			return &c, err
		})
	})
	mux.HandleFunc("POST /v1/operator/scheduler", func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (Command, error) {
			var c SetSchedulerConfig
			return &c, events.DecodeStrict(body, &c.SchedulerConfig)
		})
	})
	mux.HandleFunc("GET /v1/operator/scheduler", func(w http.ResponseWriter, r *http.Request) {
		var cfg scheduler.Config
		s.fsm.read(func(st *State) { cfg = st.SchedulerConfig() })
		writeJSON(w, http.StatusOK, events.SchedulerConfig{Algorithm: string(cfg.Algorithm), CPUOvercommit: cfg.CPUOvercommit, MemoryOvercommit: cfg.MemoryOvercommit})
	})
	mux.HandleFunc("GET /v1/nodes/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := events.ValidateID("node id", id); err != nil {
			writeError(w, err)
			return
		}
		var out *NodeDetail
		s.fsm.read(func(st *State) {
			n, ok := st.Nodes[id]
			if !ok {
				return
			}
			out = &NodeDetail{NodeView: st.nodeView(n), GuestList: []*Guest{}}
			for _, name := range st.GuestsOn(id) {
				g := *st.Guests[name]
				out.GuestList = append(out.GuestList, &g)
			}
		})
		if out == nil {
			writeError(w, notFound("node", id))
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// dryRun validates a create and answers where the guest would go, writing
// nothing.
func (s *Server) dryRun(w http.ResponseWriter, c *CreateGuest) {
	d, err := c.Definition()
	if err != nil {
		writeError(w, err)
		return
	}
	var prev PlacementPreview
	s.fsm.read(func(st *State) {
		if _, ok := st.Guests[d.Name]; ok {
			err = existsErr(d.Name)
			return
		}
		prev, err = explain(st, &Guest{GuestDefined: *d})
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, prev)
}
