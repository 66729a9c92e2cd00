package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// A child a VoiceAgent controls starts no reconcile by being created (its creator just
// ran); anything else's create, and every other event of a child, still does.
func TestNotCreatedByVoiceAgent(t *testing.T) {
	ref := func(apiVersion, kind string, controller bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: "a", UID: "u", Controller: ptr.To(controller)}}
	}
	vaVersion := v1alpha1.GroupVersion.String()
	for _, c := range []struct {
		name   string
		owners []metav1.OwnerReference
		want   bool
	}{
		{"controlled by a VoiceAgent", ref(vaVersion, "VoiceAgent", true), false},
		{"no owner (a Secret the spec references)", nil, true},
		{"owned by a VoiceAgent, not as controller", ref(vaVersion, "VoiceAgent", false), true},
		{"controlled by another kind", ref("apps/v1", "Deployment", true), true},
		{"a VoiceAgent kind of another group", ref("example.com/v1", "VoiceAgent", true), true},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns", OwnerReferences: c.owners}}
		if got := notCreatedByVoiceAgent.Create(event.CreateEvent{Object: s}); got != c.want {
			t.Errorf("%s: create passes = %v, want %v", c.name, got, c.want)
		}
		if !notCreatedByVoiceAgent.Update(event.UpdateEvent{ObjectOld: s, ObjectNew: s}) || !notCreatedByVoiceAgent.Delete(event.DeleteEvent{Object: s}) {
			t.Errorf("%s: an update or a delete was dropped", c.name)
		}
	}
}
