package controllers

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// DefaultSpendInterval is how often the gateways' spend is read; status.spend is
// written at most this often, and only when the figures changed.
const DefaultSpendInterval = 30 * time.Second

// GatewaySpend is a gateway's GET /spend answer (internal/gateway SpendReport).
type GatewaySpend struct {
	Day         string `json:"day"`
	Month       string `json:"month"`
	DayMicros   int64  `json:"dayMicros"`
	MonthMicros int64  `json:"monthMicros"`
	DayTokens   int64  `json:"dayTokens"`
	MonthTokens int64  `json:"monthTokens"`
}

// SpendReader reads a gateway pod's spend.
type SpendReader interface {
	ReadSpend(ctx context.Context, pod *corev1.Pod) (*GatewaySpend, error)
}

// HTTPSpendReader reads GET /spend on the gateway container's admin port.
type HTTPSpendReader struct{ Client *http.Client }

// ReadSpend implements SpendReader.
func (h HTTPSpendReader) ReadSpend(ctx context.Context, pod *corev1.Pod) (*GatewaySpend, error) {
	var s GatewaySpend
	if err := getGatewayJSON(ctx, h.Client, pod, "/spend", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// SpendCollector reads every VoiceAgent's gateways' spend and writes it to
// status.spend with the BudgetExceeded condition, for kubectl, Argo CD and auditors
// who have no Prometheus. It runs on the leader only.
type SpendCollector struct {
	Client   client.Client
	Reader   SpendReader
	Recorder events.EventRecorder
	Interval time.Duration
	Now      func() time.Time
}

// NeedLeaderElection: one writer of status.spend.
func (s *SpendCollector) NeedLeaderElection() bool { return true }

// Start collects every Interval until ctx ends.
func (s *SpendCollector) Start(ctx context.Context) error {
	if s.Interval <= 0 {
		s.Interval = DefaultSpendInterval
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.CollectAll(ctx)
		}
	}
}

// CollectAll reads the spend of every VoiceAgent once.
func (s *SpendCollector) CollectAll(ctx context.Context) {
	list := &v1alpha1.VoiceAgentList{}
	if err := s.Client.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "list VoiceAgents for their spend")
		return
	}
	for i := range list.Items {
		if err := s.collect(ctx, &list.Items[i]); err != nil {
			log.FromContext(ctx).Error(err, "spend not collected", "voiceAgent", list.Items[i].Name, "namespace", list.Items[i].Namespace)
		}
	}
}

func (s *SpendCollector) collect(ctx context.Context, va *v1alpha1.VoiceAgent) error {
	pods := &corev1.PodList{}
	if err := s.Client.List(ctx, pods, client.InNamespace(va.Namespace),
		client.MatchingLabels(render.GatewaySelectorLabels(va.Name))); err != nil {
		return fmt.Errorf("list pods of VoiceAgent %s: %w", va.Name, err)
	}
	present := map[string]bool{}
	reports := map[string]*GatewaySpend{}
	// A pod being deleted is still present while it drains (up to
	// spec.voice.drainTimeout): it serves calls and sessions, so it is read on; its
	// figures are carried only once it is gone from the list.
	for i := range pods.Items {
		pod := &pods.Items[i]
		present[pod.Name] = true
		if pod.Status.Phase != corev1.PodRunning {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		r, err := s.Reader.ReadSpend(rctx, pod)
		cancel()
		if err != nil {
			log.FromContext(ctx).V(1).Info("gateway skipped: no spend", "pod", pod.Name, "error", err.Error())
			continue
		}
		reports[pod.Name] = r
	}
	now := s.Now().UTC()
	next := nextSpend(va.Status.Spend, reports, present, now)
	if next == nil {
		return nil // no gateway has ever answered
	}
	next.DailyBudget, next.MonthlyBudget = "", ""
	if cl := va.Spec.CostLimits; cl != nil {
		next.DailyBudget, next.MonthlyBudget = cl.DailyBudget, cl.MonthlyBudget
	}
	before := va.DeepCopy()
	if prev := va.Status.Spend; prev != nil {
		next.UpdatedAt = prev.UpdatedAt
	}
	if equality.Semantic.DeepEqual(va.Status.Spend, next) {
		return nil // nothing changed: no write
	}
	next.UpdatedAt = metav1.NewTime(now.Truncate(time.Second))
	va.Status.Spend = next
	wasExceeded := meta.IsStatusConditionTrue(va.Status.Conditions, v1alpha1.ConditionBudgetExceeded)
	exceeded, reason, msg := budgetCondition(next)
	setCondition(va, v1alpha1.ConditionBudgetExceeded, exceeded, reason, msg)
	if err := s.Client.Status().Patch(ctx, va, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("write status.spend of %s/%s: %w", va.Namespace, va.Name, err)
	}
	if exceeded && !wasExceeded && s.Recorder != nil {
		s.Recorder.Eventf(va, nil, corev1.EventTypeWarning, "BudgetExceeded", "Spend", "%s", msg)
	}
	return nil
}

// nextSpend folds the gateways' reports into the VoiceAgent's spend. A pod that is gone
// has its last figures carried, so that a rollout does not make spend fall back; a new
// UTC day or month starts its figures again. nil when nothing was ever reported.
func nextSpend(prev *v1alpha1.SpendStatus, reports map[string]*GatewaySpend, present map[string]bool, now time.Time) *v1alpha1.SpendStatus {
	day, month := now.Format(time.DateOnly), now.Format("2006-01")
	if prev == nil && len(reports) == 0 {
		return nil
	}
	next := &v1alpha1.SpendStatus{Day: day}
	byPod := map[string]v1alpha1.PodSpend{}
	if prev != nil {
		sameDay, sameMonth := prev.Day == day, len(prev.Day) >= 7 && prev.Day[:7] == month
		if sameDay {
			next.CarriedTodayMicros = prev.CarriedTodayMicros
		}
		if sameMonth {
			next.CarriedMonthMicros = prev.CarriedMonthMicros
		}
		for _, p := range prev.Pods {
			if !sameDay {
				p.TodayMicros = 0
			}
			if !sameMonth {
				p.MonthMicros = 0
			}
			if !present[p.Pod] {
				next.CarriedTodayMicros += p.TodayMicros
				next.CarriedMonthMicros += p.MonthMicros
				continue
			}
			byPod[p.Pod] = p
		}
		next.TodayTokens, next.MonthTokens = 0, 0
	}
	for pod, r := range reports {
		p := byPod[pod]
		p.Pod = pod
		if r.Day == day {
			p.TodayMicros = max(p.TodayMicros, r.DayMicros)
			next.TodayTokens += r.DayTokens
		}
		if r.Month == month {
			p.MonthMicros = max(p.MonthMicros, r.MonthMicros)
			next.MonthTokens += r.MonthTokens
		}
		byPod[pod] = p
	}
	today, monthTotal := next.CarriedTodayMicros, next.CarriedMonthMicros
	for _, p := range byPod {
		next.Pods = append(next.Pods, p)
		today += p.TodayMicros
		monthTotal += p.MonthMicros
	}
	sort.Slice(next.Pods, func(i, j int) bool { return next.Pods[i].Pod < next.Pods[j].Pod })
	next.Today, next.Month = budget.Micros(today).String(), budget.Micros(monthTotal).String()
	next.ReportingGateways = int32(len(reports))
	return next
}

// budgetCondition compares spend with the budgets.
func budgetCondition(s *v1alpha1.SpendStatus) (bool, string, string) {
	spent := func(v, limit string) bool {
		if limit == "" {
			return false
		}
		a, err1 := budget.ParseMicros(v)
		b, err2 := budget.ParseMicros(limit)
		return err1 == nil && err2 == nil && b > 0 && a >= b
	}
	switch {
	case spent(s.Today, s.DailyBudget):
		return true, v1alpha1.ReasonDailyBudgetSpent, fmt.Sprintf("Spent %s USD of the daily budget of %s USD on %s (UTC).", s.Today, s.DailyBudget, s.Day)
	case spent(s.Month, s.MonthlyBudget):
		return true, v1alpha1.ReasonMonthlyBudgetSpent, fmt.Sprintf("Spent %s USD of the monthly budget of %s USD.", s.Month, s.MonthlyBudget)
	}
	return false, v1alpha1.ReasonWithinBudget, fmt.Sprintf("Spent %s USD today and %s USD this month, within the budgets.", s.Today, s.Month)
}
