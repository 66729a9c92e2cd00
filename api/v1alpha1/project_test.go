package v1alpha1_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// project is the part of kubebuilder's PROJECT file that describes the resources.
type project struct {
	Domain    string            `json:"domain"`
	Repo      string            `json:"repo"`
	Resources []projectResource `json:"resources"`
}

type projectResource struct {
	API struct {
		Namespaced bool `json:"namespaced"`
	} `json:"api"`
	Controller bool   `json:"controller"`
	Domain     string `json:"domain"`
	Group      string `json:"group"`
	Kind       string `json:"kind"`
	Path       string `json:"path"`
	Version    string `json:"version"`
}

// TestProjectFileDescribesTheTree: PROJECT lists exactly the kinds of config/crd/bases,
// each with its group, version and scope, the Go package its types are in, and a
// controller only where controllers/ has its reconciler; repo is the module path.
func TestProjectFileDescribesTheTree(t *testing.T) {
	root := filepath.Join("..", "..")
	var p project
	data, err := os.ReadFile(filepath.Join(root, "PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &p); err != nil { // only the resources are checked
		t.Fatal(err)
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	module := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(goMod), "\n", 2)[0], "module"))
	if p.Repo != module {
		t.Errorf("PROJECT repo %q, go.mod module %q", p.Repo, module)
	}
	reconcilers := ""
	files, _ := filepath.Glob(filepath.Join(root, "controllers", "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		reconcilers += string(b)
	}
	crds, _ := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if len(crds) == 0 || len(crds) != len(p.Resources) {
		t.Fatalf("PROJECT lists %d resources, config/crd/bases has %d CRDs", len(p.Resources), len(crds))
	}
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(b, crd); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(p.Resources, func(r projectResource) bool { return r.Kind == crd.Spec.Names.Kind })
		if i < 0 {
			t.Errorf("kind %s (%s) is not in PROJECT", crd.Spec.Names.Kind, filepath.Base(f))
			continue
		}
		r := p.Resources[i]
		group := r.Domain
		if r.Group != "" {
			group = r.Group + "." + r.Domain
		}
		if group != crd.Spec.Group {
			t.Errorf("%s: PROJECT group %q, CRD %q", r.Kind, group, crd.Spec.Group)
		}
		if !slices.ContainsFunc(crd.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool { return v.Name == r.Version }) {
			t.Errorf("%s: PROJECT version %s is not a version of the CRD", r.Kind, r.Version)
		}
		if r.API.Namespaced != (crd.Spec.Scope == apiextensionsv1.NamespaceScoped) {
			t.Errorf("%s: PROJECT namespaced %v, CRD scope %s", r.Kind, r.API.Namespaced, crd.Spec.Scope)
		}
		if want := module + "/api/" + r.Version; r.Path != want {
			t.Errorf("%s: PROJECT path %q, want %q", r.Kind, r.Path, want)
		}
		if has := strings.Contains(reconcilers, "type "+r.Kind+"Reconciler struct"); r.Controller != has {
			t.Errorf("%s: PROJECT controller %v, but controllers/ has a %sReconciler: %v", r.Kind, r.Controller, r.Kind, has)
		}
	}
}
