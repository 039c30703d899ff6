package coordinator

import (
	"maps"
	"net/http"
	"slices"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// partitionRoutes serves the cluster's partitions. Creating, changing and
// deleting one takes cluster:write (a partition caps guests on every
// node); reading takes cluster:read.
func (s *Server) partitionRoutes(mux *http.ServeMux) {
	s.handle(mux, "POST /v1/partitions", token(acl.ClusterWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var c cluster.SetPartition
			err := events.DecodeStrict(body, &c)
			c.Create = true
			return &c, err
		})
	})
	s.handle(mux, "POST /v1/partitions/{name}", token(acl.ClusterWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var c cluster.SetPartition
			err := decodeOptional(body, &c)
			if c.Name != "" && c.Name != r.PathValue("name") {
				return nil, &events.FieldError{Field: "name", Value: c.Name, Want: "must match the partition in the path"}
			}
			c.Name, c.Create = r.PathValue("name"), false
			return &c, err
		})
	})
	s.handle(mux, "DELETE /v1/partitions/{name}", token(acl.ClusterWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var c cluster.DeletePartition
			err := decodeOptional(body, &c)
			c.Name = r.PathValue("name")
			return &c, err
		})
	})
	s.handle(mux, "GET /v1/partitions", token(acl.ClusterRead), func(w http.ResponseWriter, r *http.Request) {
		if !s.readBarrier(w, r) {
			return
		}
		out := []*api.PartitionView{}
		s.fsm.read(func(st *cluster.State) {
			for _, name := range slices.Sorted(maps.Keys(st.Partitions)) {
				out = append(out, st.PartitionView(st.Partitions[name]))
			}
		})
		writeJSON(w, http.StatusOK, out)
	})
	s.handle(mux, "GET /v1/partitions/{name}", token(acl.ClusterRead), func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := events.ValidateID("partition name", name); err != nil {
			writeError(w, err)
			return
		}
		if !s.readBarrier(w, r) {
			return
		}
		var out *api.PartitionView
		s.fsm.read(func(st *cluster.State) {
			if p, ok := st.Partitions[name]; ok {
				out = st.PartitionView(p)
			}
		})
		if out == nil {
			writeError(w, api.NotFound("partition", name))
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}
