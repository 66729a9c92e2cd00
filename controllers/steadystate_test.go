package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/controllers"
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
	r := &controllers.VoiceAgentReconciler{Client: countingClient(&n), GatewayImage: testImage}
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
	for i := 0; i < 5; i++ {
		if _, err := r.Reconcile(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if w := n.Load(); w != 0 {
		t.Errorf("5 steady-state reconciles made %d writes, want 0", w)
	}
	t.Logf("steady state: 5 reconciles, %d writes through the client; manager-wide write requests before %d after %d", n.Load(), before, writes.Load())
}
