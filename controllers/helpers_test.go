package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

const waitFor = 20 * time.Second

var ctx = context.Background()

func createSecret(t *testing.T, ns, name, key, value string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: map[string]string{key: value}}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
}

func secretRef(name, key string) v1alpha1.CredentialSource {
	return v1alpha1.CredentialSource{SecretRef: &v1alpha1.SecretKeyReference{Name: name, Key: key}}
}

func externalRef(key string) *v1alpha1.CredentialSource {
	return &v1alpha1.CredentialSource{ExternalSecret: &v1alpha1.ExternalSecretSource{
		StoreRef:  v1alpha1.SecretStoreReference{Kind: v1alpha1.SecretStoreKindCluster, Name: "vault"},
		RemoteRef: v1alpha1.RemoteReference{Key: key, Property: "api_key"},
	}}
}

func minimalVoiceAgent(ns, name string) *v1alpha1.VoiceAgent {
	return &v1alpha1.VoiceAgent{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.VoiceAgentSpec{
			Image: "registry.example.com/acme/agent:1.0",
			Model: v1alpha1.ModelSpec{ModelTarget: v1alpha1.ModelTarget{
				Provider: v1alpha1.ProviderGemini, Name: "gemini-2.5-flash", Credentials: secretRef("gemini-key", "api-key"),
			}},
		},
	}
}

func getVA(t *testing.T, ns, name string) *v1alpha1.VoiceAgent {
	t.Helper()
	va := &v1alpha1.VoiceAgent{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, va); err != nil {
		t.Fatal(err)
	}
	return va
}

// conditionIs checks one condition's status and reason, for the current generation.
func conditionIs(ns, name, typ string, status metav1.ConditionStatus, reason string) func() error {
	return conditionOn(k8s, ns, name, typ, status, reason)
}

func conditionOn(c client.Client, ns, name, typ string, status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		va := &v1alpha1.VoiceAgent{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, va); err != nil {
			return err
		}
		c := meta.FindStatusCondition(va.Status.Conditions, typ)
		if c == nil {
			return fmt.Errorf("no %s condition yet", typ)
		}
		if c.Status != status || (reason != "" && c.Reason != reason) || c.ObservedGeneration != va.Generation {
			return fmt.Errorf("%s is %s/%s (gen %d of %d): %s", typ, c.Status, c.Reason, c.ObservedGeneration, va.Generation, c.Message)
		}
		return nil
	}
}

func exists(obj client.Object) func() error {
	return func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj) }
}

func gone(obj client.Object) func() error {
	return func() error {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if err == nil {
			return fmt.Errorf("%s %s still exists", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName())
		}
		return client.IgnoreNotFound(err)
	}
}

func unstructuredKey(gvk schema.GroupVersionKind, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// markDeploymentAvailable plays the Deployment controller, which envtest does not run
// (the kwok end-to-end suite uses the real one).
// It repeats until the VoiceAgent reports Available, since the operator may bump the
// Deployment's generation meanwhile.
func markDeploymentAvailable(t *testing.T, ns, name string) {
	t.Helper()
	isAvailable := conditionIs(ns, name, v1alpha1.ConditionAvailable, metav1.ConditionTrue, "")
	eventually(t, waitFor, func() error {
		if isAvailable() == nil {
			return nil
		}
		// Both workloads: the agent's and the gateway's.
		for _, n := range []string{name, name + "-gateway"} {
			dep := &appsv1.Deployment{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: n}, dep); err != nil {
				return err
			}
			r := ptr.Deref(dep.Spec.Replicas, 1)
			dep.Status = appsv1.DeploymentStatus{
				ObservedGeneration: dep.Generation, Replicas: r, ReadyReplicas: r, AvailableReplicas: r, UpdatedReplicas: r,
				Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
					Reason: "MinimumReplicasAvailable", LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
			}
			if err := k8s.Status().Update(ctx, dep); err != nil {
				return err
			}
		}
		return isAvailable()
	})
}

// setReadyStatus plays cert-manager or External Secrets by writing a Ready condition.
func setReadyStatus(t *testing.T, u *unstructured.Unstructured, extra map[string]any) {
	t.Helper()
	eventually(t, waitFor, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(u), u); err != nil {
			return err
		}
		status := map[string]any{"conditions": []any{map[string]any{
			"type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		}}}
		for k, v := range extra {
			status[k] = v
		}
		u.Object["status"] = status
		return k8s.Status().Update(ctx, u)
	})
}

// counterValue reads one series of a counter from controller-runtime's metrics registry,
// which the manager serves on /metrics; 0 when the series does not exist yet.
func counterValue(t *testing.T, name, label, value string) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	return meta.FindStatusCondition(conds, typ)
}
