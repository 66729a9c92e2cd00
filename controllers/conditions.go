package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// reconciled are the kinds whose status the reconcilers write. Both reconcilers set
// conditions and write status through the helpers below, so that both follow the same
// rules: every condition carries the generation it describes, status carries
// observedGeneration, and status is written once per reconcile, only when it changed.
type reconciled interface {
	*v1alpha1.VoiceAgent | *v1alpha1.AuditSink
	client.Object
}

// objectStatus is what the helpers work on in a VoiceAgent's or an AuditSink's status.
type objectStatus struct {
	kind               string
	conditions         *[]metav1.Condition
	observedGeneration *int64
	whole              any // the whole status, compared before writing
}

func statusOf[T reconciled](obj T) objectStatus {
	switch o := any(obj).(type) {
	case *v1alpha1.VoiceAgent:
		return objectStatus{"VoiceAgent", &o.Status.Conditions, &o.Status.ObservedGeneration, &o.Status}
	case *v1alpha1.AuditSink:
		return objectStatus{"AuditSink", &o.Status.Conditions, &o.Status.ObservedGeneration, &o.Status}
	}
	panic(fmt.Sprintf("no status helpers for %T", obj)) // the type set above allows no other
}

// setCondition sets one condition with the object's generation. The transition time
// changes only when the status does, so a condition set again as it was is no write.
func setCondition[T reconciled](obj T, typ string, ok bool, reason, message string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(statusOf(obj).conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: obj.GetGeneration(),
	})
}

// writeStatus writes obj's status once, and only when it differs from before (obj as the
// reconcile read it), with observedGeneration set. A merge patch carries no
// resourceVersion: status is ours alone, so a stale cache cannot cause a conflict loop.
func writeStatus[T reconciled](ctx context.Context, c client.Client, obj, before T) error {
	st := statusOf(obj)
	*st.observedGeneration = obj.GetGeneration()
	if equality.Semantic.DeepEqual(statusOf(before).whole, st.whole) {
		return nil
	}
	if err := c.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("update status of %s %s/%s: %w", st.kind, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}
