package controllers

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// TestJustCreatedDeploymentReadsAsCreated: the status a reconcile writes right after
// creating a Deployment its cache does not show yet must be the one the next
// reconcile computes once the cache has it; otherwise every new VoiceAgent costs a
// second status write after it converged (seen at N=1000 as 501 writes "at rest").
// A fake client stands in for the cache here: only its Get's NotFound matters.
func TestJustCreatedDeploymentReadsAsCreated(t *testing.T) {
	ctx := context.Background()
	lagging := &VoiceAgentReconciler{Client: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build()}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-gateway"}}
	caughtUp := &VoiceAgentReconciler{Client: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(dep).Build()}

	created := &observed{created: map[string]bool{"Deployment/a-gateway": true}}
	gotState, got := lagging.deploymentAvailable(ctx, created, "ns", "a-gateway", 2, "gateway")
	wantState, want := caughtUp.deploymentAvailable(ctx, &observed{}, "ns", "a-gateway", 2, "gateway")
	if got != want || gotState != wantState {
		t.Errorf("just created, not in the cache yet: %+v %q; in the cache with no status: %+v %q; want them equal", gotState, got, wantState, want)
	}
	if _, msg := lagging.deploymentAvailable(ctx, &observed{}, "ns", "a-gateway", 2, "gateway"); msg == want {
		t.Errorf("a Deployment neither created by this reconcile nor in the cache reads %q, as one that exists", msg)
	}

	es, err := lagging.getUnstructured(ctx, &observed{created: map[string]bool{"ExternalSecret/k": true}}, render.ExternalSecretGVK, "ns", "k")
	if err != nil {
		t.Fatalf("an ExternalSecret this reconcile created reads as %v, want it with no status", err)
	}
	if ok, msg := readyCondition(es); ok || msg != "no Ready condition yet" {
		t.Errorf("just created ExternalSecret: ready %v, %q; want false, %q", ok, msg, "no Ready condition yet")
	}
}
