package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// TestNextSpend: the VoiceAgent's spend is the sum of its gateways', never falls back
// when a pod is replaced (its last figures are carried), and starts again with a new
// UTC day or month.
func TestNextSpend(t *testing.T) {
	day1 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	report := func(day string, d, m int64) *GatewaySpend {
		return &GatewaySpend{Day: day, Month: day[:7], DayMicros: d, MonthMicros: m, DayTokens: d / 10, MonthTokens: m / 10}
	}
	// Two pods report.
	s := nextSpend(nil, map[string]*GatewaySpend{"a": report("2026-12-01", 1_000_000, 5_000_000), "b": report("2026-12-01", 2_000_000, 2_000_000)},
		map[string]bool{"a": true, "b": true}, day1)
	if s.Today != "3.000000" || s.Month != "7.000000" || s.ReportingGateways != 2 || s.TodayTokens != 300000 {
		t.Fatalf("first: %+v", s)
	}
	// Pod a is replaced by c, which starts at zero: the total does not fall back.
	s = nextSpend(s, map[string]*GatewaySpend{"b": report("2026-12-01", 2_500_000, 2_500_000), "c": report("2026-12-01", 100_000, 100_000)},
		map[string]bool{"b": true, "c": true}, day1.Add(time.Minute))
	if s.Today != "3.600000" || s.Month != "7.600000" || s.CarriedTodayMicros != 1_000_000 || len(s.Pods) != 2 {
		t.Fatalf("after a rollout: %+v", s)
	}
	// A pod that does not answer for a while keeps its last figures.
	s = nextSpend(s, map[string]*GatewaySpend{"c": report("2026-12-01", 200_000, 200_000)},
		map[string]bool{"b": true, "c": true}, day1.Add(2*time.Minute))
	if s.Today != "3.700000" {
		t.Fatalf("with b silent: %+v", s)
	}
	// The next UTC day: the day starts again (the carried day too), the month does not.
	s = nextSpend(s, map[string]*GatewaySpend{"b": report("2026-12-02", 10_000, 2_510_000), "c": report("2026-12-02", 0, 200_000)},
		map[string]bool{"b": true, "c": true}, day1.Add(24*time.Hour))
	if s.Today != "0.010000" || s.Month != "7.710000" || s.Day != "2026-12-02" {
		t.Fatalf("next day: %+v", s)
	}
	// A new month starts everything again.
	s = nextSpend(s, map[string]*GatewaySpend{"b": report("2027-01-01", 1, 1)}, map[string]bool{"b": true},
		time.Date(2027, 1, 1, 0, 1, 0, 0, time.UTC))
	if s.Today != "0.000001" || s.Month != "0.000001" || s.CarriedMonthMicros != 0 {
		t.Fatalf("next month: %+v", s)
	}
	if nextSpend(nil, nil, nil, day1) != nil {
		t.Error("spend with no report ever")
	}
}

func TestBudgetCondition(t *testing.T) {
	tests := []struct {
		s      v1alpha1.SpendStatus
		want   bool
		reason string
	}{
		{v1alpha1.SpendStatus{Today: "49.999999", DailyBudget: "50.00"}, false, v1alpha1.ReasonWithinBudget},
		{v1alpha1.SpendStatus{Today: "50.000000", DailyBudget: "50.00"}, true, v1alpha1.ReasonDailyBudgetSpent},
		{v1alpha1.SpendStatus{Today: "1", Month: "1000.5", MonthlyBudget: "1000"}, true, v1alpha1.ReasonMonthlyBudgetSpent},
		{v1alpha1.SpendStatus{Today: "1000", Month: "1000"}, false, v1alpha1.ReasonWithinBudget},
	}
	for _, tt := range tests {
		if got, reason, _ := budgetCondition(&tt.s); got != tt.want || reason != tt.reason {
			t.Errorf("%+v: %v %s, want %v %s", tt.s, got, reason, tt.want, tt.reason)
		}
	}
}

// TestLimitStoreCondition: LimitStoreReady from the gateways' reports, its reason one
// of the API's, its message the policy in force and the fix.
func TestLimitStoreCondition(t *testing.T) {
	va := &v1alpha1.VoiceAgent{}
	va.Name = "shared"
	va.Spec.LimitStore = &v1alpha1.LimitStore{Redis: v1alpha1.RedisLimitStore{Address: "10.0.0.5:6379",
		Credentials: &v1alpha1.CredentialSource{ExternalSecret: &v1alpha1.ExternalSecretSource{}},
		TLS:         &v1alpha1.RedisTLS{CA: &v1alpha1.CredentialSource{SecretRef: &v1alpha1.SecretKeyReference{Name: "redis-ca", Key: "ca.crt"}}}}}
	ready := &GatewayLimitStore{State: LimitStoreStateReady, Reason: v1alpha1.ReasonConnected}
	if _, _, _, seen := limitStoreCondition(va, map[string]*GatewaySpend{"a": {}}); seen {
		t.Error("a gateway without a limit store in its report decided the condition")
	}
	ok, reason, msg, seen := limitStoreCondition(va, map[string]*GatewaySpend{"a": {LimitStore: ready}, "b": {}})
	if !seen || !ok || reason != v1alpha1.ReasonConnected || !strings.Contains(msg, "All 1 gateway pods") {
		t.Errorf("ready: %v %s %q", ok, reason, msg)
	}
	tlsFailed := &GatewayLimitStore{State: LimitStoreStateUnavailable, Reason: v1alpha1.ReasonTLSFailed, Message: strings.Repeat("x", 1000)}
	ok, reason, msg, _ = limitStoreCondition(va, map[string]*GatewaySpend{"a": {LimitStore: ready}, "c": {LimitStore: ready}, "b": {LimitStore: tlsFailed}})
	if ok || reason != v1alpha1.ReasonTLSFailed || !strings.Contains(msg, "Gateway pod b ") || !strings.Contains(msg, "Secret redis-ca, key ca.crt") ||
		!strings.Contains(msg, "FailOpen") || len(msg) > 1200 {
		t.Errorf("tls: %v %s %q", ok, reason, msg)
	}
	auth := &GatewayLimitStore{State: LimitStoreStateUnavailable, Reason: v1alpha1.ReasonAuthenticationFailed}
	_, _, msg, _ = limitStoreCondition(va, map[string]*GatewaySpend{"a": {LimitStore: auth}})
	if !strings.Contains(msg, "Secret shared-limit-store-password, synced by its ExternalSecret") {
		t.Errorf("auth: %q", msg)
	}
	odd := &GatewayLimitStore{State: "Degraded", Reason: "SomethingNew", Message: "?"}
	if _, reason, _, _ := limitStoreCondition(va, map[string]*GatewaySpend{"a": {LimitStore: odd}}); reason != v1alpha1.ReasonError {
		t.Errorf("an unknown reason became %s, want Error", reason)
	}
}
