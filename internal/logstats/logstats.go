// Package logstats counts the audit log's entries for /metrics: entries by
// kind, decisions by decision, approval events by event, outcomes by
// status, postcondition verdicts by rule and verdict. The counts are a fold of the log, not of what this process saw,
// so they never reset: a restarted gateway counts its log again (Update,
// at start) and then the entries appended since (at each scrape). A
// Prometheus counter that goes down is read as a restart; these never go
// down unless the log itself is replaced.
package logstats

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rulelock/rulelock/audit"
)

// Source is what the counter reads of the log: an *audit.Log or an
// *audit.Snapshot.
type Source interface {
	Size() int64
	ReadEntries(lo, hi int64) ([][]byte, error)
}

// Counts are the entries of [0, Entries) counted.
type Counts struct {
	Entries   int64
	Kinds     map[audit.Kind]int64
	Decisions map[string]int64 // decision entries by decision (allow, deny, require_approval, approved)
	Approvals map[string]int64 // approval entries by event (approve, reject, expired, executed)
	Outcomes  map[string]int64 // outcome entries by status (ok, error, unknown)
	// Postconditions counts the verdicts outcome entries record, by rule
	// and verdict (holds, violated).
	Postconditions map[[2]string]int64
}

// Counter counts a log's entries incrementally. It is safe for concurrent
// use.
type Counter struct {
	mu    sync.Mutex
	c     Counts
	ready atomic.Bool // a first Update finished: the counts cover the log as it was
}

// New returns a counter that has counted nothing.
func New() *Counter {
	return &Counter{c: newCounts()}
}

func newCounts() Counts {
	return Counts{Kinds: map[audit.Kind]int64{}, Decisions: map[string]int64{}, Approvals: map[string]int64{}, Outcomes: map[string]int64{},
		Postconditions: map[[2]string]int64{}}
}

// Update counts the entries of src the counter has not counted yet. It
// stops early, counts kept, when ctx is done.
func (c *Counter) Update(ctx context.Context, src Source) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	size := src.Size()
	if size < c.c.Entries {
		return fmt.Errorf("log stats: the log has %d entries, %d were counted: it was replaced", size, c.c.Entries)
	}
	const step = 8192
	for lo := c.c.Entries; lo < size; lo += step {
		if err := ctx.Err(); err != nil {
			return err
		}
		raws, err := src.ReadEntries(lo, min(size, lo+step))
		if err != nil {
			return fmt.Errorf("log stats: %w", err)
		}
		for j, raw := range raws {
			e, err := audit.DecodeVerifiedEntry(raw)
			if err != nil {
				return fmt.Errorf("log stats: entry %d: %w", lo+int64(j), err)
			}
			c.add(e)
		}
	}
	c.ready.Store(true)
	return nil
}

func (c *Counter) add(e *audit.Entry) {
	c.c.Entries++
	c.c.Kinds[e.Kind]++
	switch e.Kind {
	case audit.KindDecision:
		c.c.Decisions[e.Decision]++
	case audit.KindApproval:
		c.c.Approvals[e.Decision]++
	case audit.KindOutcome:
		c.c.Outcomes[e.Status]++
		for _, v := range e.Postconditions {
			verdict := "violated"
			if v.Holds {
				verdict = "holds"
			}
			c.c.Postconditions[[2]string{v.Rule, verdict}]++
		}
	}
}

// Counts returns a copy of the counts and whether a first Update finished.
func (c *Counter) Counts() (Counts, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := newCounts()
	out.Entries = c.c.Entries
	for k, v := range c.c.Kinds {
		out.Kinds[k] = v
	}
	for k, v := range c.c.Postconditions {
		out.Postconditions[k] = v
	}
	for _, p := range [][2]map[string]int64{{out.Decisions, c.c.Decisions}, {out.Approvals, c.c.Approvals}, {out.Outcomes, c.c.Outcomes}} {
		for k, v := range p[1] {
			p[0][k] = v
		}
	}
	return out, c.ready.Load()
}

var (
	entriesDesc = prometheus.NewDesc("rulelock_log_entries_total",
		"Entries in the audit log by kind, counted from the log (never resets).", []string{"kind"}, nil)
	decisionsDesc = prometheus.NewDesc("rulelock_log_decisions_total",
		"Decision entries in the audit log by decision, counted from the log (never resets).", []string{"decision"}, nil)
	approvalsDesc = prometheus.NewDesc("rulelock_log_approval_events_total",
		"Approval entries in the audit log by event (approve, reject, expired, executed), counted from the log (never resets).", []string{"event"}, nil)
	outcomesDesc = prometheus.NewDesc("rulelock_log_outcomes_total",
		"Outcome entries in the audit log by status, counted from the log (never resets).", []string{"status"}, nil)
	postconditionsDesc = prometheus.NewDesc("rulelock_log_postconditions_total",
		"Postcondition verdicts recorded in the audit log's outcomes, by rule and verdict (holds, violated), counted from the log (never resets).", []string{"rule", "verdict"}, nil)
)

// Collector returns the counts as metrics. Each scrape first counts the
// entries appended since the last one (an error is passed to onErr and
// the counts stay as they were). Until a first Update has finished (the
// count at start, which a large log makes take a while) the series are
// absent rather than low: a low value would read as a reset.
func (c *Counter) Collector(src Source, onErr func(error)) prometheus.Collector {
	return collector{c, src, onErr}
}

type collector struct {
	c     *Counter
	src   Source
	onErr func(error)
}

func (col collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- entriesDesc
	ch <- decisionsDesc
	ch <- approvalsDesc
	ch <- outcomesDesc
	ch <- postconditionsDesc
}

func (col collector) Collect(ch chan<- prometheus.Metric) {
	if !col.c.ready.Load() {
		return // the count at start is still running: absent, not low
	}
	if err := col.c.Update(context.Background(), col.src); err != nil && col.onErr != nil {
		col.onErr(err)
	}
	counts, _ := col.c.Counts()
	for k, v := range counts.Kinds {
		ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.CounterValue, float64(v), string(k))
	}
	for _, m := range []struct {
		d *prometheus.Desc
		v map[string]int64
	}{{decisionsDesc, counts.Decisions}, {approvalsDesc, counts.Approvals}, {outcomesDesc, counts.Outcomes}} {
		for k, v := range m.v {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(v), k)
		}
	}
	for k, v := range counts.Postconditions {
		ch <- prometheus.MustNewConstMetric(postconditionsDesc, prometheus.CounterValue, float64(v), k[0], k[1])
	}
}
