package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

func newTestQueue(t *testing.T) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	t.Cleanup(q.ShutDown)
	return q
}

// countingHandler stands for the handler ownApplies wraps: it counts what reaches it.
type countingHandler struct{ creates, updates, deletes int }

func (c *countingHandler) handler() handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(context.Context, event.CreateEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			c.creates++
		},
		UpdateFunc: func(context.Context, event.UpdateEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			c.updates++
		},
		DeleteFunc: func(context.Context, event.DeleteEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			c.deletes++
		},
	}
}

// operatorsOnly is the managed fields of an object only the operator wrote.
var operatorsOnly = []metav1.ManagedFieldsEntry{{Manager: render.FieldOwner, Operation: metav1.ManagedFieldsOperationApply}}

func childOf(uid, rv, controller string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-config", UID: types.UID(uid), ResourceVersion: rv,
		ManagedFields: operatorsOnly}}
	if controller != "" {
		cm.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "VoiceAgent",
			Name: controller, UID: "va", Controller: ptr.To(true)}}
	}
	return cm
}

// Only the create or update event of the very object a reconcile wrote, at the
// resourceVersion its write returned, is kept from starting a reconcile, whichever of
// the event and the response comes first; every other event reaches the handler, or,
// held during a reconcile, starts one when that reconcile ends. Deletes always reach it.
func TestOwnAppliesKeepsOnlyThatObjectsEvents(t *testing.T) {
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	for _, c := range []struct {
		name string
		// recorded is what the reconcile's create returned (nil: nothing); event is the
		// create event; running: a reconcile of a runs while the event comes;
		// eventFirst: the event comes before the response.
		recorded, event     client.Object
		running, eventFirst bool
		// reaches: the event reaches the handler; requeued: a reconcile of a is added
		// when the running reconcile ends.
		reaches, requeued bool
	}{
		{name: "made, response first", recorded: childOf("u1", "10", "a"), event: childOf("u1", "10", "a")},
		{name: "made, response first, reconcile still running", recorded: childOf("u1", "10", "a"), event: childOf("u1", "10", "a"), running: true},
		{name: "made, event first during the reconcile", recorded: childOf("u1", "10", "a"), event: childOf("u1", "10", "a"), running: true, eventFirst: true},
		{name: "changed since it was made", recorded: childOf("u1", "10", "a"), event: childOf("u1", "11", "a"), reaches: true},
		{name: "changed since, during the reconcile", recorded: childOf("u1", "10", "a"), event: childOf("u1", "11", "a"), running: true, eventFirst: true, requeued: true},
		{name: "another object", recorded: childOf("u1", "10", "a"), event: childOf("u2", "10", "a"), reaches: true},
		{name: "made for a, controlled by b", recorded: childOf("u1", "10", "a"), event: childOf("u1", "10", "b"), reaches: true},
		{name: "controlled by nothing", recorded: childOf("u1", "10", "a"), event: childOf("u1", "10", ""), reaches: true},
		{name: "the answer carries another manager's write", recorded: withStatusWriter(childOf("u1", "10", "a")), event: childOf("u1", "10", "a"), reaches: true},
		{name: "nothing made, no reconcile", event: childOf("u1", "10", "a"), reaches: true},
		{name: "nothing made, during the reconcile", event: childOf("u1", "10", "a"), running: true, requeued: true},
	} {
		for _, update := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, update %v", c.name, update), func(t *testing.T) {
				var oc ownApplies
				inner := &countingHandler{}
				h := oc.handler(inner.handler(), controllingVoiceAgent)
				q := newTestQueue(t)
				if c.running {
					oc.begin(a)
				}
				if c.recorded != nil && !c.eventFirst {
					oc.record(c.recorded, a)
				}
				if update {
					h.Update(context.Background(), event.UpdateEvent{ObjectOld: childOf("u1", "9", "a"), ObjectNew: c.event}, q)
				} else {
					h.Create(context.Background(), event.CreateEvent{Object: c.event}, q)
				}
				if c.recorded != nil && c.eventFirst {
					oc.record(c.recorded, a)
				}
				if c.running {
					oc.end(a)
				}
				if got := inner.creates+inner.updates == 1; got != c.reaches {
					t.Errorf("the event reached the handler: %v, want %v", got, c.reaches)
				}
				if got := q.Len() == 1; got != c.requeued {
					t.Errorf("a reconcile added at the end: %v (queue length %d), want %v", got, q.Len(), c.requeued)
				}
				h.Delete(context.Background(), event.DeleteEvent{Object: c.event}, q)
				if inner.deletes != 1 {
					t.Errorf("%d deletes reached the handler; want 1", inner.deletes)
				}
				before := inner.creates + inner.updates
				h.Create(context.Background(), event.CreateEvent{Object: c.event}, q)
				if inner.creates+inner.updates != before+1 {
					t.Error("a second event of the same object, with no reconcile running, did not reach the handler: an entry must be taken once")
				}
			})
		}
	}
}

// withStatusWriter is obj as another controller left it after writing its status.
func withStatusWriter(obj *corev1.ConfigMap) *corev1.ConfigMap {
	obj.ManagedFields = append(slices.Clone(obj.ManagedFields), metav1.ManagedFieldsEntry{Manager: "kube-controller-manager",
		Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status"})
	return obj
}

// An answer is remembered only when the operator is the object's only field manager.
func TestWrittenOnlyByOperator(t *testing.T) {
	for _, c := range []struct {
		name string
		mf   []metav1.ManagedFieldsEntry
		want bool
	}{
		{"the operator's apply", operatorsOnly, true},
		{"the operator's create", []metav1.ManagedFieldsEntry{{Manager: render.FieldOwner, Operation: metav1.ManagedFieldsOperationUpdate}}, true},
		{"and a status writer", withStatusWriter(childOf("u", "1", "a")).ManagedFields, false},
		{"and the replicas hand-off", append(slices.Clone(operatorsOnly), metav1.ManagedFieldsEntry{Manager: replicasHandOff}), false},
		{"no managed fields", nil, false},
	} {
		if got := writtenOnlyByOperator(&metav1.ObjectMeta{ManagedFields: c.mf}); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// An entry older than writtenEventWait drops nothing.
func TestOldEntryDropsNothing(t *testing.T) {
	var oc ownApplies
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	oc.record(childOf("u1", "10", "a"), a)
	w := oc.written["u1"]
	w.at = w.at.Add(-2 * writtenEventWait)
	oc.written["u1"] = w
	if oc.ownEvent(childOf("u1", "10", "a"), a, newTestQueue(t)) {
		t.Error("an entry older than writtenEventWait dropped an event (a resync)")
	}
}

// An update that moves an object from one VoiceAgent to another reaches the handler.
func TestUpdateToAnotherVoiceAgentReachesTheHandler(t *testing.T) {
	var oc ownApplies
	b := types.NamespacedName{Namespace: "ns", Name: "b"}
	inner := &countingHandler{}
	h := oc.handler(inner.handler(), controllingVoiceAgent)
	oc.begin(b)
	h.Update(context.Background(), event.UpdateEvent{ObjectOld: childOf("u1", "10", "a"), ObjectNew: childOf("u1", "11", "b")}, newTestQueue(t))
	oc.end(b)
	if inner.updates != 1 {
		t.Errorf("an update from VoiceAgent a to b, during b's reconcile, reached the handler %d times, want 1 (a must hear of it)", inner.updates)
	}
}

// A generated Secret's create is kept back only when the VoiceAgent it was made for is
// the only one it maps to.
func TestOwnSecretCreateReachesOtherVoiceAgents(t *testing.T) {
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	b := types.NamespacedName{Namespace: "ns", Name: "b"}
	for _, c := range []struct {
		name    string
		maps    []types.NamespacedName
		reaches bool
	}{
		{"only its VoiceAgent", []types.NamespacedName{a}, false},
		{"another VoiceAgent references it too", []types.NamespacedName{a, b}, true},
		{"only another VoiceAgent", []types.NamespacedName{b}, true},
	} {
		var oc ownApplies
		secret := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-agent-token", UID: "s1", ResourceVersion: "7", ManagedFields: operatorsOnly}}
		oc.record(secret, a)
		inner := &countingHandler{}
		h := oc.handler(inner.handler(), soleMapped(func(context.Context, client.Object) []reconcile.Request {
			reqs := make([]reconcile.Request, 0, len(c.maps))
			for _, n := range c.maps {
				reqs = append(reqs, reconcile.Request{NamespacedName: n})
			}
			return reqs
		}))
		h.Create(context.Background(), event.CreateEvent{Object: secret}, newTestQueue(t))
		if got := inner.creates == 1; got != c.reaches {
			t.Errorf("%s: the create reached the handler: %v, want %v", c.name, got, c.reaches)
		}
	}
}

// made is bounded: past maxWrittenObjects entries it starts again, which only lets a
// create through; running and held are emptied by end.
func TestOwnCreatesIsBounded(t *testing.T) {
	var oc ownApplies
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	first := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: "first", ResourceVersion: "1", ManagedFields: operatorsOnly}}
	oc.record(first, a)
	for i := range maxWrittenObjects {
		oc.record(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: types.UID(strconv.Itoa(i)), ResourceVersion: "1", ManagedFields: operatorsOnly}}, a)
	}
	if len(oc.written) > maxWrittenObjects {
		t.Fatalf("%d entries, want at most %d", len(oc.written), maxWrittenObjects)
	}
	if _, ok := oc.written["first"]; ok {
		t.Error("the first entry survived past the bound")
	}
	oc.record(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: "no-version"}}, a)
	if _, ok := oc.written["no-version"]; ok {
		t.Error("an object without a resourceVersion was recorded")
	}
	oc.begin(a)
	oc.begin(a)
	oc.ownEvent(childOf("u9", "1", "a"), a, newTestQueue(t))
	oc.end(a)
	if len(oc.held[a]) != 1 {
		t.Errorf("held %d events after one of two overlapping reconciles ended, want 1", len(oc.held[a]))
	}
	oc.end(a)
	if len(oc.running) != 0 || len(oc.held) != 0 {
		t.Errorf("running %v, held %v after every reconcile ended; want both empty", oc.running, oc.held)
	}
}
