package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/review"
)

// A Query selects log entries: every field that is set must match.
type Query struct {
	Request    string    // the entry's request id
	Agent      string    // the requesting agent (decision and outcome entries)
	ActionType string    // the action's type (decision entries that hold the action)
	Decision   string    // audit.Entry.Decision: allow, deny, require_approval, approved, approve, reject, expired, executed
	Rule       string    // a rule that fired, by name
	From, To   time.Time // From ≤ time < To; zero is open
}

// matches reports whether e matches q.
func (q Query) matches(e *audit.Entry) bool {
	switch {
	case q.Request != "" && e.RequestID != q.Request,
		q.Agent != "" && e.Agent != q.Agent,
		q.Decision != "" && e.Decision != q.Decision,
		!q.From.IsZero() && e.Time.Before(q.From),
		!q.To.IsZero() && !e.Time.Before(q.To),
		q.ActionType != "" && actionType(e) != q.ActionType:
		return false
	}
	if q.Rule == "" {
		return true
	}
	for _, r := range e.Rules {
		if r.Name == q.Rule {
			return true
		}
	}
	return false
}

// actionType is the type of the action e holds inline, or "".
func actionType(e *audit.Entry) string {
	if e.Action.Text == "" {
		return ""
	}
	var a struct {
		Type string `json:"type"`
	}
	if json.Unmarshal([]byte(e.Action.Text), &a) != nil {
		return ""
	}
	return a.Type
}

// A hit is one entry a search found.
type hit struct {
	Index int64
	Entry *audit.Entry
}

// search returns the entries of l from index from on that match q, in log
// order, at most limit of them, and the index to continue from: l.Size()
// when the scan reached the end.
//
// It is the console's one way to find entries, a linear scan: a log index
// can replace it here without the pages changing.
func search(l httpapi.LogAPI, q Query, from int64, limit int) ([]hit, int64, error) {
	size := l.Size()
	var hits []hit
	for i := max(from, 0); i < size; i++ {
		raw, err := l.Entry(i)
		if err != nil {
			return hits, i, fmt.Errorf("read entry %d: %w", i, err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			return hits, i, fmt.Errorf("decode entry %d: %w", i, err)
		}
		if !q.matches(e) {
			continue
		}
		hits = append(hits, hit{i, e})
		if len(hits) == limit {
			return hits, i + 1, nil
		}
	}
	return hits, size, nil
}

// maxParam caps each search parameter, in bytes.
const maxParam = 256

// pageSize is how many entries a search page shows.
const pageSize = 100

// timeLayouts are the time forms a search accepts, all read as UTC unless
// they carry a zone: what an <input type="datetime-local"> sends, and RFC 3339.
var timeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339Nano}

// parseQuery reads a search from the URL's query: q, the index to start
// from, and an error for a value it cannot read (never ignored).
func parseQuery(v url.Values) (Query, int64, error) {
	for k, vs := range v {
		if len(vs) > 1 {
			return Query{}, 0, fmt.Errorf("%s given %d times", review.Escape(k), len(vs))
		}
		if len(vs[0]) > maxParam {
			return Query{}, 0, fmt.Errorf("%s is over %d bytes", review.Escape(k), maxParam)
		}
	}
	q := Query{Request: v.Get("request"), Agent: v.Get("agent"), ActionType: v.Get("type"), Decision: v.Get("decision"), Rule: v.Get("rule")}
	var err error
	if q.From, err = parseTime(v.Get("from")); err != nil {
		return Query{}, 0, fmt.Errorf("from: %w", err)
	}
	if q.To, err = parseTime(v.Get("to")); err != nil {
		return Query{}, 0, fmt.Errorf("to: %w", err)
	}
	var from int64
	if s := v.Get("after"); s != "" {
		if from, err = strconv.ParseInt(s, 10, 64); err != nil || from < 0 || strconv.FormatInt(from, 10) != s {
			return Query{}, 0, errors.New("after: want an entry index")
		}
	}
	return q, from, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s is not a time (want 2026-12-02T10:00 in UTC, or RFC 3339)", review.Quote(s))
}

// A resultRow is a search hit as the results table shows it: every string
// escaped.
type resultRow struct {
	Index                                             int64
	Time, Kind, Request, Agent, Type, Decision, Rules string
	RequestLink                                       string // the raw request id, for the link; "" for none
}

func rowOf(h hit) resultRow {
	e := h.Entry
	r := resultRow{Index: h.Index, Time: e.Time.UTC().Format(time.RFC3339Nano), Kind: review.Escape(string(e.Kind)),
		Request: review.Escape(e.RequestID), Agent: review.Escape(e.Agent), Type: review.Escape(actionType(e)), Decision: review.Escape(e.Decision)}
	if e.Kind == audit.KindApproval || e.Kind == audit.KindNote && e.Approver != "" {
		r.Agent = "approver " + review.Escape(e.Approver)
	}
	for i, x := range e.Rules {
		if i > 0 {
			r.Rules += ", "
		}
		r.Rules += review.Escape(x.Name)
	}
	if e.RequestID != "" && review.Escape(e.RequestID) == e.RequestID {
		r.RequestLink = e.RequestID
	}
	return r
}

// logPage is what templates/log.html shows.
type logPage struct {
	Form   url.Values // the search as asked, to fill the form again
	Asked  bool       // any search parameter was given
	Error  string
	Rows   []resultRow
	Next   template.URL // the next page of results, "" at the end (built by url.Values.Encode)
	From   int64        // the entries read: From to Last (Last < From: none)
	Last   int64
	Status logStatus
}

// logSearch serves the auditors' search and the log's status.
func (s *Server) logSearch(w http.ResponseWriter, r *http.Request, sess *Session) {
	v := r.URL.Query()
	pg := logPage{Form: v, Asked: len(v) > 0, Status: s.logStatus()}
	q, from, err := parseQuery(v)
	if err != nil {
		pg.Error = err.Error()
		s.render(w, http.StatusBadRequest, "log", sess, "Log", "log", pg)
		return
	}
	if pg.Asked {
		hits, next, err := search(s.cfg.Log, q, from, pageSize)
		if err != nil {
			pg.Error = review.Escape(err.Error())
		}
		for _, h := range hits {
			pg.Rows = append(pg.Rows, rowOf(h))
		}
		pg.From, pg.Last = from, next-1
		if err == nil && next < s.cfg.Log.Size() {
			nv := url.Values{}
			for k, vs := range v {
				nv[k] = vs
			}
			nv.Set("after", strconv.FormatInt(next, 10))
			pg.Next = template.URL("/console/log?" + nv.Encode())
		}
	}
	s.render(w, http.StatusOK, "log", sess, "Log", "log", pg)
}
