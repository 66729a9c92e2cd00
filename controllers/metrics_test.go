package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

func TestCountConditions(t *testing.T) {
	va := func(conds ...metav1.Condition) v1alpha1.VoiceAgent {
		return v1alpha1.VoiceAgent{Status: v1alpha1.VoiceAgentStatus{Conditions: conds}}
	}
	got := countConditions([]v1alpha1.VoiceAgent{
		va(metav1.Condition{Type: "Ready", Status: "True"}, metav1.Condition{Type: "AuditReady", Status: "True"}),
		va(metav1.Condition{Type: "Ready", Status: "False"}),
		va(),
	})
	if got["Ready"]["True"] != 1 || got["Ready"]["False"] != 1 || got["Ready"]["Unknown"] != 1 {
		t.Errorf("Ready: %v", got["Ready"])
	}
	if got["AuditReady"]["True"] != 1 || got["AuditReady"]["Unknown"] != 2 {
		t.Errorf("AuditReady: %v", got["AuditReady"])
	}
	if got["Available"]["Unknown"] != 3 || got["Available"]["True"] != 0 {
		t.Errorf("Available: %v", got["Available"])
	}
}

// TestConditionCollectorFollowsTheRunningManagers: the collector counts from the newest
// manager that runs, goes back to the one before when that stops, and reports nothing
// (rather than reading a stopped cache) when none runs.
func TestConditionCollectorFollowsTheRunningManagers(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cluster := func(n int) client.Reader {
		b := fake.NewClientBuilder().WithScheme(scheme)
		for i := range n {
			b = b.WithObjects(&v1alpha1.VoiceAgent{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprint("va-", i)}})
		}
		return b.Build()
	}
	c := newVoiceAgentConditionCollector()
	counted := func() int {
		ch := make(chan prometheus.Metric, 100)
		c.Collect(ch)
		close(ch)
		n := 0
		for m := range ch {
			var out dto.Metric
			if err := m.Write(&out); err != nil {
				t.Fatal(err)
			}
			for _, l := range out.GetLabel() {
				if l.GetName() == "condition" && l.GetValue() == v1alpha1.ConditionReady {
					n += int(out.GetGauge().GetValue())
				}
			}
		}
		return n
	}
	wait := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for counted() != want {
			if time.Now().After(deadline) {
				t.Fatalf("collector counts %d VoiceAgents, want %d", counted(), want)
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}
	run := func(r client.Reader) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		s := &conditionSource{collector: c, reader: r}
		go func() { defer close(done); _ = s.Start(ctx) }()
		return func() { cancel(); <-done }
	}
	if counted() != 0 {
		t.Fatal("counted VoiceAgents with no manager running")
	}
	stopFirst := run(cluster(2))
	wait(2)
	stopSecond := run(cluster(3))
	wait(3)
	stopSecond()
	wait(2)
	stopFirst()
	wait(0)
}
