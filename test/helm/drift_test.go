package helm_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestChartCRDsAreTheGeneratedOnes: the chart's crds/ holds byte-identical copies of
// config/crd/bases, no more and no fewer (`make chart-crds` refreshes them).
func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	want := yamlFiles(t, repoPath("config", "crd", "bases"))
	got := yamlFiles(t, filepath.Join(chartDir, "crds"))
	if !slices.Equal(got, want) {
		t.Fatalf("chart CRDs %v, config/crd/bases %v: run `make chart-crds`", got, want)
	}
	for _, name := range want {
		a := readFile(t, repoPath("config", "crd", "bases", name))
		b := readFile(t, filepath.Join(chartDir, "crds", name))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from config/crd/bases: run `make chart-crds`", name)
		}
	}
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
