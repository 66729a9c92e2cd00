package controllers

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// TestJustAppliedReadsAsTheApplyAnswered: the status a reconcile writes right after
// applying a child its cache does not show yet must be the one a reconcile computes
// once the cache has that very object; otherwise every new VoiceAgent costs a second
// status write after it converged (seen at N=1000 as 501 writes "at rest"), and the
// child's create event, which starts no reconcile (ownApplies), would leave the status
// stale. That holds for a fresh child (no status), for one the apply found at the API
// server with status (a label stripped took it out of the cache), and for one the
// apply changed while the cache still shows it as it was.
// A fake client stands in for the cache here: only its Get's NotFound matters.
func TestJustAppliedReadsAsTheApplyAnswered(t *testing.T) {
	ctx := context.Background()
	lagging := &VoiceAgentReconciler{Client: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build()}
	fresh := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-gateway", Generation: 1}}
	running := fresh.DeepCopy()
	running.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, ReadyReplicas: 2,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}}

	for _, dep := range []*appsv1.Deployment{fresh, running} {
		answer, err := runtime.DefaultUnstructuredConverter.ToUnstructured(dep)
		if err != nil {
			t.Fatal(err)
		}
		created := &observed{applied: map[string]*unstructured.Unstructured{"Deployment/a-gateway": {Object: answer}}}
		caughtUp := &VoiceAgentReconciler{Client: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(dep.DeepCopy()).Build()}
		gotState, got := lagging.deploymentAvailable(ctx, created, "ns", "a-gateway", 2, "gateway")
		wantState, want := caughtUp.deploymentAvailable(ctx, &observed{}, "ns", "a-gateway", 2, "gateway")
		if got != want || gotState != wantState {
			t.Errorf("available %v: just created, not in the cache yet: %+v %q; in the cache: %+v %q; want them equal",
				wantState.available, gotState, got, wantState, want)
		}
	}
	// Applied over an available Deployment (a new generation): what the apply answered
	// wins over the cache, which still shows the old generation available.
	updated := running.DeepCopy()
	updated.Generation = 2
	answer, err := runtime.DefaultUnstructuredConverter.ToUnstructured(updated)
	if err != nil {
		t.Fatal(err)
	}
	behind := &VoiceAgentReconciler{Client: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(running.DeepCopy()).Build()}
	if st, msg := behind.deploymentAvailable(ctx, &observed{applied: map[string]*unstructured.Unstructured{"Deployment/a-gateway": {Object: answer}}}, "ns", "a-gateway", 2, "gateway"); st.available {
		t.Errorf("a Deployment applied at generation 2, not yet observed by its controller, reads available (%q): the cache's generation 1 was read instead of the answer", msg)
	}
	if _, msg := lagging.deploymentAvailable(ctx, &observed{}, "ns", "a-gateway", 2, "gateway"); !strings.Contains(msg, "not created yet") {
		t.Errorf("a Deployment neither created by this reconcile nor in the cache reads %q, want it not created yet", msg)
	}

	es := &unstructured.Unstructured{}
	es.SetGroupVersionKind(render.ExternalSecretGVK)
	es.SetNamespace("ns")
	es.SetName("k")
	ready := es.DeepCopy()
	_ = unstructured.SetNestedSlice(ready.Object, []any{map[string]any{"type": "Ready", "status": "True", "message": "synced"}}, "status", "conditions")
	for _, c := range []struct {
		answer    *unstructured.Unstructured
		wantReady bool
		wantMsg   string
	}{{es, false, "no Ready condition yet"}, {ready, true, "synced"}} {
		got, err := lagging.getUnstructured(ctx, &observed{applied: map[string]*unstructured.Unstructured{"ExternalSecret/k": c.answer}}, render.ExternalSecretGVK, "ns", "k")
		if err != nil {
			t.Fatalf("an ExternalSecret this reconcile created reads as %v, want it as the apply answered", err)
		}
		if ok, msg := readyCondition(got); ok != c.wantReady || msg != c.wantMsg {
			t.Errorf("just created ExternalSecret: ready %v, %q; want %v, %q", ok, msg, c.wantReady, c.wantMsg)
		}
	}
}
