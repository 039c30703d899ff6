package coordinator

import (
	"net/http"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// migrateRoutes serves guest migration: a request, and an abort before
// the switch.
func (s *Server) migrateRoutes(mux *http.ServeMux) {
	s.handle(mux, "POST /v1/guests/{name}/migrate", token(acl.GuestWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var c cluster.MigrateGuest
			err := decodeOptional(body, &c)
			if c.Name != "" && c.Name != r.PathValue("name") {
				return nil, &events.FieldError{Field: "name", Value: c.Name, Want: "must match the guest in the path"}
			}
			c.Name = r.PathValue("name")
			return &c, err
		})
	})
	s.handle(mux, "POST /v1/guests/{name}/migrate/abort", token(acl.GuestWrite), func(w http.ResponseWriter, r *http.Request) {
		s.write(w, r, func(body []byte) (cluster.Command, error) {
			var c cluster.AbortMigration
			err := decodeOptional(body, &c)
			if c.Name != "" && c.Name != r.PathValue("name") {
				return nil, &events.FieldError{Field: "name", Value: c.Name, Want: "must match the guest in the path"}
			}
			c.Name = r.PathValue("name")
			return &c, err
		})
	})
}
