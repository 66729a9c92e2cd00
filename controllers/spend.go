package controllers

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
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
	// LimitStore is the gateway's view of spec.limitStore; absent without one.
	LimitStore *GatewayLimitStore `json:"limitStore,omitempty"`
}

// Limit store states a gateway reports.
const (
	LimitStoreStateReady       = "Ready"
	LimitStoreStateUnavailable = "Unavailable"
)

// GatewayLimitStore is how a gateway finds its limit store (internal/gateway).
type GatewayLimitStore struct {
	// State is Ready or Unavailable.
	State string `json:"state"`
	// Reason is Connected, Unreachable, AuthenticationFailed, TLSFailed or Error.
	Reason string `json:"reason"`
	// Message says what failed, without a credential.
	Message string `json:"message"`
	// FallbackCalls counts the calls this gateway decided without the store (on its
	// share under FailOpen, refused under FailClosed).
	FallbackCalls int64 `json:"fallbackCalls"`
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
	// Clock: the real one when nil.
	Clock clock.PassiveClock
}

// NeedLeaderElection: one writer of status.spend.
func (s *SpendCollector) NeedLeaderElection() bool { return true }

// Start collects every Interval until ctx ends.
func (s *SpendCollector) Start(ctx context.Context) error {
	if s.Interval <= 0 {
		s.Interval = DefaultSpendInterval
	}
	if s.Clock == nil {
		s.Clock = clock.RealClock{}
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
	now := s.Clock.Now().UTC()
	before := va.DeepCopy()
	exceeded, wasExceeded, msg := false, false, ""
	if next := nextSpend(va.Status.Spend, reports, present, now); next != nil { // nil: no gateway has ever answered
		next.DailyBudget, next.MonthlyBudget = "", ""
		if cl := va.Spec.CostLimits; cl != nil {
			next.DailyBudget, next.MonthlyBudget = cl.DailyBudget, cl.MonthlyBudget
		}
		if prev := va.Status.Spend; prev != nil {
			next.UpdatedAt = prev.UpdatedAt
		}
		if !equality.Semantic.DeepEqual(va.Status.Spend, next) {
			next.UpdatedAt = metav1.NewTime(now.Truncate(time.Second))
			va.Status.Spend = next
			wasExceeded = meta.IsStatusConditionTrue(va.Status.Conditions, v1alpha1.ConditionBudgetExceeded)
			var reason string
			exceeded, reason, msg = budgetCondition(next)
			setCondition(va, v1alpha1.ConditionBudgetExceeded, exceeded, reason, msg)
		}
	}
	if va.Spec.LimitStore == nil {
		meta.RemoveStatusCondition(&va.Status.Conditions, v1alpha1.ConditionLimitStoreReady)
	} else if ok, reason, lsMsg, seen := limitStoreCondition(va, reports); seen {
		setCondition(va, v1alpha1.ConditionLimitStoreReady, ok, reason, lsMsg)
	}
	if equality.Semantic.DeepEqual(before.Status, va.Status) {
		return nil // nothing changed: no write
	}
	if err := s.Client.Status().Patch(ctx, va, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("write status.spend of %s/%s: %w", va.Namespace, va.Name, err)
	}
	if exceeded && !wasExceeded && s.Recorder != nil {
		s.Recorder.Eventf(va, nil, corev1.EventTypeWarning, "BudgetExceeded", "Spend", "%s", msg)
	}
	return nil
}

// limitStoreCondition is LimitStoreReady from the gateways that answered: True while
// every one that reports its limit store reaches it, else False with the reason of the
// first (by pod name) that does not, what the failure policy does meanwhile, and the
// fix. seen is false when no gateway reported a limit store (none answered, or none
// has loaded the configuration with it yet): the condition is left as it is.
func limitStoreCondition(va *v1alpha1.VoiceAgent, reports map[string]*GatewaySpend) (ok bool, reason, msg string, seen bool) {
	pods := make([]string, 0, len(reports))
	for pod, r := range reports {
		if r.LimitStore != nil {
			pods = append(pods, pod)
		}
	}
	if len(pods) == 0 {
		return false, "", "", false
	}
	sort.Strings(pods)
	ls := va.Spec.LimitStore
	addr := ls.Redis.Address
	for _, pod := range pods {
		r := reports[pod].LimitStore
		if r.State == LimitStoreStateReady {
			continue
		}
		reason = r.Reason
		switch reason {
		case v1alpha1.ReasonUnreachable, v1alpha1.ReasonAuthenticationFailed, v1alpha1.ReasonTLSFailed, v1alpha1.ReasonError:
		default:
			reason = v1alpha1.ReasonError
		}
		policy := "Failure policy FailOpen: limits fall back to each gateway replica's share of them until the store is back."
		if ls.FailurePolicy == v1alpha1.LimitStoreFailClosed {
			policy = "Failure policy FailClosed: calls and sessions are refused with 503 until the store is back."
		}
		more := ""
		if n := len(pods); n > 1 {
			more = fmt.Sprintf(" (%d gateway pods report their limit store)", n)
		}
		detail := "."
		if m := strings.TrimSuffix(strings.TrimSpace(r.Message), "."); m != "" {
			detail = ": " + bounded(m, 300) + "."
		}
		return false, reason, fmt.Sprintf("Gateway pod %s cannot use the limit store at %s (%s)%s%s %s %s",
			pod, addr, reason, more, detail, policy, limitStoreFix(va, reason)), true
	}
	return true, v1alpha1.ReasonConnected, fmt.Sprintf("All %d gateway pods that report reach the limit store at %s; they enforce the whole VoiceAgent's limits there.", len(pods), addr), true
}

// limitStoreFix says what to check for a reason, naming the Secrets of the spec.
func limitStoreFix(va *v1alpha1.VoiceAgent, reason string) string {
	r := va.Spec.LimitStore.Redis
	secret := func(slot string, src *v1alpha1.CredentialSource) string {
		switch {
		case src == nil:
			return ""
		case src.SecretRef != nil:
			return fmt.Sprintf(" (Secret %s, key %s)", src.SecretRef.Name, src.SecretRef.Key)
		default:
			return fmt.Sprintf(" (Secret %s, synced by its ExternalSecret)", render.CredentialSecretName(va, slot))
		}
	}
	switch reason {
	case v1alpha1.ReasonUnreachable:
		return fmt.Sprintf("Check that spec.limitStore.redis.address (%s) names the store's Service or address and port, that the store is up, and that it accepts connections from the gateway pods.", r.Address)
	case v1alpha1.ReasonAuthenticationFailed:
		if r.Credentials == nil {
			return "The store requires a password: set spec.limitStore.redis.credentials (and username for an ACL user)."
		}
		msg := "Check that the Secret named in spec.limitStore.redis.credentials" + secret("limit-store-password", r.Credentials) + " holds the store's password"
		if r.Username != nil {
			msg += ", and spec.limitStore.redis.username" + secret("limit-store-username", r.Username) + " an ACL user allowed to run scripts"
		}
		return msg + "."
	case v1alpha1.ReasonTLSFailed:
		ca := ""
		if r.TLS != nil && r.TLS.CA != nil {
			ca = secret("limit-store-ca", r.TLS.CA)
		}
		return "Check that the store serves TLS on that port with a certificate for spec.limitStore.redis.tls.serverName (or the address' host), signed by the CA of spec.limitStore.redis.tls.ca" + ca + " or the system roots; a store without TLS needs spec.limitStore.redis.tls.disabled: true."
	}
	return "See the gateway pod's log."
}

// bounded cuts s to at most n bytes, on a rune boundary.
func bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
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
