package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
)

// metrics of one gateway, on its own registry so that tests can run several.
type metrics struct {
	registry            *prometheus.Registry
	requests            *prometheus.CounterVec
	rejections          *prometheus.CounterVec
	tokens              *prometheus.CounterVec
	spendUSD            prometheus.Counter
	budgetExceeded      prometheus.Gauge
	budgetAlert         prometheus.Gauge
	breakerState        *prometheus.GaugeVec
	upstreamLatency     *prometheus.HistogramVec
	configReloads       *prometheus.CounterVec
	usageEstimated      prometheus.Counter
	refusalsSummarized  prometheus.Counter
	activeSessions      prometheus.Gauge
	sessionDuration     prometheus.Histogram
	framesRelayed       *prometheus.CounterVec
	framesFromAgent     prometheus.Counter // framesRelayed's two series, looked up once
	framesToAgent       prometheus.Counter
	sessionCloses       *prometheus.CounterVec
	agentAuthFailures   *prometheus.CounterVec
	limitStoreUp        *prometheus.GaugeVec
	limitStoreFallbacks *prometheus.CounterVec
	audit               *audit.Metrics
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_requests_total", Help: "Calls through the gateway by route and outcome.",
		}, []string{"route", "outcome"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_limiter_rejections_total", Help: "Calls refused by a limit.",
		}, []string{"limit"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_tokens_total", Help: "Model tokens by direction.",
		}, []string{"direction"}),
		spendUSD: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voiceagent_gateway_spend_usd_total", Help: "Model spend in US dollars since start.",
		}),
		budgetExceeded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voiceagent_gateway_budget_exceeded", Help: "1 when a budget is spent.",
		}),
		budgetAlert: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voiceagent_gateway_budget_alert", Help: "1 when spend passed alertAtPercent of a budget.",
		}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "voiceagent_gateway_breaker_state", Help: "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open.",
		}, []string{"upstream"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "voiceagent_gateway_upstream_latency_seconds", Help: "Latency of upstream calls.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}, []string{"upstream"}),
		configReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_config_reloads_total", Help: "Configuration reloads by result.",
		}, []string{"result"}),
		usageEstimated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voiceagent_gateway_usage_estimated_total", Help: "Model calls whose usage could not be read from the answer and were charged an estimate.",
		}),
		activeSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voiceagent_gateway_active_sessions", Help: "Realtime sessions in progress on this gateway.",
		}),
		sessionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "voiceagent_gateway_session_duration_seconds", Help: "Length of realtime sessions.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
		}),
		framesRelayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_frames_relayed_total", Help: "WebSocket messages relayed, by direction.",
		}, []string{"direction"}),
		sessionCloses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_session_closes_total", Help: "Realtime sessions ended, by the side that closed and the close code.",
		}, []string{"closed_by", "code"}),
		agentAuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_agent_auth_failures_total", Help: "Calls refused for want of the agent token: missing, invalid, or throttled (from an address with too many failures).",
		}, []string{"reason"}),
		refusalsSummarized: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voiceagent_gateway_refusals_summarized_total", Help: "Refused calls recorded in a summary record instead of one record each.",
		}),
	}
	m.limitStoreUp, m.limitStoreFallbacks = newLimitStoreMetrics()
	m.registry.MustRegister(m.limitStoreUp, m.limitStoreFallbacks)
	m.registry.MustRegister(m.requests, m.rejections, m.tokens, m.spendUSD, m.budgetExceeded, m.budgetAlert,
		m.breakerState, m.upstreamLatency, m.configReloads, m.usageEstimated, m.refusalsSummarized,
		m.activeSessions, m.sessionDuration, m.framesRelayed, m.sessionCloses, m.agentAuthFailures)
	for _, reason := range []string{"missing", "invalid", "throttled"} {
		m.agentAuthFailures.WithLabelValues(reason) // at 0 from the start, for alert rules
	}
	m.framesFromAgent = m.framesRelayed.WithLabelValues("from_agent")
	m.framesToAgent = m.framesRelayed.WithLabelValues("to_agent")
	m.audit = audit.NewMetrics(m.registry)
	return m
}
