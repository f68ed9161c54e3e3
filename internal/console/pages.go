package console

import "net/http"

// pageRoutes registers the pages.
func (s *Server) pageRoutes(mux *http.ServeMux) error {
	return nil
}
