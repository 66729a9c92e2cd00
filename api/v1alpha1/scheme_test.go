package v1alpha1_test

import (
	"os"
	"path/filepath"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// TestAddToSchemeRegistersEveryKind: AddToScheme registers each kind of config/crd/bases
// and its list under v1alpha1, and the meta/v1 options types of the group version, so
// that a new root type left out of addKnownTypes fails here, not in a running manager.
func TestAddToSchemeRegistersEveryKind(t *testing.T) {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, kind := range []string{crd.Spec.Names.Kind, crd.Spec.Names.ListKind} {
			if gvk := v1alpha1.GroupVersion.WithKind(kind); !s.Recognizes(gvk) {
				t.Errorf("%s: AddToScheme does not register %s", filepath.Base(f), gvk)
			}
		}
	}
	for _, kind := range []string{"ListOptions", "GetOptions", "DeleteOptions", "CreateOptions", "UpdateOptions", "PatchOptions"} {
		if gvk := v1alpha1.GroupVersion.WithKind(kind); !s.Recognizes(gvk) {
			t.Errorf("AddToScheme does not register %s", gvk)
		}
	}
}
