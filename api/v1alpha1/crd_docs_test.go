package v1alpha1_test

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// TestEveryFieldIsDocumented walks the generated CRDs: `kubectl explain` shows each
// field's description, so a field without one is a hole in the documentation users read
// at the terminal. Status fields count too: auditors read them.
func TestEveryFieldIsDocumented(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("CRDs not found: %v %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(data, crd); err != nil {
			t.Fatal(err)
		}
		for _, v := range crd.Spec.Versions {
			root := v.Schema.OpenAPIV3Schema
			var missing []string
			checked = 0
			for _, top := range []string{"spec", "status"} {
				prop, ok := root.Properties[top]
				if !ok {
					t.Fatalf("%s: no %s", crd.Name, top)
				}
				undocumented(top, &prop, &missing)
			}
			if checked < 20 {
				t.Errorf("%s: only %d fields walked; the schema walk is broken", crd.Name, checked)
			}
			sort.Strings(missing)
			if len(missing) > 0 {
				t.Errorf("%s %s: fields without a description (kubectl explain shows nothing): %v", crd.Name, v.Name, missing)
			}
		}
	}
}

var checked int

func undocumented(path string, s *apiextensionsv1.JSONSchemaProps, missing *[]string) {
	checked++
	if s.Description == "" {
		*missing = append(*missing, path)
	}
	for name, p := range s.Properties {
		undocumented(path+"."+name, &p, missing)
	}
	if s.Items != nil && s.Items.Schema != nil {
		// A list's element type is described by the list field itself; its own fields
		// still need descriptions.
		for name, p := range s.Items.Schema.Properties {
			undocumented(path+"[]."+name, &p, missing)
		}
	}
}
