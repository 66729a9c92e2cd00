package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// Operator metrics beyond controller-runtime's built-in reconcile totals, errors and
// durations. They are registered on controller-runtime's registry, so the manager's
// /metrics endpoint serves them.
var (
	childrenApplied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "voiceagent_operator_children_applied_total",
		Help: "Children created or updated by server-side apply, by kind and result (created, updated).",
	}, []string{"kind", "result"})

	driftCorrections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "voiceagent_operator_drift_corrections_total",
		Help: "Children put back after they drifted from the spec (edited or deleted by hand) while the VoiceAgent's spec was unchanged, by kind.",
	}, []string{"kind"})
)

// voiceAgentConditionCollector reports voiceagent_operator_voiceagents{condition,status}
// from the manager's cache at scrape time, so the numbers can never disagree with the
// objects (a gauge set in Reconcile would miss deletions).
type voiceAgentConditionCollector struct {
	reader client.Reader
	desc   *prometheus.Desc
}

func newVoiceAgentConditionCollector(r client.Reader) *voiceAgentConditionCollector {
	return &voiceAgentConditionCollector{
		reader: r,
		desc: prometheus.NewDesc("voiceagent_operator_voiceagents",
			"VoiceAgents by condition type and status (True, False, Unknown).",
			[]string{"condition", "status"}, nil),
	}
}

func (c *voiceAgentConditionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *voiceAgentConditionCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list := &v1alpha1.VoiceAgentList{}
	if err := c.reader.List(ctx, list); err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for cond, byStatus := range countConditions(list.Items) {
		for status, n := range byStatus {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), cond, status)
		}
	}
}

// countConditions counts every condition type the API knows, with zeroes, so that an
// alert on "Ready False > 0" has a series to compare even when all is well.
func countConditions(items []v1alpha1.VoiceAgent) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, t := range v1alpha1.ConditionTypes {
		out[t] = map[string]int{"True": 0, "False": 0, "Unknown": 0}
	}
	for i := range items {
		seen := map[string]bool{}
		for _, c := range items[i].Status.Conditions {
			if out[c.Type] == nil {
				out[c.Type] = map[string]int{"True": 0, "False": 0, "Unknown": 0}
			}
			out[c.Type][string(c.Status)]++
			seen[c.Type] = true
		}
		for _, t := range v1alpha1.ConditionTypes {
			if !seen[t] {
				out[t]["Unknown"]++ // not yet reported counts as unknown
			}
		}
	}
	return out
}

var registerOnce sync.Once

// registerMetrics adds the operator's metrics to controller-runtime's registry, once per
// process (envtest suites start several managers).
func registerMetrics(r client.Reader) {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(childrenApplied, driftCorrections, newVoiceAgentConditionCollector(r))
	})
}
