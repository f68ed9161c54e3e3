package logstats_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/logstats"
)

func appendAll(t *testing.T, l *audit.Log, es []audit.Entry) {
	t.Helper()
	for i := range es {
		es[i].Time = time.Now()
		if _, err := l.Append(context.Background(), &es[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func decision(d string) audit.Entry {
	return audit.Entry{Kind: audit.KindDecision, Decision: d, Agent: "a", RequestID: "r", Action: audit.Text(`{"type":"t"}`)}
}

// scrape gathers the counter's metrics as a scrape of /metrics would.
func scrape(t *testing.T, c *logstats.Counter, src logstats.Source) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collector(src, func(err error) { t.Error(err) }))
	var b strings.Builder
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			fmt.Fprintf(&b, "%s{%s} %v\n", mf.GetName(), strings.Join(labels, ","), m.GetCounter().GetValue())
		}
	}
	return b.String()
}

// The counts are the log's: a restarted process (a new Counter on the
// reopened log) starts from them, not from zero, and goes on counting.
func TestCountsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, []audit.Entry{decision("allow"), decision("allow"), decision("deny"), decision("require_approval"),
		{Kind: audit.KindApproval, Decision: "approve", RequestID: "r", Approver: "alice"},
		{Kind: audit.KindOutcome, Status: "ok", RequestID: "r"},
		{Kind: audit.KindNote, Message: "startup"}})
	c := logstats.New()
	if got := scrape(t, c, l); got != "" {
		t.Errorf("before the count at start, a scrape shows %q, want nothing (absent, not low)", got)
	}
	if err := c.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	before := scrape(t, c, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// The restart.
	l, err = audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c = logstats.New()
	if err := c.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if after := scrape(t, c, l); after != before {
		t.Errorf("after a restart:\n%s\nbefore it:\n%s", after, before)
	}
	appendAll(t, l, []audit.Entry{decision("deny"), {Kind: audit.KindOutcome, Status: "error", RequestID: "r",
		Postconditions: []audit.Verdict{{Rule: "RefundMatches", Holds: true}, {Rule: "NoteFiled", Holds: false}}}})
	got := scrape(t, c, l) // counts what was appended since
	want := `rulelock_log_approval_events_total{event="approve"} 1
rulelock_log_decisions_total{decision="allow"} 2
rulelock_log_decisions_total{decision="deny"} 2
rulelock_log_decisions_total{decision="require_approval"} 1
rulelock_log_entries_total{kind="approval"} 1
rulelock_log_entries_total{kind="decision"} 5
rulelock_log_entries_total{kind="note"} 1
rulelock_log_entries_total{kind="outcome"} 2
rulelock_log_outcomes_total{status="error"} 1
rulelock_log_outcomes_total{status="ok"} 1
rulelock_log_postconditions_total{rule="NoteFiled",verdict="violated"} 1
rulelock_log_postconditions_total{rule="RefundMatches",verdict="holds"} 1
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

func TestReplacedLogIsAnError(t *testing.T) {
	a, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	appendAll(t, a, []audit.Entry{decision("allow"), decision("deny")})
	c := logstats.New()
	if err := c.Update(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	b, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	appendAll(t, b, []audit.Entry{decision("allow")})
	if err := c.Update(context.Background(), b); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("a shorter log: %v, want an error saying it was replaced", err)
	}
}
