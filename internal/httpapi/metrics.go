package httpapi

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/notify"
	"github.com/rulelock/rulelock/policy"
)

// Metrics are the gateway's Prometheus metrics, on their own registry.
type Metrics struct {
	reg       *prometheus.Registry
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	failures  *prometheus.CounterVec
	// postconditions counts verdicts by rule and verdict (holds, violated).
	postconditions *prometheus.CounterVec
	// LogSize and Pending are set by the caller.
	LogSize prometheus.Gauge
	Pending prometheus.Gauge
	// The ledger's size, budget and budget denials, read from the gateway
	// at each scrape.
	ledgerBytes, ledgerBudget prometheus.Gauge
	overBudget                prometheus.Gauge
	// WitnessConflict is 1 once a witness has seen a larger or different
	// tree and checkpoints are no longer published; set by the caller.
	WitnessConflict prometheus.Gauge

	byDecision map[string]decisionMetrics // the usual decisions, resolved once

	// Checkpoint signing, from the checkpointer's status at each scrape.
	cpMu                                    sync.Mutex
	cpSeen                                  int64 // failures already counted
	cpFailures                              prometheus.Counter
	cpLastSuccess, cpUnsigned, cpSignedSize prometheus.Gauge
	cpFailing                               prometheus.Gauge
}

// decisionMetrics are the series of one decision.
type decisionMetrics struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// NewMetrics registers the metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rulelock_decisions_total", Help: "Decisions by outcome.",
		}, []string{"decision"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rulelock_request_seconds", Help: "Time from request to reply, by decision.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1, 5},
		}, []string{"decision"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rulelock_fail_closed_total", Help: "Requests refused before or instead of a decision, by reason.",
		}, []string{"reason"}),
		postconditions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rulelock_postconditions_total", Help: "Postcondition verdicts on recorded outcomes, by rule and verdict (holds, violated).",
		}, []string{"rule", "verdict"}),
		LogSize: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_log_entries", Help: "Entries in the audit log."}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_approvals_pending", Help: "Requests waiting for approval."}),
		ledgerBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_ledger_bytes",
			Help: "The ledger's estimate of the memory it keeps for the policy's limits."}),
		ledgerBudget: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_ledger_budget_bytes",
			Help: "The ledger's memory budget (limits.memory_budget); over it, new actions are denied memory_budget."}),
		overBudget: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_memory_budget_denials",
			Help: "Decisions denied because the ledger was at its memory budget, since the start."}),
	}
	m.cpFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "rulelock_checkpoint_failures_total",
		Help: "Failed attempts to sign a checkpoint (each is retried with backoff)."})
	m.cpLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_checkpoint_last_success_timestamp_seconds",
		Help: "When the last successful signing attempt started (Unix time): every entry appended before it is covered by a signed checkpoint."})
	m.cpUnsigned = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_checkpoint_unsigned_seconds",
		Help: "How long the oldest entry without a signed checkpoint has waited (0 when all are signed); past log.max_unsigned, actions are refused."})
	m.cpSignedSize = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_checkpoint_signed_entries",
		Help: "Entries covered by the last signed checkpoint."})
	m.cpFailing = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_checkpoint_failing_attempts",
		Help: "Consecutive failed signing attempts, 0 when the last one succeeded."})
	m.reg.MustRegister(m.decisions, m.latency, m.failures, m.postconditions, m.LogSize, m.Pending, m.ledgerBytes, m.ledgerBudget, m.overBudget,
		m.cpFailures, m.cpLastSuccess, m.cpUnsigned, m.cpSignedSize, m.cpFailing)
	m.WitnessConflict = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rulelock_witness_conflict",
		Help: "1 when a witness refused a checkpoint because it cosigned a larger or a different tree (rollback or fork): publication stopped."})
	m.reg.MustRegister(m.WitnessConflict)
	m.byDecision = map[string]decisionMetrics{}
	for _, d := range []string{"allow", "deny", "require_approval"} {
		m.byDecision[d] = decisionMetrics{m.decisions.WithLabelValues(d), m.latency.WithLabelValues(d)}
	}
	return m
}

func (m *Metrics) decided(decision string, d time.Duration) {
	dm, ok := m.byDecision[decision]
	if !ok {
		dm = decisionMetrics{m.decisions.WithLabelValues(decision), m.latency.WithLabelValues(decision)}
	}
	dm.count.Inc()
	dm.latency.Observe(d.Seconds())
}

func (m *Metrics) failClosed(reason string) { m.failures.WithLabelValues(reason).Inc() }

// checked counts the postcondition verdicts on an outcome just recorded.
func (m *Metrics) checked(verdicts []policy.Verdict) {
	for _, v := range verdicts {
		verdict := "violated"
		if v.Holds {
			verdict = "holds"
		}
		m.postconditions.WithLabelValues(v.Rule, verdict).Inc()
	}
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// checkpoints sets the checkpoint metrics from the checkpointer's status.
func (m *Metrics) checkpoints(st audit.CheckpointStatus, unsigned time.Duration) {
	m.cpMu.Lock()
	if d := st.Failures - m.cpSeen; d > 0 {
		m.cpFailures.Add(float64(d))
		m.cpSeen = st.Failures
	}
	m.cpMu.Unlock()
	if !st.Covered.IsZero() && st.Signed {
		m.cpLastSuccess.Set(float64(st.Covered.UnixNano()) / 1e9)
	}
	m.cpUnsigned.Set(unsigned.Seconds())
	m.cpSignedSize.Set(float64(st.Size))
	m.cpFailing.Set(float64(st.Failed))
}

// NotifyStats reports the approval notifications' counters by group
// (notify.Notifier.Stats).
type NotifyStats func() []notify.Stats

// Notifications adds the notifications' metrics, read from stats at each
// scrape. Call it once, before serving.
func (m *Metrics) Notifications(stats NotifyStats) {
	m.reg.MustRegister(notifyCollector{stats})
}

var (
	notifyQueued = prometheus.NewDesc("rulelock_notify_queue_depth",
		"Parked requests waiting to be sent to an approver group's webhook.", []string{"group"}, nil)
	notifyDelivered = prometheus.NewDesc("rulelock_notify_delivered_total",
		"Notification messages an approver group's webhook accepted.", []string{"group"}, nil)
	notifyFailures = prometheus.NewDesc("rulelock_notify_failures_total",
		"Failed notification attempts to an approver group's webhook (each retry counts).", []string{"group"}, nil)
	notifyGaveUp = prometheus.NewDesc("rulelock_notify_gave_up_total",
		"Notification messages that failed for good after their retries (each is a note in the audit log).", []string{"group"}, nil)
	notifyDropped = prometheus.NewDesc("rulelock_notify_dropped_total",
		"Parked requests not queued for an approver group because its queue was full (counted in its next message).", []string{"group"}, nil)
)

// notifyCollector turns notify.Stats into metrics at each scrape.
type notifyCollector struct{ stats NotifyStats }

func (c notifyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{notifyQueued, notifyDelivered, notifyFailures, notifyGaveUp, notifyDropped} {
		ch <- d
	}
}

func (c notifyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		ch <- prometheus.MustNewConstMetric(notifyQueued, prometheus.GaugeValue, float64(s.Queued), s.Group)
		ch <- prometheus.MustNewConstMetric(notifyDelivered, prometheus.CounterValue, float64(s.Delivered), s.Group)
		ch <- prometheus.MustNewConstMetric(notifyFailures, prometheus.CounterValue, float64(s.Failures), s.Group)
		ch <- prometheus.MustNewConstMetric(notifyGaveUp, prometheus.CounterValue, float64(s.GaveUp), s.Group)
		ch <- prometheus.MustNewConstMetric(notifyDropped, prometheus.CounterValue, float64(s.Dropped), s.Group)
	}
}

// Frozen adds rulelock_frozen, 1 while the gateway is frozen (the
// emergency stop), read from frozen at each scrape. Call it once, before
// serving.
func (m *Metrics) Frozen(frozen func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rulelock_frozen",
		Help: "1 while the gateway is frozen (rulelock freeze): every new action is refused, code frozen."}, func() float64 {
		if frozen() {
			return 1
		}
		return 0
	}))
}
