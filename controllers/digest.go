package controllers

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// AnnotationLiveDigest is set on the manager's cached copy of a typed child, never on
// the object in the API server: the digest of what the child holds of the fields the
// operator's last server-side apply owns (LiveDigest). The cache keeps that digest
// instead of the child's spec, so that the operator's memory does not carry a second
// copy of every Deployment's pod template (internal/manager trims the rest).
//
// A reconcile compares it with the same digest of what it wants: equal means the live
// object carries every field of the desired one with the same value, and nothing is
// sent. A field the operator owns that someone else changes is no longer the
// operator's (an update takes ownership of what it changes), so the digest changes
// with any such edit: drift is still seen and put back.
const AnnotationLiveDigest = "voiceagent.dev/live-digest"

// digestPrefix starts every digest this process puts in its cache: a random value
// of its own, which no object in the API server carries. An informer may pass a
// cached object through its transform again (CachedDigest keeps what it has), and an
// annotation of that name set on the object in the API server must not pass for one.
var digestPrefix = func() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b) + ":"
}()

// CachedDigest is the AnnotationLiveDigest value for obj in the cache: the one it
// already carries when this process computed it, else LiveDigest's.
func CachedDigest(obj client.Object) string {
	if v := obj.GetAnnotations()[AnnotationLiveDigest]; strings.HasPrefix(v, digestPrefix) {
		return v
	}
	return digestPrefix + LiveDigest(obj)
}

// noDigest marks a cached child that carries no field the operator applied (created
// by someone else, or never applied): it never matches a desired digest.
const noDigest = "none"

// LiveDigest is the digest of obj projected onto the fields its managedFields give to
// the operator's server-side apply (manager render.FieldOwner, operation Apply),
// without the fields the API server does not record there (apiVersion, kind, name,
// namespace). noDigest when the operator owns nothing of it.
func LiveDigest(obj client.Object) string {
	var owned []byte
	for _, e := range obj.GetManagedFields() {
		if e.Manager == render.FieldOwner && e.Operation == metav1.ManagedFieldsOperationApply &&
			e.Subresource == "" && e.FieldsV1 != nil {
			owned = e.FieldsV1.GetRawBytes()
			break
		}
	}
	if owned == nil {
		return noDigest
	}
	var set map[string]any
	if err := json.Unmarshal(owned, &set); err != nil {
		return noDigest
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return noDigest
	}
	return digestOf(project(m, set))
}

// desiredDigest is LiveDigest's counterpart for what a reconcile applies: want with
// its desired-hash annotation, without apiVersion, kind, name and namespace.
func desiredDigest(want *unstructured.Unstructured) string {
	m := make(map[string]any, len(want.Object))
	for k, v := range want.Object {
		if k != "apiVersion" && k != "kind" {
			m[k] = v
		}
	}
	if meta, ok := m["metadata"].(map[string]any); ok {
		trimmed := make(map[string]any, len(meta))
		for k, v := range meta {
			if k != "name" && k != "namespace" && k != "creationTimestamp" {
				trimmed[k] = v
			}
		}
		m["metadata"] = trimmed
	}
	return digestOf(dropEmpty(m))
}

func digestOf(v any) string {
	b, err := json.Marshal(dropEmpty(v)) // map keys are sorted: the same object, the same bytes
	if err != nil {
		return noDigest
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// dropEmpty removes empty maps and lists (and maps left empty by that): the API
// server keeps none of the ones a typed object carries empty, so they are on neither
// side of the comparison.
func dropEmpty(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if e = dropEmpty(e); !isEmpty(e) {
				out[k] = e
			}
		}
		return out
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			out = append(out, dropEmpty(e))
		}
		return out
	}
	return v
}

// project keeps of v what the field set (managedFields' FieldsV1, decoded) names:
// "f:name" a field, "k:{...}" a list item by its keys, "v:..." a set item by value,
// "i:n" a list item by index; an empty set keeps the value whole.
func project(v any, set map[string]any) any {
	if len(set) == 0 {
		return v
	}
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(set))
		for k, sub := range set {
			name, ok := strings.CutPrefix(k, "f:")
			if !ok {
				continue
			}
			lv, ok := x[name]
			if !ok {
				continue
			}
			subset, _ := sub.(map[string]any)
			out[name] = project(lv, subset)
		}
		return out
	case []any:
		items := newItemSets(set)
		out := make([]any, 0, len(x))
		for i, item := range x {
			if sub, ok := items.find(i, item); ok {
				subset, _ := sub.(map[string]any)
				out = append(out, project(item, withoutSelf(subset)))
			}
		}
		return out
	}
	return v
}

// itemSets are the entries of a list's field set, by how they name an item.
type itemSets struct {
	set    map[string]any
	byKeys []keyedSet
	values bool // some entry names an item by value
}

type keyedSet struct {
	keys map[string]any
	sub  any
}

func newItemSets(set map[string]any) itemSets {
	is := itemSets{set: set}
	for k, sub := range set {
		if keys, ok := strings.CutPrefix(k, "k:"); ok {
			var want map[string]any
			if json.Unmarshal([]byte(keys), &want) == nil {
				is.byKeys = append(is.byKeys, keyedSet{keys: want, sub: sub})
			}
		} else if strings.HasPrefix(k, "v:") {
			is.values = true
		}
	}
	return is
}

// find returns the field set of a list item: by index, by value or by its keys.
func (is itemSets) find(i int, item any) (any, bool) {
	if sub, ok := is.set["i:"+strconv.Itoa(i)]; ok {
		return sub, true
	}
	if is.values {
		if raw, err := json.Marshal(item); err == nil {
			if sub, ok := is.set["v:"+string(raw)]; ok {
				return sub, true
			}
		}
	}
	m, ok := item.(map[string]any)
	if !ok {
		return nil, false
	}
	for _, k := range is.byKeys {
		if keysMatch(m, k.keys) {
			return k.sub, true
		}
	}
	return nil, false
}

// keysMatch compares an item's key fields with those of a "k:" entry: the entry's
// numbers decode as float64, the item's are int64.
func keysMatch(item, keys map[string]any) bool {
	for k, want := range keys {
		have, ok := item[k]
		if !ok {
			return false
		}
		switch w := want.(type) {
		case string:
			if h, ok := have.(string); ok && h == w {
				continue
			}
		case float64:
			if h, ok := have.(int64); ok && float64(h) == w {
				continue
			}
		}
		a, errA := json.Marshal(have)
		b, errB := json.Marshal(want)
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			return false
		}
	}
	return true
}

// withoutSelf drops the "." entry (the item itself) of an item's field set: an item
// with nothing else owned projects to its keys alone, which are owned with it.
func withoutSelf(set map[string]any) map[string]any {
	if _, ok := set["."]; !ok {
		return set
	}
	out := make(map[string]any, len(set))
	for k, v := range set {
		if k != "." {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return map[string]any{"": nil} // not empty: keeps nothing rather than the whole item
	}
	return out
}
