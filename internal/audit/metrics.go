package audit

import "github.com/prometheus/client_golang/prometheus"

// Metrics of one audit log, registered on the gateway's registry.
type Metrics struct {
	Appended    prometheus.Counter
	Dropped     prometheus.Counter
	Delivered   *prometheus.CounterVec
	Failures    *prometheus.CounterVec
	Backlog     *prometheus.GaugeVec
	LastSuccess *prometheus.GaugeVec
}

// NewMetrics creates the audit metrics and registers them on reg (when not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voiceagent_gateway_audit_records_appended_total", Help: "Audit records (and checkpoints) appended to the durable queue.",
		}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voiceagent_gateway_audit_dropped_total", Help: "Audit records that could not be kept (queue full or unwritable).",
		}),
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_audit_delivered_total", Help: "Audit records delivered, per sink.",
		}, []string{"sink"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_audit_delivery_failures_total", Help: "Failed delivery attempts, per sink.",
		}, []string{"sink"}),
		Backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "voiceagent_gateway_audit_backlog_records", Help: "Audit records queued and not yet delivered, per sink.",
		}, []string{"sink"}),
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "voiceagent_gateway_audit_last_success_timestamp_seconds", Help: "Unix time of the last successful delivery, per sink.",
		}, []string{"sink"}),
	}
	if reg != nil {
		reg.MustRegister(m.Appended, m.Dropped, m.Delivered, m.Failures, m.Backlog, m.LastSuccess)
	}
	return m
}
