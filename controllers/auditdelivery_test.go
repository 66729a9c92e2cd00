package controllers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
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

// voiceAgentWithStdoutSink creates, in a new namespace, AuditSink siem (stdout) and a
// VoiceAgent named name that uses it, and waits until its audit is ready.
func voiceAgentWithStdoutSink(t *testing.T, name string) (string, *v1alpha1.AuditSink) {
	t.Helper()
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	sink := &v1alpha1.AuditSink{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "siem"},
		Spec: v1alpha1.AuditSinkSpec{Type: v1alpha1.AuditSinkStdout}}
	if err := k8s.Create(ctx, sink); err != nil {
		t.Fatal(err)
	}
	va := minimalVoiceAgent(ns, name)
	va.Spec.Audit = &v1alpha1.AuditSpec{SinkRefs: []v1alpha1.LocalObjectReference{{Name: "siem"}}}
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, conditionIs(ns, name, v1alpha1.ConditionAuditReady, metav1.ConditionTrue, v1alpha1.ReasonSinksReady))
	return ns, sink
}

func TestAuditSinkDeliveryStatusFromTheGateways(t *testing.T) {
	ns, sink := voiceAgentWithStdoutSink(t, "reported")

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

// TestRecordsLostAtShutdownAreReported: a gateway pod that exits with records still
// undelivered says so in its termination message; the operator adds them, once, to the
// AuditSink's status.delivery.recordsLostOnShutdown, counts them in a metric and tells
// the VoiceAgent's readers in an Event.
func TestRecordsLostAtShutdownAreReported(t *testing.T) {
	ns, sink := voiceAgentWithStdoutSink(t, "lossy")
	stub := &gatewayAdminStub{}
	stub.set(audit.Status{Instance: "lossy-0", Sinks: []audit.SinkStatus{{Name: "siem", Delivered: 3}}})
	runningGatewayPod(t, ns, "lossy", "lossy-0", stub)
	before := counterValue(t, "voiceagent_operator_audit_records_lost_on_shutdown_total", "namespace", ns)

	// The kubelet's view of the gateway container after it exited.
	terminate := func() {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "lossy-0"}, pod); err != nil {
			t.Fatal(err)
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: render.GatewayContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: `{"auditRecordsLost":{"siem":7}}`,
				StartedAt: metav1.NewTime(time.Now().Add(-time.Hour)), FinishedAt: metav1.NewTime(time.Now().Add(time.Second))},
		}}}
		if err := k8s.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	terminate()
	lost := func() int64 {
		s := &v1alpha1.AuditSink{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(sink), s); err != nil || s.Status.Delivery == nil {
			return -1
		}
		return s.Status.Delivery.RecordsLostOnShutdown
	}
	eventually(t, waitFor, func() error {
		if n := lost(); n != 7 {
			return fmt.Errorf("recordsLostOnShutdown %d, want 7", n)
		}
		return nil
	})
	if got := counterValue(t, "voiceagent_operator_audit_records_lost_on_shutdown_total", "namespace", ns); got != before+7 {
		t.Errorf("metric %v, want %v", got, before+7)
	}
	eventually(t, waitFor, func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "AuditRecordsLostOnShutdown" && e.Regarding.Name == "lossy" && strings.Contains(e.Note, "7 audit records") {
				return nil
			}
		}
		return fmt.Errorf("no AuditRecordsLostOnShutdown event yet")
	})
	// Seen again (another status update, a resync), the same termination counts once;
	// the count survives the next delivery polls.
	pod := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "lossy-0"}, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.Message = "touched"
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	stub.set(audit.Status{Instance: "lossy-0", Sinks: []audit.SinkStatus{{Name: "siem", Delivered: 4}}})
	eventually(t, waitFor, func() error {
		s := &v1alpha1.AuditSink{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(sink), s); err != nil {
			return err
		}
		if s.Status.Delivery == nil || s.Status.Delivery.RecordsDelivered != 4 {
			return fmt.Errorf("delivery not refreshed yet: %+v", s.Status.Delivery)
		}
		return nil
	})
	if n := lost(); n != 7 {
		t.Errorf("recordsLostOnShutdown %d after the termination was seen again, want 7", n)
	}
}
