package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/controllers"
	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// countingClient wraps the manager's cache-backed client and counts every write.
func countingClient(n *atomic.Int64) client.Client {
	return interceptor.NewClient(noWatch{mgrClient}, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			n.Add(1)
			return c.Create(ctx, o, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			n.Add(1)
			return c.Update(ctx, o, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			n.Add(1)
			return c.Patch(ctx, o, p, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, o runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			n.Add(1)
			return c.Apply(ctx, o, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			n.Add(1)
			return c.Delete(ctx, o, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, o client.Object, opts ...client.SubResourceUpdateOption) error {
			n.Add(1)
			return c.SubResource(sub).Update(ctx, o, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			n.Add(1)
			return c.SubResource(sub).Patch(ctx, o, p, opts...)
		},
	})
}

// noWatch adapts the manager's client to the interceptor, which wants a WithWatch.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("watch is not used by the reconciler")
}

func TestSteadyStateMakesZeroWrites(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := fullVoiceAgent(ns, "steady")
	va.Spec.Model.Credentials = secretRef("gemini-key", "api-key")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	markDeploymentAvailable(t, ns, "steady")
	eventually(t, waitFor, conditionIs(ns, "steady", v1alpha1.ConditionAvailable, metav1.ConditionTrue, ""))

	var n atomic.Int64
	r := &controllers.VoiceAgentReconciler{Client: countingClient(&n), APIReader: k8s, GatewayImage: testImage}
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(va)}
	// Converged once the operator's own reconciles have caught up with the cache.
	eventually(t, waitFor, func() error {
		n.Store(0)
		if _, err := r.Reconcile(ctx, req); err != nil {
			return err
		}
		if w := n.Load(); w != 0 {
			return fmt.Errorf("%d writes", w)
		}
		return nil
	})
	before := writes.Load()
	readsBefore := liveReadsTotal(t)
	for i := 0; i < 5; i++ {
		if _, err := r.Reconcile(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if w := n.Load(); w != 0 {
		t.Errorf("5 steady-state reconciles made %d writes, want 0", w)
	}
	// Every child's cached digest matches what the operator wants: none is read back.
	if r := liveReadsTotal(t) - readsBefore; r != 0 {
		t.Errorf("5 steady-state reconciles read %v children from the API server, want 0: a cached digest differs from the desired one", r)
	}
	t.Logf("steady state: 5 reconciles, %d writes through the client; manager-wide write requests before %d after %d", n.Load(), before, writes.Load())
}

// liveReadsTotal sums voiceagent_operator_child_live_reads_total over its kinds.
func liveReadsTotal(t *testing.T) float64 {
	t.Helper()
	var total float64
	for _, kind := range []string{"ServiceAccount", "ConfigMap", "Service", "NetworkPolicy", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"} {
		total += counterValue(t, "voiceagent_operator_child_live_reads_total", "kind", kind)
	}
	return total
}

// TestRestartedManagerWritesNothing: a manager started over converged children fills
// its cache from a list, not from the watch events of its own applies, and must find
// every child as it wants it, without a read or a write.
func TestRestartedManagerWritesNothing(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := fullVoiceAgent(ns, "restarted")
	va.Spec.Model.Credentials = secretRef("gemini-key", "api-key")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	markDeploymentAvailable(t, ns, "restarted")
	eventually(t, waitFor, conditionIs(ns, "restarted", v1alpha1.ConditionAvailable, metav1.ConditionTrue, ""))
	var n atomic.Int64
	first := &controllers.VoiceAgentReconciler{Client: countingClient(&n), APIReader: k8s, GatewayImage: testImage}
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(va)}
	eventually(t, waitFor, func() error {
		n.Store(0)
		if _, err := first.Reconcile(ctx, req); err != nil {
			return err
		}
		if w := n.Load(); w != 0 {
			return fmt.Errorf("%d writes", w)
		}
		return nil
	})

	mgr, err := manager.New(suiteCfg, manager.Options{MetricsAddr: "0", ProbeAddr: "0", GatewayImage: testImage, SkipNameValidation: true})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second manager: %v", err)
		}
	})
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("the second manager's cache did not sync")
	}
	var w atomic.Int64
	c := interceptor.NewClient(noWatch{mgr.GetClient()}, interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, o runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			w.Add(1)
			return c.Apply(ctx, o, opts...)
		},
	})
	second := &controllers.VoiceAgentReconciler{Client: c, APIReader: mgr.GetAPIReader(), GatewayImage: testImage}
	// The cache may still be taking in the kinds the controller's watches started.
	eventually(t, waitFor, func() error {
		w.Store(0)
		reads := liveReadsTotal(t)
		if _, err := second.Reconcile(ctx, req); err != nil {
			return err
		}
		if got, r := w.Load(), liveReadsTotal(t)-reads; got != 0 || r != 0 {
			return fmt.Errorf("%d applies, %v children read from the API server", got, r)
		}
		return nil
	})
}

// TestDigestThatKeepsMissingIsReadOnce: a child whose cached digest misses while the
// object is as the operator wants it (here its managedFields were cleared, so the
// digest finds nothing the operator owns) is read from the API server once per change
// of the object, not once per reconcile; and a later edit of that child is still seen
// and put back.
func TestDigestThatKeepsMissingIsReadOnce(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := fullVoiceAgent(ns, "unowned")
	va.Spec.Model.Credentials = secretRef("gemini-key", "api-key")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	markDeploymentAvailable(t, ns, "unowned")
	eventually(t, waitFor, conditionIs(ns, "unowned", v1alpha1.ConditionAvailable, metav1.ConditionTrue, ""))

	cmKey := client.ObjectKey{Namespace: ns, Name: render.ConfigMapName(va)}
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, cmKey, cm); err != nil {
		t.Fatal(err)
	}
	wantConfig := maps.Clone(cm.Data)
	if err := k8s.Patch(ctx, cm, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"managedFields":[{}]}}`))); err != nil {
		t.Fatal(err)
	}
	cleared := cm.ResourceVersion
	eventually(t, waitFor, func() error {
		cached := &corev1.ConfigMap{}
		if err := mgrClient.Get(ctx, cmKey, cached); err != nil {
			return err
		}
		if cached.ResourceVersion != cleared {
			return fmt.Errorf("cache at resourceVersion %s, want %s", cached.ResourceVersion, cleared)
		}
		return nil
	})

	var n atomic.Int64
	r := &controllers.VoiceAgentReconciler{Client: countingClient(&n), APIReader: k8s, GatewayImage: testImage}
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(va)}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if w := n.Load(); w != 0 {
		t.Fatalf("the first reconcile after managedFields were cleared made %d writes, want 0 (the object is as wanted)", w)
	}
	reads := liveReadsTotal(t)
	for range 5 {
		if _, err := r.Reconcile(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if w := n.Load(); w != 0 {
		t.Errorf("5 more reconciles made %d writes, want 0", w)
	}
	if got := liveReadsTotal(t) - reads; got != 0 {
		t.Errorf("5 more reconciles of an unchanged child read %v children from the API server, want 0: the first read's answer must be remembered", got)
	}

	// The child changes: the remembered answer no longer holds, and the edit is reverted.
	if err := k8s.Get(ctx, cmKey, cm); err != nil {
		t.Fatal(err)
	}
	for k := range cm.Data {
		cm.Data[k] = "{}"
	}
	if err := k8s.Update(ctx, cm, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error {
		got := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, cmKey, got); err != nil {
			return err
		}
		if !maps.Equal(got.Data, wantConfig) {
			return errors.New("the edited gateway ConfigMap was not put back")
		}
		return nil
	})
}
