package helm_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestChartCRDsAreTheGeneratedOnes: the chart's files/crds holds byte-identical copies of
// config/crd/bases, no more and no fewer (`make chart-crds` refreshes them), and
// templates/crds.yaml renders each of them exactly as it is, plus the line of the
// annotation helm.sh/resource-policy: keep with crds.keep (the default) and nothing with
// crds.keep=false; crds.enabled=false renders no CRD.
func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	want := yamlFiles(t, repoPath("config", "crd", "bases"))
	got := yamlFiles(t, filepath.Join(chartDir, "files", "crds"))
	if !slices.Equal(got, want) {
		t.Fatalf("chart CRDs %v, config/crd/bases %v: run `make chart-crds`", got, want)
	}
	generated := map[string]string{} // CRD name: the YAML of config/crd/bases
	for _, name := range want {
		a := readFile(t, repoPath("config", "crd", "bases", name))
		b := readFile(t, filepath.Join(chartDir, "files", "crds", name))
		if !bytes.Equal(a, b) {
			t.Errorf("files/crds/%s differs from config/crd/bases: run `make chart-crds`", name)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		readYAML(t, repoPath("config", "crd", "bases", name), &crd)
		generated[crd.Name] = string(a)
	}
	for _, tc := range []struct {
		name string
		sets []string
		keep bool
	}{
		{name: "default: kept", keep: true},
		{name: "crds.keep=false", sets: []string{"crds.keep=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rendered := renderedCRDs(t, tc.sets...)
			if len(rendered) != len(generated) {
				t.Fatalf("rendered %d CRDs, want the %d of config/crd/bases", len(rendered), len(generated))
			}
			for name, src := range generated {
				doc, ok := rendered[name]
				if !ok {
					t.Errorf("CRD %s not rendered", name)
					continue
				}
				want := strings.TrimPrefix(src, "---\n")
				if tc.keep {
					want = strings.Replace(want, "\n  annotations:\n", "\n  annotations:\n    helm.sh/resource-policy: keep\n", 1)
				}
				if strings.TrimSpace(doc) != strings.TrimSpace(want) {
					t.Errorf("CRD %s renders other than config/crd/bases (keep %v):\n%s", name, tc.keep, firstLineDiff(doc, want))
				}
				var crd apiextensionsv1.CustomResourceDefinition
				if err := yaml.UnmarshalStrict([]byte(doc), &crd); err != nil {
					t.Fatalf("CRD %s: %v", name, err)
				}
				if got := crd.Annotations["helm.sh/resource-policy"]; (got == "keep") != tc.keep || (!tc.keep && got != "") {
					t.Errorf("CRD %s: helm.sh/resource-policy %q, keep %v", name, got, tc.keep)
				}
			}
		})
	}
	if out, err := helm("template", releaseName, chartDir, "--set", "crds.enabled=false"); err != nil {
		t.Fatal(err)
	} else if strings.Contains(out, "kind: CustomResourceDefinition") {
		t.Error("crds.enabled=false still renders a CustomResourceDefinition")
	}
}

// renderedCRDs renders templates/crds.yaml and returns each document's text by CRD name.
func renderedCRDs(t *testing.T, sets ...string) map[string]string {
	t.Helper()
	args := []string{"template", releaseName, chartDir, "--show-only", "templates/crds.yaml"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := helm(args...)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{}
	for _, doc := range strings.Split(out, "---\n# Source: "+chartName+"/templates/crds.yaml\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var meta struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("rendered CRD: %v\n%.300s", err, doc)
		}
		docs[meta.Metadata.Name] = doc
	}
	return docs
}

// firstLineDiff shows where two texts first differ.
func firstLineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got %q\nwant %q", i+1, gl, wl)
		}
	}
	return "(equal)"
}

// TestChartCopiesAreCurrent: the files the chart's templates read are byte copies of the
// generated RBAC and of the alerts (`make chart-files` refreshes them).
func TestChartCopiesAreCurrent(t *testing.T) {
	for copyName, source := range map[string]string{
		"rbac-role.yaml":            repoPath("config", "rbac", "role.yaml"),
		"leader-election-role.yaml": repoPath("config", "rbac", "leader_election_role.yaml"),
		"metrics-reader-role.yaml":  repoPath("config", "rbac", "metrics_reader_role.yaml"),
		"prometheus-rules.yaml":     repoPath("config", "prometheus", "rules.yaml"),
	} {
		if !bytes.Equal(readFile(t, filepath.Join(chartDir, "files", copyName)), readFile(t, source)) {
			t.Errorf("files/%s differs from %s: run `make chart-files`", copyName, source)
		}
	}
}

// TestRenderedRBACIsTheGeneratedRBAC: the ClusterRole the chart renders has exactly the
// rules controller-gen generates into config/rbac/role.yaml (the ones the envtest suite
// runs the operator under), the leader-election Role and the metrics-reader ClusterRole
// those of config/rbac.
func TestRenderedRBACIsTheGeneratedRBAC(t *testing.T) {
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			v := loadValues(t, tc.values...)
			if !v.boolean("rbac.create") {
				t.Skip("rbac.create is false: the chart renders no RBAC")
			}
			objs := helmTemplate(t, "drift", tc.values)
			for _, role := range []struct{ kind, name, file string }{
				{"ClusterRole", fullname(v), "role.yaml"},
				{"Role", fullname(v) + "-leader-election", "leader_election_role.yaml"},
				{"ClusterRole", fullname(v) + "-metrics-reader", "metrics_reader_role.yaml"},
			} {
				var want struct {
					Rules []rbacv1.PolicyRule `json:"rules"`
				}
				readYAML(t, repoPath("config", "rbac", role.file), &want)
				rules, _, _ := unstructured.NestedSlice(find(t, objs, role.kind, role.name).Object, "rules")
				var got []rbacv1.PolicyRule
				fromValues(t, rules, &got)
				if len(want.Rules) == 0 || !equality.Semantic.DeepEqual(got, want.Rules) {
					t.Errorf("%s %s rules differ from config/rbac/%s:\n got %+v\nwant %+v", role.kind, role.name, role.file, got, want.Rules)
				}
			}
		})
	}
}

func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && filepath.Ext(e.Name()) == ".yaml" {
			out = append(out, e.Name())
		}
	}
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
