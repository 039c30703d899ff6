package coordinator

import (
	"net/http"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

func (s *Server) schedRoutes(mux *http.ServeMux) {
	s.handle(mux, "POST /v1/nodes/{id}/eligibility", token(acl.NodeWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			c := cluster.SetEligibility{SetEligibility: api.SetEligibility{ID: r.PathValue("id")}}
			err := events.DecodeStrict(body, &c)
			c.ID = r.PathValue("id")
			return &c, err
		})
	})
	s.handle(mux, "POST /v1/nodes/{id}/status", token(acl.NodeWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			c := cluster.SetNodeStatus{SetNodeStatus: api.SetNodeStatus{ID: r.PathValue("id")}}
			err := events.DecodeStrict(body, &c)
			c.ID = r.PathValue("id")
			return &c, err
		})
	})
	s.handle(mux, "POST /v1/operator/scheduler", token(acl.SchedulerWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var c cluster.SetSchedulerConfig
			return &c, events.DecodeStrict(body, &c.SchedulerConfig)
		})
	})
	s.handle(mux, "GET /v1/operator/scheduler", token(acl.SchedulerRead), func(w http.ResponseWriter, r *http.Request) {
		if !s.readBarrier(w, r) {
			return
		}
		var (
			cfg     scheduler.Config
			balloon bool
		)
		s.fsm.read(func(st *cluster.State) { cfg, balloon = st.SchedulerConfig(), st.Scheduler.BalloonMemory })
		writeJSON(w, http.StatusOK, events.SchedulerConfig{Algorithm: string(cfg.Algorithm), CPUOvercommit: cfg.CPUOvercommit, MemoryOvercommit: cfg.MemoryOvercommit,
			BalloonMemory: balloon})
	})
	s.handle(mux, "GET /v1/nodes/{id}", token(acl.NodeRead), func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := events.ValidateID("node id", id); err != nil {
			writeError(w, err)
			return
		}
		if !s.readBarrier(w, r) {
			return
		}
		var out *api.NodeDetail
		s.fsm.read(func(st *cluster.State) {
			n, ok := st.Nodes[id]
			if !ok {
				return
			}
			out = &api.NodeDetail{NodeView: st.NodeView(n), GuestList: []*api.Guest{}}
			for _, name := range st.GuestsOn(id) {
				out.GuestList = append(out.GuestList, cluster.View(st.Guests[name]))
			}
		})
		if out == nil {
			writeError(w, api.NotFound("node", id))
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// dryRun validates a create and answers where the guest would go, writing
// nothing.
func (s *Server) dryRun(w http.ResponseWriter, c *cluster.CreateGuest) {
	d, err := c.Definition()
	if err != nil {
		writeError(w, err)
		return
	}
	var prev api.PlacementPreview
	s.fsm.read(func(st *cluster.State) {
		if _, ok := st.Guests[d.Name]; ok {
			err = api.GuestExists(d.Name)
			return
		}
		prev, err = cluster.Explain(st, &cluster.Guest{GuestDefined: *d})
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, prev)
}
