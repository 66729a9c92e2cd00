package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// applyResult says what an apply did.
type applyResult int

const (
	applyUnchanged applyResult = iota // the live object already had every field we own
	applyCreated
	applyUpdated // what we want changed (the spec or an input such as a sink), applied
	applyDrifted // we wanted the same as last time, but someone changed the live object
)

// annotationDesiredHash on every child is the SHA-256 of what the operator last applied.
// When it still matches what we want but the live object differs, someone else changed
// the object: that is drift, and is reported as such.
const annotationDesiredHash = "voiceagent.dev/desired-hash"

func desiredHash(u *unstructured.Unstructured) string {
	b, _ := json.Marshal(u.Object) // map keys are sorted: the same object, the same bytes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// toUnstructured converts a typed object for server-side apply, dropping the fields a
// typed Go struct always carries but that we must not claim ownership of.
func toUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return u.DeepCopy(), nil
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	if spec, ok := m["spec"].(map[string]any); ok {
		if tmpl, ok := spec["template"].(map[string]any); ok {
			if meta, ok := tmpl["metadata"].(map[string]any); ok {
				delete(meta, "creationTimestamp")
			}
		}
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// applyChild makes the live object carry every field of desired, with one field owner.
// It first compares desired with the cached live object and makes no request when
// nothing differs: a steady-state reconcile writes nothing.
func applyChild(ctx context.Context, c client.Client, live *liveChecker, desired client.Object) (applyResult, error) {
	res, _, err := applyChildObject(ctx, c, live, desired, false)
	return res, err
}

// applyChildObject is applyChild, and returns the object as the API server answered
// the apply (nil when nothing was sent): what the reconcile reads instead of the
// cache, which may not show it yet. force sends the apply even when the live object
// already carries every field of desired, for a field the operator must stop owning
// (an apply without it is what releases it). checker reads a child from the API server
// when its cached copy (trimmed to a digest, AnnotationLiveDigest) does not settle
// whether it changed; it may be nil only for children that are never trimmed
// (unstructured ones).
func applyChildObject(ctx context.Context, c client.Client, checker *liveChecker, desired client.Object, force bool) (applyResult, *unstructured.Unstructured, error) {
	want, err := toUnstructured(desired)
	if err != nil {
		return applyUnchanged, nil, fmt.Errorf("convert %T: %w", desired, err)
	}
	hash := desiredHash(want)
	ann := want.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[annotationDesiredHash] = hash
	want.SetAnnotations(ann)
	live, exists, err := getLive(ctx, c, desired, want)
	if err != nil {
		return applyUnchanged, nil, fmt.Errorf("get %s %s: %w", want.GetKind(), want.GetName(), err)
	}
	if exists && controlledByAnother(live, want) {
		return applyUnchanged, nil, fmt.Errorf("%s %s is controlled by another object (%s); the operator does not take it over: rename or delete one of them",
			want.GetKind(), want.GetName(), metav1.GetControllerOf(live).Kind+"/"+metav1.GetControllerOf(live).Name)
	}
	if exists && !force {
		same, err := checker.unchanged(ctx, desired, live, want)
		if err != nil {
			return applyUnchanged, nil, fmt.Errorf("get %s %s: %w", want.GetKind(), want.GetName(), err)
		}
		if same {
			return applyUnchanged, nil, nil
		}
	}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(want),
		client.FieldOwner(render.FieldOwner), client.ForceOwnership); err != nil {
		return applyUnchanged, nil, fmt.Errorf("apply %s %s: %w", want.GetKind(), want.GetName(), err)
	}
	switch {
	case exists && live.GetAnnotations()[annotationDesiredHash] == hash:
		return applyDrifted, want, nil
	case exists:
		return applyUpdated, want, nil
	}
	return applyCreated, want, nil
}

// liveChecker settles whether a live child carries every field the operator wants.
// A typed child's cached copy holds a digest of the fields the operator owns instead
// of its spec: equal to want's, nothing changed. When it differs and the operator
// wants what it last applied (drift, or a field the API server stores otherwise than
// the typed object renders it), the child is read from the API server and compared
// field by field: a digest that misses costs a read, never a write.
//
// A child found unchanged that way is remembered by UID with its resourceVersion and
// the desired digest, so that a digest that keeps missing for an object that is right
// (a webhook that rewrites a list, the operator's entry stripped from managedFields)
// costs one read per change of the object or of what is wanted, not one per reconcile.
type liveChecker struct {
	reader client.Reader
	mu     sync.Mutex
	same   map[types.UID]checkedLive
}

// checkedLive is a child read from the API server and found to carry everything the
// operator wants: at that resourceVersion, for that desired digest.
type checkedLive struct{ resourceVersion, digest string }

// maxCheckedLive bounds what a liveChecker remembers; past it, it starts again empty
// (entries of deleted children are never removed one by one). Each entry is a child
// whose digest misses, normally none.
const maxCheckedLive = 10000

// newLiveChecker reads from reader, which must be the API server and not the cache.
func newLiveChecker(reader client.Reader) *liveChecker {
	return &liveChecker{reader: reader, same: map[types.UID]checkedLive{}}
}

// unchanged reports whether live (the cached copy) carries every field of want.
func (lc *liveChecker) unchanged(ctx context.Context, desired client.Object, live, want *unstructured.Unstructured) (bool, error) {
	digest, trimmed := live.GetAnnotations()[AnnotationLiveDigest]
	if !trimmed {
		return unchanged(live.Object, want.Object), nil
	}
	wantDigest := desiredDigest(want)
	if digest == digestPrefix+wantDigest {
		return true, nil
	}
	if live.GetAnnotations()[annotationDesiredHash] != want.GetAnnotations()[annotationDesiredHash] {
		return false, nil // what the operator wants changed: no need to read what it was
	}
	if lc == nil || lc.reader == nil {
		return false, fmt.Errorf("no API reader to compare the cached %s %s with (VoiceAgentReconciler.APIReader is not set)", want.GetKind(), want.GetName())
	}
	uid := live.GetUID()
	if lc.seen(uid, checkedLive{live.GetResourceVersion(), wantDigest}) {
		return true, nil
	}
	typed := reflect.New(reflect.TypeOf(desired).Elem()).Interface().(client.Object)
	if err := lc.reader.Get(ctx, client.ObjectKeyFromObject(want), typed); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	// Typed objects come back from the API server without apiVersion and kind; want
	// has them, and so had the cache's copies.
	typed.GetObjectKind().SetGroupVersionKind(want.GroupVersionKind())
	liveReads.WithLabelValues(want.GetKind()).Inc()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(typed)
	if err != nil {
		return false, err
	}
	same := unchanged(m, want.Object)
	if same && typed.GetUID() == uid {
		lc.remember(uid, checkedLive{typed.GetResourceVersion(), wantDigest})
	}
	return same, nil
}

func (lc *liveChecker) seen(uid types.UID, c checkedLive) bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	got, ok := lc.same[uid]
	return ok && got == c
}

func (lc *liveChecker) remember(uid types.UID, c checkedLive) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if len(lc.same) >= maxCheckedLive {
		clear(lc.same)
	}
	lc.same[uid] = c
}

// controlledByAnother says whether live has a controller that is not the one want
// names: two VoiceAgents rendering a child of the same name must not take it from each
// other on every reconcile.
func controlledByAnother(live, want *unstructured.Unstructured) bool {
	have, mine := metav1.GetControllerOf(live), metav1.GetControllerOf(want)
	return have != nil && mine != nil && have.UID != mine.UID
}

// getLive reads the live child through the informer whose events trigger reconciles:
// the typed one for a typed child. Reading it as unstructured would go to a second
// informer, which can lag behind the first: a reconcile started by an edit would then
// see the object from before the edit, find no drift, and nothing would bring the edit
// back (seen as a rare TestDriftIsReverted failure).
func getLive(ctx context.Context, c client.Client, desired client.Object, want *unstructured.Unstructured) (*unstructured.Unstructured, bool, error) {
	key := client.ObjectKeyFromObject(want)
	if _, ok := desired.(*unstructured.Unstructured); ok {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(want.GroupVersionKind())
		if err := c.Get(ctx, key, live); err != nil {
			return nil, false, client.IgnoreNotFound(err)
		}
		return live, true, nil
	}
	typed := reflect.New(reflect.TypeOf(desired).Elem()).Interface().(client.Object)
	if err := c.Get(ctx, key, typed); err != nil {
		return nil, false, client.IgnoreNotFound(err)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(typed)
	if err != nil {
		return nil, false, err
	}
	return &unstructured.Unstructured{Object: m}, true, nil
}

// unchanged reports whether live carries every field of want. Both sides of a typed
// child come from the same converter, so values that are equal are of equal types and
// compare equal as they are: no JSON round trip (four per child, most of a steady-state
// reconcile's time) unless they differ as they are, which an unstructured child's Go
// integers against the cache's int64 can.
func unchanged(live, want map[string]any) bool {
	return contains(live, want) || contains(normalise(live), normalise(want))
}

// normalise round-trips a value through JSON so that numbers and nested types compare
// equal whatever path (typed conversion or decoding) produced them.
func normalise(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return v
	}
	return out
}

// contains reports whether every field set in want has the same value in live. Lists
// must have the same length and contain element-wise; fields the API server defaults
// (present in live only) are ignored.
func contains(live, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			lv, ok := l[k]
			if !ok {
				if isEmpty(wv) {
					continue
				}
				return false
			}
			if !contains(lv, wv) {
				return false
			}
		}
		return true
	case []any:
		l, ok := live.([]any)
		if !ok {
			return len(w) == 0 && live == nil
		}
		if len(l) != len(w) {
			return false
		}
		for i := range w {
			if !contains(l[i], w[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(live, want)
	}
}

// isEmpty matches values the API server drops when stored (empty maps and lists).
func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}
