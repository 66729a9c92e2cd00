package render

import (
	"encoding/json"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SpecManagers names the field managers that own fields under spec, the most recent
// change first: who changed what the operator acts on. Our own manager never owns spec
// (the operator does not write it), so it never shows here.
func SpecManagers(entries []metav1.ManagedFieldsEntry) []string {
	type owner struct {
		name string
		at   metav1.Time
	}
	var owners []owner
	seen := map[string]bool{}
	for _, e := range entries {
		if e.Subresource != "" || e.FieldsV1 == nil || !strings.Contains(e.FieldsV1.GetRawString(), `"f:spec"`) {
			continue
		}
		name := e.Manager
		if e.Operation == metav1.ManagedFieldsOperationApply {
			name += " (apply)"
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		var at metav1.Time
		if e.Time != nil {
			at = *e.Time
		}
		owners = append(owners, owner{name, at})
	}
	sort.SliceStable(owners, func(i, j int) bool { return owners[j].at.Before(&owners[i].at) })
	out := make([]string, len(owners))
	for i, o := range owners {
		out[i] = o.name
	}
	return out
}

// OwnsField says whether manager (any manager when empty) owns the field at path (the
// managed fields' keys, for example "f:spec", "f:replicas"), through the main resource
// or a subresource (an autoscaler writes replicas through scale).
func OwnsField(entries []metav1.ManagedFieldsEntry, manager string, path ...string) bool {
	for _, e := range entries {
		if (manager != "" && e.Manager != manager) || e.FieldsV1 == nil {
			continue
		}
		var node map[string]any
		if err := json.Unmarshal([]byte(e.FieldsV1.GetRawString()), &node); err != nil {
			continue
		}
		found := true
		for _, key := range path {
			next, ok := node[key].(map[string]any)
			if !ok {
				found = false
				break
			}
			node = next
		}
		if found {
			return true
		}
	}
	return false
}
