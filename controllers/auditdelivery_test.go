package controllers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
)

// gatewayAdminStub serves /audit/status as a running gateway does; the test changes
// what it reports. The operator reads it over HTTP at the pod's IP and admin port.
type gatewayAdminStub struct {
	mu sync.Mutex
	st audit.Status
}

func (g *gatewayAdminStub) set(st audit.Status) { g.mu.Lock(); g.st = st; g.mu.Unlock() }

func (g *gatewayAdminStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/audit/status" {
		http.NotFound(w, r)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_ = json.NewEncoder(w).Encode(g.st)
}

func TestAuditSinkDeliveryStatusFromTheGateways(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	sink := &v1alpha1.AuditSink{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "siem"},
		Spec: v1alpha1.AuditSinkSpec{Type: v1alpha1.AuditSinkStdout}}
	if err := k8s.Create(ctx, sink); err != nil {
		t.Fatal(err)
	}
	va := minimalVoiceAgent(ns, "reported")
	va.Spec.Audit = &v1alpha1.AuditSpec{SinkRefs: []v1alpha1.LocalObjectReference{{Name: "siem"}}}
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, conditionIs(ns, "reported", v1alpha1.ConditionAuditReady, metav1.ConditionTrue, v1alpha1.ReasonSinksReady))

	stub := &gatewayAdminStub{}
	stale := time.Now().Add(-10 * time.Minute).UTC()
	stub.set(audit.Status{Instance: "reported-0", Sinks: []audit.SinkStatus{
		{Name: "siem", Delivered: 100, Backlog: 7, Failures: 12, LastSuccess: &stale},
		{Name: "other", Delivered: 5},
	}, Dropped: 0})
	runningGatewayPod(t, ns, "reported", "reported-0", stub)

	sinkStatus := func(check func(*v1alpha1.AuditSink) error) func() error {
		return func() error {
			s := &v1alpha1.AuditSink{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(sink), s); err != nil {
				return err
			}
			return check(s)
		}
	}
	// Seven records have waited ten minutes: the sink is failing, and so is the agent's audit.
	eventually(t, waitFor, sinkStatus(func(s *v1alpha1.AuditSink) error {
		d := s.Status.Delivery
		if d == nil || d.Backlog != 7 || d.RecordsDelivered != 100 || d.ReportingGateways != 1 {
			return fmt.Errorf("delivery %+v", d)
		}
		if d.LastSuccessfulDelivery == nil || !d.LastSuccessfulDelivery.Time.Equal(stale.Truncate(time.Second)) {
			return fmt.Errorf("lastSuccessfulDelivery %v, want %v", d.LastSuccessfulDelivery, stale)
		}
		return nil
	}))
	eventually(t, waitFor, conditionIs(ns, "reported", v1alpha1.ConditionAuditReady, metav1.ConditionFalse, v1alpha1.ReasonSinkDeliveryFailing))
	s := &v1alpha1.AuditSink{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(sink), s); err != nil {
		t.Fatal(err)
	}
	if c := findCondition(s.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != v1alpha1.ReasonDeliveryFailing {
		t.Errorf("sink Ready condition %+v, want reason %s", c, v1alpha1.ReasonDeliveryFailing)
	}

	// The receiver is back: the backlog drains, the sink and the agent recover.
	now := time.Now().UTC()
	stub.set(audit.Status{Instance: "reported-0", Sinks: []audit.SinkStatus{
		{Name: "siem", Delivered: 107, Backlog: 0, Failures: 12, LastSuccess: &now},
	}, Dropped: 2})
	eventually(t, waitFor, sinkStatus(func(s *v1alpha1.AuditSink) error {
		d := s.Status.Delivery
		if d == nil || d.Backlog != 0 || d.RecordsDelivered != 107 || d.Dropped != 2 {
			return fmt.Errorf("delivery %+v", d)
		}
		return nil
	}))
	eventually(t, waitFor, conditionIs(ns, "reported", v1alpha1.ConditionAuditReady, metav1.ConditionTrue, v1alpha1.ReasonSinksReady))
}
