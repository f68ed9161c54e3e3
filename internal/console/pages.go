package console

import (
	"net/http"
	"strings"

	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/review"
)

// pageRoutes registers the pages. Each needs a session: a signed-out
// browser is sent to /console/login, and a signed-in person who is neither
// an approver nor an auditor is refused (and the refusal logged).
//
//	GET  /console/                  the pending queue
//	GET  /console/requests/{id}     a request: every field, rules, claims, votes, its story
//	GET  /console/log               search the log; the log's status
//	GET  /console/log/{i}           entry i with its inclusion proof, checked here
//	GET  /console/static/{name}     the stylesheet and scripts (no session needed)
//
// Every page's header has the sign-out form, POST /console/logout with the
// session's CSRF token: auth.go serves that route with sign-in.
func (s *Server) pageRoutes(mux *http.ServeMux) error {
	var err error
	if s.tmpl, err = parseTemplates(); err != nil {
		return err
	}
	if s.static, err = loadStatic(); err != nil {
		return err
	}
	mux.HandleFunc("GET /console/static/{name}", s.serveStatic)
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	mux.HandleFunc("GET /console/{$}", s.page(s.queue))
	mux.HandleFunc("GET /console/requests/{id}", s.page(s.request))
	mux.HandleFunc("GET /console/log", s.page(s.logSearch))
	mux.HandleFunc("GET /console/log/{i}", s.page(s.entry))
	return nil
}

// page wraps a page handler with the session check.
func (s *Server) page(h func(http.ResponseWriter, *http.Request, *Session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.session(r)
		if !ok {
			toLogin(w, r)
			return
		}
		if !sess.Person.Approver && !sess.Person.Auditor {
			s.refuse(w, r, sess.Person.ID, http.StatusForbidden, "no_console_role", "this person is neither an approver nor an auditor")
			return
		}
		h(w, r, sess)
	}
}

// toLogin sends a signed-out browser to the sign-in page: a 303, or, for
// htmx's background requests (which would swap the sign-in page into a
// part of the page), an HX-Redirect that reloads the whole page there.
func toLogin(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("HX-Request") == "true" {
		w.Header().Set("HX-Redirect", "/console/login")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// A queueRow is one pending request in the queue.
type queueRow struct {
	ID     string // the raw id, for the link (gateway ids are plain: approval.ValidID)
	Review *review.Review
	Type   string // the action's type field, escaped and quoted, or ""
	Amount string // the action's amount field exactly as logged, or ""
	To     string // the action's to field (the payee), escaped and quoted, or ""
}

// queue serves the pending queue: approvers and auditors see the same
// list; only the request page offers votes, and only to approvers.
func (s *Server) queue(w http.ResponseWriter, r *http.Request, sess *Session) {
	now := s.cfg.Now()
	var rows []queueRow
	for _, p := range s.cfg.Gateway.Pending() {
		v := review.New(s.reviewRequest(p), now)
		row := queueRow{ID: p.Request.ID, Review: v}
		for _, f := range v.Fields {
			switch f.Path {
			case "type":
				row.Type = f.Value
			case "amount":
				row.Amount = f.Value
			case "to":
				row.To = f.Value
			}
		}
		rows = append(rows, row)
	}
	s.render(w, http.StatusOK, "queue", sess, "Pending approvals", "queue", struct{ Rows []queueRow }{rows})
}

// reviewRequest is the review of a pending request: how many more
// approvers each requirement needs is the gateway's count (the quorum's
// own, approval.Registry.StillNeeded), and who can still give them comes
// from the same registry (StillWanted).
func (s *Server) reviewRequest(p gateway.PendingRequest) review.Request {
	return review.Request{Parked: p.Request, Action: p.Action, Instruction: p.Instruction, Reasoning: p.Reasoning,
		Rules: p.Rules, StillNeeded: p.StillNeeded, StillWanted: s.cfg.Approvers.StillWanted(p.Request)}
}

// requestPage is what templates/request.html shows.
type requestPage struct {
	ID      string // the raw id (a gateway id), for the vote forms' data-request
	Review  *review.Review
	Pending bool
	CanVote bool // an approver, not the requester, while it is pending
	// ActionNote says why the action is not shown field by field when the
	// log holds it by digest or as a commitment (finished requests).
	ActionNote string
	ClaimNote  string // the same for the instruction and the reasoning
	Story      *story
	StoryError string
}

// request serves one request: pending (from the gateway), or finished
// (from the log), with its story in the log either way.
func (s *Server) request(w http.ResponseWriter, r *http.Request, sess *Session) {
	id := r.PathValue("id")
	pg := requestPage{ID: id}
	now := s.cfg.Now()
	for _, p := range s.cfg.Gateway.Pending() {
		if p.Request.ID == id {
			pg.Review, pg.Pending = review.New(s.reviewRequest(p), now), true
			pg.CanVote = sess.Person.Approver && sess.Person.ID != p.Request.Agent
			break
		}
	}
	st, err := s.readStory(id)
	if err != nil {
		pg.StoryError = review.Escape(err.Error())
	}
	pg.Story = st
	if pg.Review == nil && st != nil && st.Decision != nil {
		pg.Review, pg.ActionNote, pg.ClaimNote = st.review(now)
	}
	if pg.Review == nil {
		if err != nil {
			s.renderError(w, sess, http.StatusInternalServerError, "the log could not be read: "+review.Escape(err.Error()))
			return
		}
		s.renderError(w, sess, http.StatusNotFound, "no request "+review.Quote(id)+" is pending or in the log")
		return
	}
	if r.Header.Get("HX-Request") == "true" && r.URL.Query().Get("poll") == "pending" && !pg.Pending {
		// The page polled while it was pending; its votes, forms and
		// summary are another page now: reload it whole.
		w.Header().Set("HX-Refresh", "true")
	}
	s.render(w, http.StatusOK, "request", sess, "Request "+pg.Review.ID, "queue", pg)
}

// roleNames describes p's roles for the header.
func roleNames(p Person) string {
	var rs []string
	if p.Approver {
		r := "approver"
		if len(p.Groups) > 0 {
			var gs []string
			for _, g := range p.Groups {
				gs = append(gs, review.Escape(g))
			}
			r += " (" + strings.Join(gs, ", ") + ")"
		}
		rs = append(rs, r)
	}
	if p.Auditor {
		rs = append(rs, "auditor")
	}
	return strings.Join(rs, ", ")
}
