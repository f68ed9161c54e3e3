package httpapi

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/search"
)

// Finder is what GET /v1/log/find reads, when the LogAPI has it
// (AuditLog does when it has an Index).
type Finder interface {
	Find(q search.Query) ([]search.Result, error)
}

// Find searches the log with the index (what the index does not cover yet
// is scanned; results are read back from the log).
func (a *AuditLog) Find(q search.Query) ([]search.Result, error) {
	if a.Index == nil {
		return nil, ErrNoIndex
	}
	covered, err := a.Index.Covers(a.Log)
	if err != nil {
		return nil, err
	}
	limit := a.MaxScan
	if limit <= 0 {
		limit = defaultMaxScan
	}
	if a.Log.Size()-max(covered, q.From) > limit {
		return nil, ErrIndexBehind
	}
	return a.Index.Find(a.Log, q)
}

// defaultMaxScan is the most entries a search over HTTP scans past the
// index (about a second's work; AuditLog.MaxScan): beyond it, while the
// gateway is still building the index (a first start on a large log), it
// answers 503.
const defaultMaxScan = 100_000

// Find's errors: the LogAPI has no index; the index is so far behind the
// log (a first build on a large log) that a search would scan too much.
var (
	ErrNoIndex     = errors.New("no search index")
	ErrIndexBehind = errors.New("the search index is being built")
)

// Register adds a collector to the metrics (an exporter's, the log's
// counts). Call it before serving.
func (m *Metrics) Register(c prometheus.Collector) { m.reg.MustRegister(c) }

const (
	findDefaultLimit = 100
	findMaxLimit     = 1000
)

// find serves GET /v1/log/find: the entries that meet every criterion of
// the query string (request, agent, type, decision, rule, kind, since,
// until as RFC 3339, from as an index, limit), in log order, to approvers
// and auditors only: the answer holds other agents' entries. Each entry
// is {"index", "leaf_hash", "entry"} with the entry's bytes as the log
// holds them, as rulelock export sends them; next_from is where to go on
// when the limit was reached.
func (s *Server) find(w http.ResponseWriter, r *http.Request, caller *Token) {
	if !caller.readsAll() {
		s.cfg.Metrics.failClosed("forbidden")
		writeError(w, http.StatusForbidden, "forbidden", "the log search is for approvers and auditors")
		return
	}
	f, ok := s.cfg.Log.(Finder)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "this gateway has no log search")
		return
	}
	q, msg := parseFind(r)
	if msg != "" {
		writeError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	rs, err := f.Find(q)
	if errors.Is(err, ErrIndexBehind) {
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, "index_building", "the search index is being built from the log; retry later, or use rulelock log find")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "the log search failed")
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"entries":[`)
	for i, res := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"index":`)
		b.WriteString(strconv.FormatInt(res.Index, 10))
		b.WriteString(`,"leaf_hash":"`)
		b.WriteString(res.LeafHash.String())
		b.WriteString(`","entry":`)
		b.Write(res.Raw) // canonical JSON, byte for byte: the leaf hash checks
		b.WriteByte('}')
	}
	b.WriteString(`],"log_size":`)
	b.WriteString(strconv.FormatInt(s.cfg.Log.Size(), 10))
	if len(rs) == q.Limit {
		b.WriteString(`,"next_from":`)
		b.WriteString(strconv.FormatInt(rs[len(rs)-1].Index+1, 10))
	}
	b.WriteString("}\n")
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = nosniff
	w.WriteHeader(http.StatusOK)
	w.Write(b.Bytes())
}

// parseFind reads the query string strictly: known parameters, once each.
func parseFind(r *http.Request) (search.Query, string) {
	q := search.Query{Limit: findDefaultLimit}
	vals := r.URL.Query()
	for k, v := range vals {
		if len(v) != 1 {
			return q, "parameter " + strconv.Quote(k) + " given more than once"
		}
		val := v[0]
		var err error
		switch k {
		case "request":
			q.RequestID = val
		case "agent":
			q.Agent = val
		case "type":
			q.Type = val
		case "decision":
			q.Decision = val
		case "rule":
			q.Rule = val
		case "kind":
			q.Kind = audit.Kind(val)
		case "since":
			q.Since, err = time.Parse(time.RFC3339Nano, val)
		case "until":
			q.Until, err = time.Parse(time.RFC3339Nano, val)
		case "from":
			q.From, err = strconv.ParseInt(val, 10, 64)
			if err == nil && q.From < 0 {
				err = errors.New("negative")
			}
		case "limit":
			q.Limit, err = strconv.Atoi(val)
			if err == nil && (q.Limit < 1 || q.Limit > findMaxLimit) {
				err = errors.New("out of range")
			}
		default:
			return q, "unknown parameter " + strconv.Quote(k) + " (request, agent, type, decision, rule, kind, since, until, from, limit)"
		}
		if err != nil {
			return q, "bad " + k + " " + strconv.Quote(val) + ": want an RFC 3339 time for since and until, a non-negative index for from, 1 to " + strconv.Itoa(findMaxLimit) + " for limit"
		}
	}
	return q, ""
}
