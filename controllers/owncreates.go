package controllers

import (
	"context"
	"maps"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// ownCreates remembers the objects this process's reconciles created, each by UID with
// the resourceVersion the create returned and the VoiceAgent it was made for, until the
// watch delivers its create.
//
// That create event, of that object at that resourceVersion, would start a reconcile
// of the VoiceAgent that made it, which already computed its status from exactly that
// object (observed.created): the reconcile would find nothing to do. At 1,000 new
// VoiceAgents these were most of the create phase's reconciles (1.65 to 1.91 per
// VoiceAgent). Any other create still starts one: an object at another
// resourceVersion (changed since, or delivered by a re-list after a watch gap), an
// object a reconcile re-applied that the cache had lost (a label stripped: the
// response is the object at its new resourceVersion, status and all), anything
// another client made. Updates and deletes are never dropped.
//
// An entry whose event came before the create's response (then the event passed) is
// never taken: past maxOwnCreates entries, the ones older than ownCreateEventWait go,
// and if that is not enough the set starts again empty, which costs reconciles and
// never drops one it should not.
type ownCreates struct {
	mu sync.Mutex
	m  map[types.UID]ownCreate
}

type ownCreate struct {
	resourceVersion string
	creator         types.NamespacedName
	at              time.Time
}

// maxOwnCreates bounds the set: a burst of 1,000 new VoiceAgents with 15 objects each
// holds far fewer at once, since each entry goes when its event comes.
const maxOwnCreates = 8192

// ownCreateEventWait is how long an entry waits for its event before it may be swept
// (when the set is full): an event comes within a watch's latency, or came before
// the entry (then it is never taken).
const ownCreateEventWait = time.Minute

// record remembers obj, as the create's response returned it, as made for creator.
func (o *ownCreates) record(obj metav1.Object, creator types.NamespacedName) {
	if obj.GetUID() == "" || obj.GetResourceVersion() == "" {
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[types.UID]ownCreate{}
	}
	if len(o.m) >= maxOwnCreates {
		maps.DeleteFunc(o.m, func(_ types.UID, c ownCreate) bool { return now.Sub(c.at) > ownCreateEventWait })
	}
	if len(o.m) >= maxOwnCreates {
		clear(o.m)
	}
	o.m[obj.GetUID()] = ownCreate{resourceVersion: obj.GetResourceVersion(), creator: creator, at: now}
}

// take forgets obj's entry and returns its creator when obj is the very object
// recorded: same UID, same resourceVersion.
func (o *ownCreates) take(obj metav1.Object) (types.NamespacedName, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c, ok := o.m[obj.GetUID()]
	if !ok {
		return types.NamespacedName{}, false
	}
	delete(o.m, obj.GetUID())
	return c.creator, c.resourceVersion == obj.GetResourceVersion()
}

// notOwnChildCreate drops the create event of a child a reconcile just created, for
// the watches whose one request is the child's controller: it passes unless the
// VoiceAgent that controls the object is the one recorded as its creator.
func (o *ownCreates) notOwnChildCreate() predicate.Funcs {
	return predicate.Funcs{CreateFunc: func(e event.CreateEvent) bool {
		creator, ok := o.take(e.Object)
		if !ok {
			return true
		}
		ref := metav1.GetControllerOf(e.Object)
		return ref == nil || ref.Kind != "VoiceAgent" || ref.Name != creator.Name || e.Object.GetNamespace() != creator.Namespace
	}}
}

// notOwnSecretCreate drops the create event of a Secret a reconcile generated when the
// VoiceAgent it was made for is the only one the Secret maps to (mapped): another
// VoiceAgent that references it still hears of it.
func (o *ownCreates) notOwnSecretCreate(mapped handler.MapFunc) predicate.Funcs {
	return predicate.Funcs{CreateFunc: func(e event.CreateEvent) bool {
		creator, ok := o.take(e.Object)
		if !ok {
			return true
		}
		reqs := mapped(context.Background(), e.Object)
		return len(reqs) != 1 || reqs[0].NamespacedName != creator
	}}
}
