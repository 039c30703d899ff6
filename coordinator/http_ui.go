package coordinator

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/corral-dev/corral/coordinator/acl"
)

// This file serves the web page at /ui/: plain HTML, CSS and JavaScript
// embedded in the binary (webui/), and the read-only routes the page
// calls under /ui/v1/. A browser cannot easily present a client
// certificate, so these routes take an ACL token alone, over TLS that
// verifies the server (needToken); they only read, and they are the same
// handlers as their /v1/ twins, so the consistency rules of reads and the
// event stream's limits hold for the page as for the CLI. The static
// files hold no data and are served to anyone.

//go:embed webui
var webFiles embed.FS

// uiRoutes registers the page and its read routes on mux.
func (s *Server) uiRoutes(mux *http.ServeMux) {
	files, err := fs.Sub(webFiles, "webui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	static := http.StripPrefix("/ui/", http.FileServerFS(files))
	s.handle(mux, "GET /ui/", access{kind: needNothing}, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Only the page's own files and its own server: no inline script,
		// no other origin, no framing.
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		static.ServeHTTP(w, r)
	})
	s.handle(mux, "GET /{$}", access{kind: needNothing}, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	page := func(cp acl.Capability) access { return access{kind: needToken, cap: cp} }
	s.handle(mux, "GET /ui/v1/cluster/members", page(acl.ClusterRead), s.members)
	s.handle(mux, "GET /ui/v1/nodes", page(acl.NodeRead), s.listNodes)
	s.handle(mux, "GET /ui/v1/guests", page(acl.GuestRead), s.listGuests)
	s.handle(mux, "GET /ui/v1/guests/{name}", page(acl.GuestRead), s.getGuest)
	s.handle(mux, "GET /ui/v1/guests/{name}/history", page(acl.GuestRead), s.guestHistory)
	s.handle(mux, "GET /ui/v1/events", page(acl.EventRead), s.streamEvents)
}
