package console

import (
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
	"github.com/rulelock/rulelock/internal/search"
)

// A hit is one entry a search found.
type hit struct {
	Index int64
	Entry *audit.Entry
}

// find returns the entries of the log from index from on that match q
// (search.Match, the one definition of a match), in log order, at most
// limit of them, and the index to continue from: the log's size when the
// search reached its end.
//
// With the gateway's search index (the LogAPI is an httpapi.Finder with an
// index: GET /v1/log/find's) it asks the index; without one, or while the
// gateway is still building it, it reads the log from the start (scan).
// Both give the same entries (TestSearchMatchesLinearReference).
func (s *Server) find(q search.Query, from int64, limit int) ([]hit, int64, error) {
	from = max(from, 0)
	if f, ok := s.cfg.Log.(httpapi.Finder); ok {
		size := s.cfg.Log.Size()
		q.From, q.Limit = from, limit
		rs, err := f.Find(q)
		switch {
		case err == nil:
			hits := make([]hit, len(rs))
			for i, r := range rs {
				hits[i] = hit{r.Index, r.Entry}
			}
			if len(rs) == limit {
				return hits, rs[len(rs)-1].Index + 1, nil
			}
			if len(rs) > 0 {
				size = max(size, rs[len(rs)-1].Index+1)
			}
			return hits, size, nil
		case !errors.Is(err, httpapi.ErrNoIndex) && !errors.Is(err, httpapi.ErrIndexBehind):
			return nil, from, fmt.Errorf("search the index: %w", err)
		}
	}
	return scan(s.cfg.Log, q, from, limit)
}

// blobReader is what scan reads a field held by digest with, when the
// LogAPI has it (httpapi.AuditLog does): an action held by digest has a
// type to search by, as in the index (search.ActionType).
type blobReader interface {
	Blob(d audit.Digest) ([]byte, error)
}

// scan is find without an index: it reads every entry from from on.
func scan(l httpapi.LogAPI, q search.Query, from int64, limit int) ([]hit, int64, error) {
	size := l.Size()
	blobs, _ := l.(blobReader)
	var hits []hit
	for i := from; i < size; i++ {
		raw, err := l.Entry(i)
		if err != nil {
			return hits, i, fmt.Errorf("read entry %d: %w", i, err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			return hits, i, fmt.Errorf("decode entry %d: %w", i, err)
		}
		typ, err := actionType(blobs, e)
		if err != nil {
			return hits, i, fmt.Errorf("entry %d: %w", i, err)
		}
		if !search.Match(&q, e, typ) {
			continue
		}
		hits = append(hits, hit{i, e})
		if len(hits) == limit {
			return hits, i + 1, nil
		}
	}
	return hits, size, nil
}

// actionType is the type of e's action: inline, or held by digest when
// blobs reads the blob store; "" for none.
func actionType(blobs blobReader, e *audit.Entry) (string, error) {
	if blobs == nil && e.Action.Text == "" {
		return "", nil
	}
	return search.ActionType(blobSource{blobs}, e)
}

// blobSource is a search.Source that only reads blobs (all that
// search.ActionType reads).
type blobSource struct{ blobReader }

func (b blobSource) Blob(d audit.Digest) ([]byte, error) {
	if b.blobReader == nil {
		return nil, errors.New("this log serves no blobs")
	}
	return b.blobReader.Blob(d)
}
func (blobSource) Size() int64                                { return 0 }
func (blobSource) ReadEntries(lo, hi int64) ([][]byte, error) { return nil, errors.New("not a log") }
func (blobSource) Position(i int64) (audit.Position, error) {
	return audit.Position{}, errors.New("not a log")
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
func parseQuery(v url.Values) (search.Query, int64, error) {
	for k, vs := range v {
		if len(vs) > 1 {
			return search.Query{}, 0, fmt.Errorf("%s given %d times", review.Escape(k), len(vs))
		}
		if len(vs[0]) > maxParam {
			return search.Query{}, 0, fmt.Errorf("%s is over %d bytes", review.Escape(k), maxParam)
		}
	}
	q := search.Query{RequestID: v.Get("request"), Agent: v.Get("agent"), Type: v.Get("type"), Decision: v.Get("decision"), Rule: v.Get("rule")}
	var err error
	if q.Since, err = parseTime(v.Get("from")); err != nil {
		return search.Query{}, 0, fmt.Errorf("from: %w", err)
	}
	if q.Until, err = parseTime(v.Get("to")); err != nil {
		return search.Query{}, 0, fmt.Errorf("to: %w", err)
	}
	var from int64
	if s := v.Get("after"); s != "" {
		if from, err = strconv.ParseInt(s, 10, 64); err != nil || from < 0 || strconv.FormatInt(from, 10) != s {
			return search.Query{}, 0, errors.New("after: want an entry index")
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
	typ, _ := actionType(nil, e) // the inline action's type; "" for one held by digest
	r := resultRow{Index: h.Index, Time: e.Time.UTC().Format(time.RFC3339Nano), Kind: review.Escape(string(e.Kind)),
		Request: review.Escape(e.RequestID), Agent: review.Escape(e.Agent), Type: review.Escape(typ), Decision: review.Escape(e.Decision)}
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
		hits, next, err := s.find(q, from, pageSize)
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
