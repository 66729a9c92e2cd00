package controllers

import (
	"context"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// Only the create event of the very object a reconcile created, at the resourceVersion
// its create returned, and controlled by the VoiceAgent it was made for, is dropped;
// every other event passes.
func TestOwnChildCreateDropsOnlyThatObject(t *testing.T) {
	creator := types.NamespacedName{Namespace: "ns", Name: "a"}
	child := func(uid, rv, controller string) *corev1.ConfigMap {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-config", UID: types.UID(uid), ResourceVersion: rv}}
		if controller != "" {
			cm.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "VoiceAgent",
				Name: controller, UID: "va", Controller: ptr.To(true)}}
		}
		return cm
	}
	for _, c := range []struct {
		name     string
		recorded client.Object // nil: nothing recorded
		event    client.Object
		passes   bool
	}{
		{"the object the reconcile created", child("u1", "10", "a"), child("u1", "10", "a"), false},
		{"changed since (a re-list after a watch gap)", child("u1", "10", "a"), child("u1", "11", "a"), true},
		{"another object", child("u1", "10", "a"), child("u2", "10", "a"), true},
		{"controlled by another VoiceAgent", child("u1", "10", "a"), child("u1", "10", "b"), true},
		{"controlled by nothing", child("u1", "10", "a"), child("u1", "10", ""), true},
		{"nothing recorded", nil, child("u1", "10", "a"), true},
	} {
		var oc ownCreates
		if c.recorded != nil {
			oc.record(c.recorded, creator)
		}
		p := oc.notOwnChildCreate()
		if !p.Update(event.UpdateEvent{ObjectOld: c.event, ObjectNew: c.event}) || !p.Delete(event.DeleteEvent{Object: c.event}) {
			t.Errorf("%s: an update or delete was dropped", c.name)
		}
		if got := p.Create(event.CreateEvent{Object: c.event}); got != c.passes {
			t.Errorf("%s: create passes = %v, want %v", c.name, got, c.passes)
		}
		if !p.Create(event.CreateEvent{Object: c.event}) {
			t.Errorf("%s: a second create of the same object was dropped; an entry must be taken once", c.name)
		}
	}
}

// A generated Secret's create is dropped only when the VoiceAgent it was made for is
// the only one it maps to.
func TestOwnSecretCreateKeepsOtherVoiceAgents(t *testing.T) {
	creator := types.NamespacedName{Namespace: "ns", Name: "a"}
	other := types.NamespacedName{Namespace: "ns", Name: "b"}
	for _, c := range []struct {
		name   string
		maps   []types.NamespacedName
		passes bool
	}{
		{"only its VoiceAgent", []types.NamespacedName{creator}, false},
		{"another VoiceAgent references it too", []types.NamespacedName{creator, other}, true},
		{"only another VoiceAgent", []types.NamespacedName{other}, true},
	} {
		var oc ownCreates
		secret := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-agent-token", UID: "s1", ResourceVersion: "7"}}
		oc.record(secret, creator)
		p := oc.notOwnSecretCreate(func(context.Context, client.Object) []reconcile.Request {
			reqs := make([]reconcile.Request, 0, len(c.maps))
			for _, n := range c.maps {
				reqs = append(reqs, reconcile.Request{NamespacedName: n})
			}
			return reqs
		})
		if got := p.Create(event.CreateEvent{Object: secret}); got != c.passes {
			t.Errorf("%s: create passes = %v, want %v", c.name, got, c.passes)
		}
	}
}

// The set is bounded: past maxOwnCreates entries it starts again, which only lets a
// create through.
func TestOwnCreatesIsBounded(t *testing.T) {
	var oc ownCreates
	creator := types.NamespacedName{Namespace: "ns", Name: "a"}
	first := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: "first", ResourceVersion: "1"}}
	oc.record(first, creator)
	for i := range maxOwnCreates {
		oc.record(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: types.UID(strconv.Itoa(i)), ResourceVersion: "1"}}, creator)
	}
	if len(oc.m) > maxOwnCreates {
		t.Fatalf("%d entries, want at most %d", len(oc.m), maxOwnCreates)
	}
	if _, ok := oc.take(first); ok {
		t.Error("the first entry survived past the bound")
	}
	oc.record(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: "no-version"}}, creator)
	if _, ok := oc.m["no-version"]; ok {
		t.Error("an object without a resourceVersion was recorded")
	}
}
