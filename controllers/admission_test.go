package controllers_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &obj.Object); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return obj
}

func TestSamplesAreAccepted(t *testing.T) {
	ns := newNamespace(t)
	files, _ := filepath.Glob(repoPath("config", "samples", "*_v1alpha1_*.yaml"))
	if len(files) < 3 {
		t.Fatalf("found %d samples", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			obj := loadUnstructured(t, f)
			obj.SetNamespace(ns)
			if err := k8s.Create(ctx, obj, client.DryRunAll, client.FieldValidation("Strict")); err != nil {
				t.Fatalf("sample rejected: %v", err)
			}
		})
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
			ch, err := render.Render(va, render.Inputs{GatewayImage: testImage})
			if err != nil {
				t.Fatal(err)
			}
			tmpl := ch.Deployment.Spec.Template
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: va.Name + "-", Labels: tmpl.Labels}, Spec: tmpl.Spec}
			if err := k8s.Create(ctx, pod); err != nil {
				t.Fatalf("restricted Pod Security admission refused the rendered pod: %v", err)
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
