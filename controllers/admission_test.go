package controllers_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// TestInvalidVoiceAgentsAreRejectedAtAdmission applies every file of test/invalid to
// the real API server and checks that it is refused with the expected message, which
// names the field or says what to do.
func TestInvalidVoiceAgentsAreRejectedAtAdmission(t *testing.T) {
	ns := newNamespace(t)
	files, err := filepath.Glob(repoPath("test", "invalid", "*.yaml"))
	if err != nil || len(files) < 30 {
		t.Fatalf("want at least 30 invalid samples, found %d (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			expect := expectedFragment(t, f)
			obj := loadUnstructured(t, f)
			obj.SetNamespace(ns)
			err := k8s.Create(ctx, obj, client.DryRunAll)
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", expect)
			}
			if !strings.Contains(err.Error(), expect) {
				t.Errorf("error %q\n does not contain %q", err, expect)
			}
		})
	}
}

func expectedFragment(t *testing.T, file string) string {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	line, _ := bufio.NewReader(fh).ReadString('\n')
	frag, ok := strings.CutPrefix(strings.TrimSpace(line), "# expect: ")
	if !ok || frag == "" {
		t.Fatalf("%s: first line must be '# expect: <error fragment>'", file)
	}
	return frag
}

func loadUnstructured(t *testing.T, file string) *unstructured.Unstructured {
	t.Helper()
	docs := loadDocuments(t, file)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", file, len(docs))
	}
	return docs[0]
}

// loadDocuments reads every YAML document of a file.
func loadDocuments(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(string(data), "\n---\n") {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(obj.Object) > 0 {
			out = append(out, obj)
		}
	}
	return out
}

func sampleFiles(t *testing.T) []string {
	t.Helper()
	files, _ := filepath.Glob(repoPath("config", "samples", "*_v1alpha1_*.yaml"))
	if len(files) < 5 {
		t.Fatalf("found %d samples", len(files))
	}
	return files
}

func TestSamplesAreAccepted(t *testing.T) {
	ns := newNamespace(t)
	for _, f := range sampleFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, obj := range loadDocuments(t, f) {
				obj.SetNamespace(ns)
				if err := k8s.Create(ctx, obj, client.DryRunAll, client.FieldValidation("Strict")); err != nil {
					t.Fatalf("sample %s rejected: %v", obj.GetName(), err)
				}
			}
		})
	}
}

// TestSamplesShowNoDiffAfterReconcile applies every sample as a GitOps tool does
// (server-side apply under its own field manager), lets the operator reconcile, and
// compares what the API server returns with what was applied: every field of the
// manifest must come back unchanged (defaults the schema adds are extra fields, which
// Argo CD does not flag), and the operator must never have written the spec
// (generation stays 1). Either would be an endless out-of-sync in Argo CD.
func TestSamplesShowNoDiffAfterReconcile(t *testing.T) {
	ns := newNamespace(t)
	var applied []*unstructured.Unstructured
	for _, f := range sampleFiles(t) {
		for _, obj := range loadDocuments(t, f) {
			obj.SetNamespace(ns)
			if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()),
				client.FieldOwner("argocd-controller"), client.ForceOwnership); err != nil {
				t.Fatalf("apply %s %s: %v", obj.GetKind(), obj.GetName(), err)
			}
			applied = append(applied, obj)
		}
	}
	for _, want := range applied {
		t.Run(want.GetKind()+"/"+want.GetName(), func(t *testing.T) {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(want.GroupVersionKind())
			eventually(t, waitFor, func() error {
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(want), live); err != nil {
					return err
				}
				observed, _, _ := unstructured.NestedInt64(live.Object, "status", "observedGeneration")
				if observed != live.GetGeneration() {
					return fmt.Errorf("not reconciled yet: observedGeneration %d, generation %d", observed, live.GetGeneration())
				}
				return nil
			})
			if live.GetGeneration() != 1 {
				t.Errorf("generation %d: something wrote the spec after it was applied", live.GetGeneration())
			}
			for _, field := range []string{"spec", "metadata"} {
				if path := firstDifference(live.Object[field], want.Object[field], field); path != "" {
					t.Errorf("live object differs from the manifest at %s", path)
				}
			}
		})
	}
}

// firstDifference returns the path of the first field of want whose live value differs
// ("" when none). Fields only in live (server defaults, metadata the API server adds)
// are not differences.
func firstDifference(live, want any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return path
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if d := firstDifference(l[k], w[k], path+"."+k); d != "" {
				return d
			}
		}
		return ""
	case []any:
		l, ok := live.([]any)
		if !ok || len(l) != len(w) {
			return path
		}
		for i := range w {
			if d := firstDifference(l[i], w[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	default:
		if fmt.Sprint(live) != fmt.Sprint(want) {
			return fmt.Sprintf("%s (live %v, manifest %v)", path, live, want)
		}
		return ""
	}
}

// TestRenderedPodsPassRestrictedPodSecurity creates the rendered pod of each golden
// spec as a Pod in a namespace that enforces "restricted", so the API server's own Pod
// Security admission judges it. A privileged pod is the control: it must be refused.
func TestRenderedPodsPassRestrictedPodSecurity(t *testing.T) {
	ns := newNamespace(t)
	for _, file := range []string{"minimal.yaml", "full.yaml"} {
		t.Run(file, func(t *testing.T) {
			va := &v1alpha1.VoiceAgent{}
			data, err := os.ReadFile(repoPath("internal", "render", "testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(data, va); err != nil {
				t.Fatal(err)
			}
			va.Namespace = ns
			ch, err := render.Render(va, render.Inputs{GatewayImage: testImage, CertManager: true})
			if err != nil {
				t.Fatal(err)
			}
			// Both workloads' pods: the agent's (with its inbound TLS role as a native
			// sidecar in full.yaml) and the gateway's.
			for _, d := range []*appsv1.Deployment{ch.Deployment, ch.GatewayDeployment} {
				tmpl := d.Spec.Template
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: d.Name + "-", Labels: tmpl.Labels}, Spec: tmpl.Spec}
				if err := k8s.Create(ctx, pod); err != nil {
					t.Fatalf("restricted Pod Security admission refused the rendered pod of %s: %v", d.Name, err)
				}
			}
		})
	}
	t.Run("control: a privileged pod is refused", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "privileged"}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "x", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}},
		}}
		err := k8s.Create(ctx, pod)
		if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
			t.Fatalf("want a PodSecurity violation, got %v", err)
		}
	})
}
