package controllers_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/controllers"
	"github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// runningGatewayPod creates a running pod of va from the operator's own pod template,
// as the ReplicaSet controller and kubelet would leave it (envtest runs neither): its
// IP is loopback and its gateway's admin port is where h listens.
func runningGatewayPod(t *testing.T, ns, va, name string, h http.Handler) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	_, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: va + "-gateway"}, dep); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: dep.Spec.Template.Labels},
		Spec:       *dep.Spec.Template.Spec.DeepCopy(),
	}
	for i, c := range pod.Spec.Containers {
		for j, p := range c.Ports {
			if c.Name == render.GatewayContainer && p.Name == "admin" {
				pod.Spec.Containers[i].Ports[j].ContainerPort = int32(port)
			}
		}
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// spendStub serves /spend as a running gateway does; the test changes what it reports.
type spendStub struct {
	mu sync.Mutex
	s  controllers.GatewaySpend
}

func (g *spendStub) set(s controllers.GatewaySpend) { g.mu.Lock(); g.s = s; g.mu.Unlock() }

func (g *spendStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/spend" {
		http.NotFound(w, r)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_ = json.NewEncoder(w).Encode(g.s)
}

// TestSpendInStatus: the gateways' spend reaches status.spend and BudgetExceeded, for
// kubectl, Argo CD and auditors without Prometheus.
func TestSpendInStatus(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := minimalVoiceAgent(ns, "spender")
	va.Spec.CostLimits = &v1alpha1.CostLimits{DailyBudget: "2.00", MonthlyBudget: "100.00"}
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "spender"}, &appsv1.Deployment{})
	})
	today := time.Now().UTC()
	day, month := today.Format(time.DateOnly), today.Format("2006-01")
	stub := &spendStub{}
	stub.set(controllers.GatewaySpend{Day: day, Month: month, DayMicros: 1_500_000, MonthMicros: 40_000_000, DayTokens: 1000, MonthTokens: 9000})
	runningGatewayPod(t, ns, "spender", "spender-0", stub)

	spend := func(check func(*v1alpha1.SpendStatus) error) func() error {
		return func() error {
			got := &v1alpha1.VoiceAgent{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "spender"}, got); err != nil {
				return err
			}
			if got.Status.Spend == nil {
				return fmt.Errorf("no status.spend yet")
			}
			return check(got.Status.Spend)
		}
	}
	eventually(t, waitFor, spend(func(s *v1alpha1.SpendStatus) error {
		if s.Today != "1.500000" || s.Month != "40.000000" || s.TodayTokens != 1000 || s.DailyBudget != "2.00" || s.ReportingGateways != 1 {
			return fmt.Errorf("spend %+v", s)
		}
		return nil
	}))
	eventually(t, waitFor, conditionIs(ns, "spender", v1alpha1.ConditionBudgetExceeded, metav1.ConditionFalse, v1alpha1.ReasonWithinBudget))

	stub.set(controllers.GatewaySpend{Day: day, Month: month, DayMicros: 2_000_000, MonthMicros: 40_500_000})
	eventually(t, waitFor, conditionIs(ns, "spender", v1alpha1.ConditionBudgetExceeded, metav1.ConditionTrue, v1alpha1.ReasonDailyBudgetSpent))
	eventually(t, waitFor, spend(func(s *v1alpha1.SpendStatus) error {
		if s.Today != "2.000000" {
			return fmt.Errorf("spend %+v", s)
		}
		return nil
	}))
}

// TestSpendOfGonePodsIsFedBack: when a gateway pod is gone, its last figures are
// carried in status.spend and fed back into the gateway configuration, each replica's
// share of them counting against its budgets, so that a replacement does not start the
// day's budget again from zero.
func TestSpendOfGonePodsIsFedBack(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := minimalVoiceAgent(ns, "carry")
	va.Spec.CostLimits = &v1alpha1.CostLimits{DailyBudget: "10.00", MonthlyBudget: "100.00"}
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "carry-gateway"}, &appsv1.Deployment{})
	})
	now := time.Now().UTC()
	day, month := now.Format(time.DateOnly), now.Format("2006-01")
	stub := &spendStub{}
	stub.set(controllers.GatewaySpend{Day: day, Month: month, DayMicros: 3_000_001, MonthMicros: 7_000_000})
	runningGatewayPod(t, ns, "carry", "carry-old", stub)
	eventually(t, waitFor, func() error {
		got := getVA(t, ns, "carry")
		if s := got.Status.Spend; s == nil || s.Today != "3.000001" {
			return fmt.Errorf("spend %+v", got.Status.Spend)
		}
		return nil
	})
	// The pod is replaced: it goes, its spend is carried, and the gateway configuration
	// charges each of the 2 replicas half of it, rounded up.
	if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "carry-old"}}, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "carry-gateway"}, cm); err != nil {
			return err
		}
		cfg, err := gatewayconfig.Parse([]byte(cm.Data[gatewayconfig.FileName]))
		if err != nil {
			return err
		}
		c := cfg.Budget.Carried
		if c == nil || c.Day != day || c.DailyMicros != 1_500_001 || c.Month != month || c.MonthMicros != 3_500_000 {
			return fmt.Errorf("budget.carried %+v, want half of 3000001 and 7000000 today", c)
		}
		return nil
	})
	got := getVA(t, ns, "carry")
	if s := got.Status.Spend; s.Today != "3.000001" || s.CarriedTodayMicros != 3_000_001 {
		t.Errorf("status.spend after the pod went: %+v", s)
	}
}

// TestLimitStoreReadyFromTheGateways: with spec.limitStore, what the gateways report
// of their store becomes the LimitStoreReady condition, whose message says which
// failure policy is in force and how to fix the cause; it recovers by itself, costs no
// write at rest, and goes away with spec.limitStore. The store's credentials count in
// CredentialsReady like the others.
func TestLimitStoreReadyFromTheGateways(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := minimalVoiceAgent(ns, "shared")
	va.Spec.LimitStore = &v1alpha1.LimitStore{
		Redis: v1alpha1.RedisLimitStore{Address: "redis.limits.svc:6379",
			Username: ptr.To(secretRef("redis-acl", "username")), Credentials: ptr.To(secretRef("redis-acl", "password"))},
		FailurePolicy: v1alpha1.LimitStoreFailClosed,
	}
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, conditionIs(ns, "shared", v1alpha1.ConditionCredentialsReady, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound))
	if c := meta.FindStatusCondition(getVA(t, ns, "shared").Status.Conditions, v1alpha1.ConditionCredentialsReady); !strings.Contains(c.Message, "redis-acl") {
		t.Errorf("CredentialsReady %q does not name the limit store's Secret", c.Message)
	}
	createSecret(t, ns, "redis-acl", "password", "x")
	eventually(t, waitFor, conditionIs(ns, "shared", v1alpha1.ConditionCredentialsReady, metav1.ConditionTrue, v1alpha1.ReasonCredentialsSynced))

	day := time.Now().UTC().Format(time.DateOnly)
	report := func(ls *controllers.GatewayLimitStore) controllers.GatewaySpend {
		return controllers.GatewaySpend{Day: day, Month: day[:7], LimitStore: ls}
	}
	stub := &spendStub{}
	stub.set(report(&controllers.GatewayLimitStore{State: controllers.LimitStoreStateReady, Reason: v1alpha1.ReasonConnected}))
	runningGatewayPod(t, ns, "shared", "shared-gw-0", stub)
	eventually(t, waitFor, conditionIs(ns, "shared", v1alpha1.ConditionLimitStoreReady, metav1.ConditionTrue, v1alpha1.ReasonConnected))

	// A wrong password: False, FailClosed's 503 and the Secret to check.
	stub.set(report(&controllers.GatewayLimitStore{State: controllers.LimitStoreStateUnavailable, Reason: v1alpha1.ReasonAuthenticationFailed,
		Message: "WRONGPASS invalid username-password pair", FallbackCalls: 3}))
	eventually(t, waitFor, conditionIs(ns, "shared", v1alpha1.ConditionLimitStoreReady, metav1.ConditionFalse, v1alpha1.ReasonAuthenticationFailed))
	c := meta.FindStatusCondition(getVA(t, ns, "shared").Status.Conditions, v1alpha1.ConditionLimitStoreReady)
	for _, want := range []string{"shared-gw-0", "redis.limits.svc:6379", "FailClosed", "503", "spec.limitStore.redis.credentials", "Secret redis-acl"} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("LimitStoreReady message %q lacks %q", c.Message, want)
		}
	}
	// At rest (the same report, interval after interval), no write.
	rv := getVA(t, ns, "shared").ResourceVersion
	time.Sleep(2500 * time.Millisecond) // five collector intervals
	if got := getVA(t, ns, "shared").ResourceVersion; got != rv {
		t.Errorf("the VoiceAgent was written at rest: resourceVersion %s, then %s", rv, got)
	}

	// The store comes back: True again, by itself.
	stub.set(report(&controllers.GatewayLimitStore{State: controllers.LimitStoreStateReady, Reason: v1alpha1.ReasonConnected, FallbackCalls: 3}))
	eventually(t, waitFor, conditionIs(ns, "shared", v1alpha1.ConditionLimitStoreReady, metav1.ConditionTrue, v1alpha1.ReasonConnected))

	// FailOpen: unreachable, and the shares are in force.
	cur := getVA(t, ns, "shared")
	cur.Spec.LimitStore.FailurePolicy = v1alpha1.LimitStoreFailOpen
	if err := k8s.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	stub.set(report(&controllers.GatewayLimitStore{State: controllers.LimitStoreStateUnavailable, Reason: v1alpha1.ReasonUnreachable,
		Message: "the store cannot be reached (timeout)"}))
	eventually(t, waitFor, conditionIs(ns, "shared", v1alpha1.ConditionLimitStoreReady, metav1.ConditionFalse, v1alpha1.ReasonUnreachable))
	c = meta.FindStatusCondition(getVA(t, ns, "shared").Status.Conditions, v1alpha1.ConditionLimitStoreReady)
	if !strings.Contains(c.Message, "FailOpen") || !strings.Contains(c.Message, "each gateway replica's share") {
		t.Errorf("LimitStoreReady message %q does not say the shares are in force", c.Message)
	}

	// Without spec.limitStore the condition goes.
	cur = getVA(t, ns, "shared")
	cur.Spec.LimitStore = nil
	if err := k8s.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	stub.set(report(nil))
	eventually(t, waitFor, func() error {
		if c := meta.FindStatusCondition(getVA(t, ns, "shared").Status.Conditions, v1alpha1.ConditionLimitStoreReady); c != nil {
			return fmt.Errorf("LimitStoreReady still there: %+v", c)
		}
		return nil
	})
}
