package controllers

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// ownCreates keeps the create event of an object a reconcile just made from starting
// a second reconcile of its VoiceAgent. That event, of that object (same UID) at that
// resourceVersion, would start a reconcile that finds nothing to do: the one that made
// it computed its rendering and status from exactly that object (observed.created).
// At 1,000 new VoiceAgents these were most of the create phase's reconciles.
//
// The event and the create's response race each other. A response that comes first is
// recorded (record) and the event that follows is dropped. An event that comes first,
// while a reconcile of its VoiceAgent runs, is held: the response that follows takes
// it, and at the reconcile's end (end) any held event no response took starts a
// reconcile as it would have. Any other create passes at once: an object at another
// resourceVersion (changed since, or delivered by a re-list after a watch gap), an
// object a reconcile re-applied that the cache had lost (a label stripped: the answer
// is the object at its new resourceVersion, status and all), anything another client
// made while no reconcile of its VoiceAgent ran. Updates and deletes are never held.
type ownCreates struct {
	mu sync.Mutex
	// made are the objects whose create responded before its event came.
	made map[types.UID]madeObject
	// running counts the reconciles in flight, by VoiceAgent.
	running map[types.NamespacedName]int
	// held are the create events that came during a reconcile of their VoiceAgent and
	// before any response.
	held map[types.NamespacedName][]heldCreate
}

type madeObject struct {
	resourceVersion string
	creator         types.NamespacedName
	at              time.Time
}

type heldCreate struct {
	uid             types.UID
	resourceVersion string
	queue           workqueue.TypedRateLimitingInterface[reconcile.Request]
}

// maxMadeObjects bounds made: each entry goes when its event comes, so a burst of
// 1,000 new VoiceAgents with 15 objects each holds far fewer at once.
const maxMadeObjects = 8192

// madeEventWait is how long an entry of made waits for its event before it may be
// swept (when made is full).
const madeEventWait = time.Minute

// begin and end bracket a reconcile of va. end starts another reconcile of va if an
// event it held was not of an object this reconcile made.
func (o *ownCreates) begin(va types.NamespacedName) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running == nil {
		o.running = map[types.NamespacedName]int{}
	}
	o.running[va]++
}

func (o *ownCreates) end(va types.NamespacedName) {
	o.mu.Lock()
	var left []heldCreate
	if o.running[va] <= 1 { // 0: an end without its begin, which holds nothing
		delete(o.running, va)
		left = o.held[va]
		delete(o.held, va)
	} else {
		o.running[va]--
	}
	o.mu.Unlock()
	// Through each held event's queue: a priority queue keeps the highest priority of
	// the adds it merges.
	for _, h := range left {
		h.queue.Add(reconcile.Request{NamespacedName: va})
	}
}

// record remembers obj, as its create or apply returned it, as made for creator; or,
// when its event came first and is held, lets that event go.
func (o *ownCreates) record(obj metav1.Object, creator types.NamespacedName) {
	if obj.GetUID() == "" || obj.GetResourceVersion() == "" {
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	held := o.held[creator]
	if i := slices.IndexFunc(held, func(h heldCreate) bool {
		return h.uid == obj.GetUID() && h.resourceVersion == obj.GetResourceVersion()
	}); i >= 0 {
		o.held[creator] = slices.Delete(held, i, i+1)
		return
	}
	if o.made == nil {
		o.made = map[types.UID]madeObject{}
	}
	if len(o.made) >= maxMadeObjects {
		maps.DeleteFunc(o.made, func(_ types.UID, m madeObject) bool { return now.Sub(m.at) > madeEventWait })
	}
	if len(o.made) >= maxMadeObjects {
		clear(o.made)
	}
	o.made[obj.GetUID()] = madeObject{resourceVersion: obj.GetResourceVersion(), creator: creator, at: now}
}

// createEvent says whether the create event of obj, whose one request is va's, is
// dropped (obj is what a reconcile of va made) or held (a reconcile of va runs), so
// that it starts no reconcile now.
func (o *ownCreates) createEvent(obj client.Object, va types.NamespacedName, q workqueue.TypedRateLimitingInterface[reconcile.Request]) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if m, ok := o.made[obj.GetUID()]; ok {
		delete(o.made, obj.GetUID())
		if m.resourceVersion == obj.GetResourceVersion() && m.creator == va {
			return true
		}
	}
	if o.running[va] > 0 {
		if o.held == nil {
			o.held = map[types.NamespacedName][]heldCreate{}
		}
		o.held[va] = append(o.held[va], heldCreate{uid: obj.GetUID(), resourceVersion: obj.GetResourceVersion(), queue: q})
		return true
	}
	return false
}

// handler wraps inner, a handler whose requests for obj are the VoiceAgents soleVoiceAgent
// returns when it returns exactly one, so that the create event of an object a
// reconcile made starts no second one. Every other event goes to inner as it is.
func (o *ownCreates) handler(inner handler.EventHandler, soleVoiceAgent func(context.Context, client.Object) (types.NamespacedName, bool)) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if va, ok := soleVoiceAgent(ctx, e.Object); ok && o.createEvent(e.Object, va, q) {
				return
			}
			inner.Create(ctx, e, q)
		},
		UpdateFunc:  inner.Update,
		DeleteFunc:  inner.Delete,
		GenericFunc: inner.Generic,
	}
}

// controllingVoiceAgent is the VoiceAgent that controls obj: the one request of
// EnqueueRequestForOwner with OnlyControllerOwner.
func controllingVoiceAgent(_ context.Context, obj client.Object) (types.NamespacedName, bool) {
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.Kind != "VoiceAgent" {
		return types.NamespacedName{}, false
	}
	// By group, as EnqueueRequestForOwner matches: an owner reference written at
	// another version of the API is still the VoiceAgent's.
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != v1alpha1.GroupVersion.Group {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: obj.GetNamespace(), Name: ref.Name}, true
}

// soleMapped is the one VoiceAgent mapped returns for obj, if it returns one.
func soleMapped(mapped handler.MapFunc) func(context.Context, client.Object) (types.NamespacedName, bool) {
	return func(ctx context.Context, obj client.Object) (types.NamespacedName, bool) {
		reqs := mapped(ctx, obj)
		if len(reqs) != 1 {
			return types.NamespacedName{}, false
		}
		return reqs[0].NamespacedName, true
	}
}
