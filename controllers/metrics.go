package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// The manager's /metrics authenticates every scrape with a TokenReview and authorizes it
// with a SubjectAccessReview (internal/manager, metricsOptions): it may create both.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Operator metrics beyond controller-runtime's built-in reconcile totals, errors and
// durations. They are registered on controller-runtime's registry, so the manager's
// /metrics endpoint serves them.
var (
	childrenApplied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "voiceagent_operator_children_applied_total",
		Help: "Children created or updated by server-side apply, by kind and result (created, updated).",
	}, []string{"kind", "result"})

	liveReads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "voiceagent_operator_child_live_reads_total",
		Help: "Children read from the API server because their cached digest differed from what the operator wants (a change, drift, or a field the digest does not settle), by kind.",
	}, []string{"kind"})

	driftCorrections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "voiceagent_operator_drift_corrections_total",
		Help: "Children put back after they drifted from the spec (edited or deleted by hand) while the VoiceAgent's spec was unchanged, by kind.",
	}, []string{"kind"})
)

// voiceAgentConditionCollector reports voiceagent_operator_voiceagents{condition,status}
// from a manager's cache at scrape time, so the numbers can never disagree with the
// objects (a gauge set in Reconcile would miss deletions).
//
// It is registered once on controller-runtime's registry, which every manager's /metrics
// serves, and reads through the newest manager of the process that is running: each
// manager adds a conditionSource that puts its own cache in front while it runs and takes
// it out when it stops. So a second manager in one process (tests start several, each
// against its own API server) reports its own cluster's VoiceAgents, and the cache of a
// stopped manager is never read.
type voiceAgentConditionCollector struct {
	desc *prometheus.Desc

	mu      sync.Mutex
	sources []*conditionSource // running managers' sources, newest last
}

func newVoiceAgentConditionCollector() *voiceAgentConditionCollector {
	return &voiceAgentConditionCollector{
		desc: prometheus.NewDesc("voiceagent_operator_voiceagents",
			"VoiceAgents by condition type and status (True, False, Unknown).",
			[]string{"condition", "status"}, nil),
	}
}

// voiceAgentConditions is the one collector of the process.
var voiceAgentConditions = newVoiceAgentConditionCollector()

func (c *voiceAgentConditionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *voiceAgentConditionCollector) Collect(ch chan<- prometheus.Metric) {
	reader := c.current()
	if reader == nil {
		return // no manager is running: nothing to count from
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list := &v1alpha1.VoiceAgentList{}
	if err := reader.List(ctx, list); err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, fmt.Errorf("list VoiceAgents: %w", err))
		return
	}
	for cond, byStatus := range countConditions(list.Items) {
		for status, n := range byStatus {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), cond, status)
		}
	}
}

// current is the reader of the newest running manager, or nil.
func (c *voiceAgentConditionCollector) current() client.Reader {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sources) == 0 {
		return nil
	}
	return c.sources[len(c.sources)-1].reader
}

func (c *voiceAgentConditionCollector) add(s *conditionSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources = append(c.sources, s)
}

func (c *voiceAgentConditionCollector) remove(s *conditionSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources = slices.DeleteFunc(c.sources, func(x *conditionSource) bool { return x == s })
}

// conditionSource is a manager's runnable that lends the collector its cache while the
// manager runs.
type conditionSource struct {
	collector *voiceAgentConditionCollector
	reader    client.Reader
}

// Start blocks until the manager stops.
func (s *conditionSource) Start(ctx context.Context) error {
	s.collector.add(s)
	defer s.collector.remove(s)
	<-ctx.Done()
	return nil
}

// NeedLeaderElection is false: a standby replica's cache is as current as the leader's,
// and its /metrics should say so too.
func (s *conditionSource) NeedLeaderElection() bool { return false }

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

// registerMetrics adds the operator's metrics to controller-runtime's registry (again for
// every manager of the process: an existing registration is kept) and lends the
// condition collector this manager's cache while it runs.
func registerMetrics(mgr ctrl.Manager) error {
	for _, c := range []prometheus.Collector{childrenApplied, liveReads, driftCorrections, auditRecordsLostOnShutdown, voiceAgentConditions} {
		if err := metrics.Registry.Register(c); err != nil {
			if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok || are.ExistingCollector != c {
				return fmt.Errorf("register operator metrics: %w", err)
			}
		}
	}
	if err := mgr.Add(&conditionSource{collector: voiceAgentConditions, reader: mgr.GetClient()}); err != nil {
		return fmt.Errorf("add the VoiceAgent condition metrics source: %w", err)
	}
	return nil
}
