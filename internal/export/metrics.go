package export

import "github.com/prometheus/client_golang/prometheus"

var (
	lagDesc = prometheus.NewDesc("rulelock_export_lag_entries",
		"Entries of the audit log the export receiver has not acknowledged yet.", nil, nil)
	exportedDesc = prometheus.NewDesc("rulelock_export_entries_total",
		"Entries the export receiver acknowledged: the cursor, so it never resets.", nil, nil)
	failuresDesc = prometheus.NewDesc("rulelock_export_failures_total",
		"Failed attempts to send a batch since the start (each is retried: nothing is dropped).", nil, nil)
)

// Collector returns the exporter's metrics, read at each scrape.
func (x *Exporter) Collector() prometheus.Collector { return collector{x} }

type collector struct{ x *Exporter }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagDesc
	ch <- exportedDesc
	ch <- failuresDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.x.Stats()
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(st.Lag()))
	ch <- prometheus.MustNewConstMetric(exportedDesc, prometheus.CounterValue, float64(st.Exported))
	ch <- prometheus.MustNewConstMetric(failuresDesc, prometheus.CounterValue, float64(st.Failures))
}
