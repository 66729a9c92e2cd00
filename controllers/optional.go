package controllers

import (
	"context"
	"fmt"
	"sync"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// optionalAPIs discovers the CRDs of cert-manager and External Secrets Operator, which
// a cluster may not have, and starts watching their kinds the first time they are seen,
// so that a VoiceAgent recovers by itself once they are installed.
type optionalAPIs struct {
	reader client.Reader

	mu       sync.Mutex
	watching map[schema.GroupVersionKind]bool
	// startWatch is nil when no controller runs (direct calls in tests).
	startWatch func(gvk schema.GroupVersionKind) error
}

func newOptionalAPIs(reader client.Reader) *optionalAPIs {
	return &optionalAPIs{reader: reader, watching: map[schema.GroupVersionKind]bool{}}
}

// installed reports whether the CRD exists, and if so makes sure its kind is watched.
func (o *optionalAPIs) installed(ctx context.Context, crdName string, gvk schema.GroupVersionKind) (bool, error) {
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	if err := o.reader.Get(ctx, client.ObjectKey{Name: crdName}, crd); err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("get CRD %s: %w", crdName, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.watching[gvk] || o.startWatch == nil {
		return true, nil
	}
	if err := o.startWatch(gvk); err != nil {
		return true, fmt.Errorf("CRD %s found: %w", crdName, err)
	}
	o.watching[gvk] = true
	return true, nil
}
