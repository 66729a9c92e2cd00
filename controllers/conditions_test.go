package controllers

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// TestStatusHelpersBehaveAlikeForBothKinds runs the one set of status helpers on a
// VoiceAgent and on an AuditSink: a condition carries the object's generation, setting
// it again as it was keeps its transition time, status is written with observedGeneration
// and only when it changed.
func TestStatusHelpersBehaveAlikeForBothKinds(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	meta := metav1.ObjectMeta{Namespace: "ns", Name: "x", Generation: 3}
	t.Run("VoiceAgent", func(t *testing.T) {
		va := &v1alpha1.VoiceAgent{ObjectMeta: meta}
		checkStatusHelpers(t, scheme, va, func() []metav1.Condition { return va.Status.Conditions },
			func() int64 { return va.Status.ObservedGeneration })
	})
	t.Run("AuditSink", func(t *testing.T) {
		sink := &v1alpha1.AuditSink{ObjectMeta: meta}
		checkStatusHelpers(t, scheme, sink, func() []metav1.Condition { return sink.Status.Conditions },
			func() int64 { return sink.Status.ObservedGeneration })
	})
}

func checkStatusHelpers[T reconciled](t *testing.T, scheme *runtime.Scheme, obj T, conds func() []metav1.Condition, observed func() int64) {
	ctx := context.Background()
	patches := 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(obj).WithStatusSubresource(obj).
		WithInterceptorFuncs(interceptor.Funcs{SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			patches++
			return c.SubResource(sub).Patch(ctx, o, p, opts...)
		}}).Build()
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	reconcile := func(ok bool, reason string) {
		t.Helper()
		before := obj.DeepCopyObject().(T)
		setCondition(obj, v1alpha1.ConditionReady, ok, reason, "message for "+reason)
		if err := writeStatus(ctx, c, obj, before); err != nil {
			t.Fatal(err)
		}
	}

	reconcile(false, v1alpha1.ReasonSecretNotFound)
	got := meta.FindStatusCondition(conds(), v1alpha1.ConditionReady)
	if got == nil || got.Status != metav1.ConditionFalse || got.Reason != v1alpha1.ReasonSecretNotFound ||
		got.Message != "message for SecretNotFound" || got.ObservedGeneration != 3 {
		t.Fatalf("condition %+v, want Ready False SecretNotFound for generation 3", got)
	}
	if observed() != 3 || patches != 1 {
		t.Fatalf("observedGeneration %d after %d writes, want 3 after 1", observed(), patches)
	}
	// As if the condition had turned False an hour ago (transition times have second
	// resolution, and a test must not sleep to see one change).
	since := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	(*statusOf(obj).conditions)[0].LastTransitionTime = since

	reconcile(false, v1alpha1.ReasonSecretNotFound) // nothing changed: no write
	if got := meta.FindStatusCondition(conds(), v1alpha1.ConditionReady); patches != 1 || !got.LastTransitionTime.Equal(&since) {
		t.Errorf("an unchanged reconcile: %d writes (want still 1), transition time %v (want kept %v)", patches, got.LastTransitionTime, since)
	}

	reconcile(true, v1alpha1.ReasonSinkConfigured)
	got = meta.FindStatusCondition(conds(), v1alpha1.ConditionReady)
	if got.Status != metav1.ConditionTrue || !got.LastTransitionTime.After(since.Time) || patches != 2 {
		t.Errorf("after the change: %+v, %d writes; want True with a new transition time, 2 writes", got, patches)
	}
	stored := obj.DeepCopyObject().(T)
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), stored); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(statusConditions(stored), v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("stored condition %+v, want Ready True", c)
	}
}

func statusConditions[T reconciled](obj T) []metav1.Condition { return *statusOf(obj).conditions }
