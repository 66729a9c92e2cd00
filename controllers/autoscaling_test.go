package controllers_test

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

func autoscaledVoiceAgent(ns, name string) *v1alpha1.VoiceAgent {
	va := minimalVoiceAgent(ns, name)
	va.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 2, MaxReplicas: 6, TargetActiveSessionsPerReplica: 8}
	return va
}

func agentReplicas(c client.Client, ns, name string) (int32, error) {
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		return 0, err
	}
	return ptr.Deref(d.Spec.Replicas, 1), nil
}

func replicasAre(c client.Client, ns, name string, want int32) func() error {
	return func() error {
		got, err := agentReplicas(c, ns, name)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("agent Deployment has %d replicas, want %d", got, want)
		}
		return nil
	}
}

// TestAutoscalingWithKEDA: with KEDA's real CRD, spec.autoscaling renders a
// ScaledObject on the sessions in progress; the agent Deployment starts at the minimum,
// an autoscaler's changes to replicas are not reverted by later reconciles, and turning
// autoscaling off prunes the ScaledObject and gives the count back to spec.replicas.
func TestAutoscalingWithKEDA(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	if err := k8s.Create(ctx, autoscaledVoiceAgent(ns, "scaled")); err != nil {
		t.Fatal(err)
	}
	so := unstructuredKey(render.ScaledObjectGVK, ns, "scaled")
	eventually(t, waitFor, exists(so))
	if th, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers"); len(th) != 1 ||
		th[0].(map[string]any)["metadata"].(map[string]any)["threshold"] != "8" {
		t.Errorf("triggers %v", th)
	}
	eventually(t, waitFor, conditionIs(ns, "scaled", v1alpha1.ConditionAutoscaling, metav1.ConditionTrue, v1alpha1.ReasonScalingOnSessions))
	eventually(t, waitFor, replicasAre(k8s, ns, "scaled", 2))

	// The autoscaler (KEDA's HPA) scales through the scale subresource.
	scale := &autoscalingv1.Scale{}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "scaled"}}
	eventually(t, waitFor, func() error {
		if err := k8s.SubResource("scale").Get(ctx, dep, scale); err != nil {
			return err
		}
		scale.Spec.Replicas = 5
		return k8s.SubResource("scale").Update(ctx, dep, client.WithSubResourceBody(scale), client.FieldOwner("horizontal-pod-autoscaler"))
	})
	// A spec change makes the operator apply the Deployment again: the count stays.
	eventually(t, waitFor, func() error {
		va := getVA(t, ns, "scaled")
		va.Spec.Env = []v1alpha1.EnvVar{{Name: "GREETING", Value: "hello"}}
		return k8s.Update(ctx, va)
	})
	eventually(t, waitFor, func() error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(dep), d); err != nil {
			return err
		}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "GREETING" {
				return nil
			}
		}
		return fmt.Errorf("the spec change is not applied yet")
	})
	eventually(t, waitFor, conditionIs(ns, "scaled", v1alpha1.ConditionAutoscaling, metav1.ConditionTrue, v1alpha1.ReasonScalingOnSessions))
	if err := replicasAre(k8s, ns, "scaled", 5)(); err != nil {
		t.Errorf("after a reconcile: %v (the operator reverted the autoscaler)", err)
	}

	// Off again: the ScaledObject goes and spec.replicas is in force.
	eventually(t, waitFor, func() error {
		va := getVA(t, ns, "scaled")
		va.Spec.Autoscaling = nil
		va.Spec.Replicas = ptr.To[int32](3)
		return k8s.Update(ctx, va)
	})
	eventually(t, waitFor, gone(so))
	eventually(t, waitFor, replicasAre(k8s, ns, "scaled", 3))
	eventually(t, waitFor, conditionIs(ns, "scaled", v1alpha1.ConditionAutoscaling, metav1.ConditionFalse, v1alpha1.ReasonAutoscalingNotRequested))
}

// TestAutoscalingFromFixedReplicasKeepsTheCount: turning autoscaling on for a running
// VoiceAgent hands the count over at its current value; it never drops to 1.
func TestAutoscalingFromFixedReplicasKeepsTheCount(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := minimalVoiceAgent(ns, "handoff")
	va.Spec.Replicas = ptr.To[int32](4)
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, replicasAre(k8s, ns, "handoff", 4))
	eventually(t, waitFor, func() error {
		cur := getVA(t, ns, "handoff")
		cur.Spec.Replicas = nil
		cur.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 2, MaxReplicas: 6, TargetActiveSessionsPerReplica: 8}
		return k8s.Update(ctx, cur)
	})
	eventually(t, waitFor, exists(unstructuredKey(render.ScaledObjectGVK, ns, "handoff")))
	eventually(t, waitFor, func() error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "handoff"}, d); err != nil {
			return err
		}
		if render.OwnsField(d.ManagedFields, render.FieldOwner, "f:spec", "f:replicas") {
			return fmt.Errorf("the operator still owns spec.replicas")
		}
		return nil
	})
	if err := replicasAre(k8s, ns, "handoff", 4)(); err != nil {
		t.Error(err)
	}
}

// TestAutoscalingWithoutKEDA runs an API server without KEDA's CRD: spec.autoscaling
// gets an HPA on CPU and a condition that says scaling on calls needs KEDA; once the
// CRD is installed the VoiceAgent switches to a ScaledObject by itself.
func TestAutoscalingWithoutKEDA(t *testing.T) {
	c, cfg := bareClusterWithManager(t)
	if err := c.Create(ctx, autoscaledVoiceAgent("default", "cpu")); err != nil {
		t.Fatal(err)
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cpu"}}
	eventually(t, waitFor, func() error { return c.Get(ctx, client.ObjectKeyFromObject(hpa), hpa) })
	if hpa.Spec.MaxReplicas != 6 || ptr.Deref(hpa.Spec.MinReplicas, 0) != 2 || hpa.Spec.ScaleTargetRef.Name != "cpu" {
		t.Errorf("HPA spec %+v", hpa.Spec)
	}
	eventually(t, waitFor, conditionOn(c, "default", "cpu", v1alpha1.ConditionAutoscaling, metav1.ConditionTrue, v1alpha1.ReasonScalingOnCPU))

	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{repoPath("bin", "crds", "keda")}}); err != nil {
		t.Fatal(err)
	}
	so := unstructuredKey(render.ScaledObjectGVK, "default", "cpu")
	eventually(t, waitFor, func() error { return c.Get(ctx, client.ObjectKeyFromObject(so), so) })
	eventually(t, waitFor, func() error {
		err := c.Get(ctx, client.ObjectKeyFromObject(hpa), &autoscalingv2.HorizontalPodAutoscaler{})
		if err == nil {
			return fmt.Errorf("the HPA is still there beside the ScaledObject")
		}
		return client.IgnoreNotFound(err)
	})
	eventually(t, waitFor, conditionOn(c, "default", "cpu", v1alpha1.ConditionAutoscaling, metav1.ConditionTrue, v1alpha1.ReasonScalingOnSessions))
}
