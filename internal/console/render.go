package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/rulelock/rulelock/internal/review"
)

// The console's pages are html/template files, parsed once at New: each
// page is the layout (templates/layout.html) with its own "content" block.
// Everything a page shows from a request, an agent or the log reaches the
// template already escaped by internal/review (visible escapes for
// control, bidi, zero-width and Tag characters); html/template then
// escapes it for HTML.
//
//go:embed templates/*.html
var templateFS embed.FS

// The static files: the stylesheet, the vendored htmx (see web/ and
// TestVendoredHTMX) and the passkey script. They are part of the binary,
// served as they are; nothing is loaded from anywhere else.
//
//go:embed static
var staticFS embed.FS

// pages are the names of the page templates (templates/<name>.html).
var pages = []string{"queue", "request", "log", "entry", "error"}

// parseTemplates parses each page with the layout.
func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"join":  strings.Join,
		"roles": roleNames,
		"esc":   review.Escape,
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("console templates: %w", err)
		}
		out[p] = t
	}
	return out, nil
}

// view is what the layout reads; Page is the page's own data.
type view struct {
	Title  string
	Nav    string // the current section: "queue" or "log"
	CSRF   string
	Person Person
	Page   any
}

// render writes page with status, or a plain 500 when the template fails:
// the page is rendered to a buffer first so that a failure never sends
// half a page.
func (s *Server) render(w http.ResponseWriter, status int, page string, sess *Session, title, nav string, data any) {
	var b bytes.Buffer
	v := view{Title: title, Nav: nav, CSRF: sess.CSRF, Person: sess.Person, Page: data}
	if err := s.tmpl[page].Execute(&b, v); err != nil {
		slog.Error("console: render", slog.String("page", page), slog.Any("err", err))
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// renderError shows an error page to a signed-in person.
func (s *Server) renderError(w http.ResponseWriter, sess *Session, status int, msg string) {
	s.render(w, status, "error", sess, http.StatusText(status), "", struct {
		Status  int
		Message string
	}{status, msg})
}

// staticFile is one embedded static file with what its answer needs.
type staticFile struct {
	data  []byte
	ctype string
	etag  string
}

// staticTypes are the content types of the static files, by extension:
// a file of any other type is not served.
var staticTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".png": "image/png",
	".svg": "image/svg+xml",
}

// loadStatic reads the embedded static files into memory.
func loadStatic() (map[string]staticFile, error) {
	out := map[string]staticFile{}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := staticTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("console static file %s: no content type for %q", p, path.Ext(p))
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(p, "static/")] = staticFile{data: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
		return nil
	})
	return out, err
}

// serveStatic serves GET /console/static/{name}: a file built into the
// binary, with its content type and an ETag (its SHA-256), revalidated on
// each use (no-cache) so that an upgraded binary's file replaces the old.
func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := s.static[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}
