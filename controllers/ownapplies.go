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
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// ownApplies keeps the watch event of an object a reconcile just wrote (created,
// applied, or a generated Secret) from starting a second reconcile of its VoiceAgent.
// That event, of that object (same UID) at the resourceVersion the write returned,
// would start a reconcile that finds nothing to do: the one that wrote it computed its
// rendering and status from exactly that object (observed.applied). At 1,000 new
// VoiceAgents the creates' events were most of the create phase's reconciles, and a
// spec change's applies made two reconciles per VoiceAgent.
//
// The event and the write's response race each other. A response that comes first is
// recorded (record) and the event that follows is dropped. An event that comes first,
// while a reconcile of its VoiceAgent runs, is held: the response that follows takes
// it, and at the reconcile's end (end) any held event no response took starts a
// reconcile as it would have. Any other event passes at once: an object at another
// resourceVersion (changed since, or delivered by a re-list after a watch gap), an
// object a reconcile re-applied that the cache had lost (a label stripped: the answer
// is the object at its new resourceVersion, status and all), anything another client
// wrote while no reconcile of its VoiceAgent ran. Deletes are never held.
type ownApplies struct {
	mu sync.Mutex
	// written are the objects whose write responded before its event came.
	written map[types.UID]writtenObject
	// running counts the reconciles in flight, by VoiceAgent.
	running map[types.NamespacedName]int
	// held are the events that came during a reconcile of their VoiceAgent and before
	// any response.
	held map[types.NamespacedName][]heldEvent
}

type writtenObject struct {
	resourceVersion string
	writer          types.NamespacedName
	at              time.Time
}

type heldEvent struct {
	uid             types.UID
	resourceVersion string
	queue           workqueue.TypedRateLimitingInterface[reconcile.Request]
}

// maxWrittenObjects bounds written: each entry goes when its event comes, so a burst
// of 1,000 new VoiceAgents with 15 objects each holds far fewer at once.
const maxWrittenObjects = 8192

// writtenEventWait is how long an entry of written waits for its event before it may
// be swept (when written is full).
const writtenEventWait = time.Minute

// begin and end bracket a reconcile of va. end starts another reconcile of va if an
// event it held was not of an object this reconcile wrote.
func (o *ownApplies) begin(va types.NamespacedName) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running == nil {
		o.running = map[types.NamespacedName]int{}
	}
	o.running[va]++
}

func (o *ownApplies) end(va types.NamespacedName) {
	o.mu.Lock()
	var left []heldEvent
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

// record remembers obj, as its write returned it, as written for writer; or, when its
// event came first and is held, lets that event go. An answer is remembered only when
// every field manager of the object is the operator's (writtenOnlyByOperator): an
// apply that changed nothing (the cache was behind) answers with the object at its
// latest resourceVersion, which may be another client's write (the Deployment
// controller's status, an autoscaler's replicas), whose event must start a reconcile.
func (o *ownApplies) record(obj metav1.Object, writer types.NamespacedName) {
	if obj.GetUID() == "" || obj.GetResourceVersion() == "" || !writtenOnlyByOperator(obj) {
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	held := o.held[writer]
	if i := slices.IndexFunc(held, func(h heldEvent) bool {
		return h.uid == obj.GetUID() && h.resourceVersion == obj.GetResourceVersion()
	}); i >= 0 {
		o.held[writer] = slices.Delete(held, i, i+1)
		return
	}
	if o.written == nil {
		o.written = map[types.UID]writtenObject{}
	}
	if len(o.written) >= maxWrittenObjects {
		maps.DeleteFunc(o.written, func(_ types.UID, w writtenObject) bool { return now.Sub(w.at) > writtenEventWait })
	}
	if len(o.written) >= maxWrittenObjects {
		clear(o.written)
	}
	o.written[obj.GetUID()] = writtenObject{resourceVersion: obj.GetResourceVersion(), writer: writer, at: now}
}

// ownEvent says whether the create or update event of obj (the new object), whose one
// request is va's, is dropped (obj is what a reconcile of va wrote) or held (a
// reconcile of va runs), so that it starts no reconcile now.
func (o *ownApplies) ownEvent(obj client.Object, va types.NamespacedName, q workqueue.TypedRateLimitingInterface[reconcile.Request]) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	// An entry goes with the event at its resourceVersion only: the watch delivers an
	// object's events in order, so one at another version came before it (someone
	// else's change) or after a gap that skipped it.
	// An entry older than writtenEventWait drops nothing: its event has long come (it
	// came before the response, or a re-list skipped it), and a later event at the same
	// resourceVersion is a resync, which passes.
	if w, ok := o.written[obj.GetUID()]; ok && w.resourceVersion == obj.GetResourceVersion() {
		delete(o.written, obj.GetUID())
		if w.writer == va && time.Since(w.at) <= writtenEventWait {
			return true
		}
	}
	if o.running[va] > 0 {
		if o.held == nil {
			o.held = map[types.NamespacedName][]heldEvent{}
		}
		o.held[va] = append(o.held[va], heldEvent{uid: obj.GetUID(), resourceVersion: obj.GetResourceVersion(), queue: q})
		return true
	}
	return false
}

// idle says that no event of obj can be kept back now: no reconcile runs and no write
// of obj is remembered. The handler then skips mapping obj to its VoiceAgent, an index
// lookup for every Secret in the cluster.
func (o *ownApplies) idle(obj client.Object) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, written := o.written[obj.GetUID()]
	return len(o.running) == 0 && !written
}

// handler wraps inner, a handler whose requests for obj are the VoiceAgents
// soleVoiceAgent returns when it returns exactly one, so that the create or update
// event of an object a reconcile wrote starts no second one. Deletes and generic
// events go to inner as they are.
func (o *ownApplies) handler(inner handler.EventHandler, soleVoiceAgent func(context.Context, client.Object) (types.NamespacedName, bool)) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if !o.idle(e.Object) {
				if va, ok := soleVoiceAgent(ctx, e.Object); ok && o.ownEvent(e.Object, va, q) {
					return
				}
			}
			inner.Create(ctx, e, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if o.idle(e.ObjectNew) {
				inner.Update(ctx, e, q)
				return
			}
			// Only when the old and the new object are one VoiceAgent's: an update that
			// moves an object from one to another reconciles both.
			if va, ok := soleVoiceAgent(ctx, e.ObjectNew); ok {
				if was, wasOK := soleVoiceAgent(ctx, e.ObjectOld); wasOK && was == va && o.ownEvent(e.ObjectNew, va, q) {
					return
				}
			}
			inner.Update(ctx, e, q)
		},
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

// writtenOnlyByOperator says whether every field manager of obj is the operator's own
// (render.FieldOwner, by apply or by create): then the object at its resourceVersion
// is a write of the operator's, whatever the cache showed. Any other manager (a
// controller writing status, an autoscaler, a hand-off, kubectl) makes it false; so
// does an object without managed fields.
func writtenOnlyByOperator(obj metav1.Object) bool {
	mf := obj.GetManagedFields()
	return len(mf) > 0 && !slices.ContainsFunc(mf, func(e metav1.ManagedFieldsEntry) bool { return e.Manager != render.FieldOwner })
}
