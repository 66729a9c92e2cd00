// Package kustomize_test checks what `make build-installer` writes to dist/install.yaml
// and `make deploy` applies: config/default rendered by hack/installer.sh for one image,
// with the real kustomize (bin/kustomize, `make kustomize`) and applied to a real API
// server (envtest, with the binaries of hack/build-controlplane.sh).
package kustomize_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

const image = "registry.example.com/acme/voiceagent-operator:v9.9.9@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func repoPath(p ...string) string { return filepath.Join(append([]string{"..", ".."}, p...)...) }

// TestInstallerAppliesToARealAPIServer renders the installer for one image and checks
// that the image is both the manager's and the gateways' (GATEWAY_IMAGE), that the
// metrics flags, ports and Service agree, and that every object is accepted by a real
// API server, the manager's pod by Pod Security admission "restricted" of the
// namespace the installer creates.
func TestInstallerAppliesToARealAPIServer(t *testing.T) {
	objs := render(t)
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind())
	}
	slices.Sort(got)
	want := []string{"ClusterRole", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "CustomResourceDefinition",
		"Deployment", "Namespace", "Role", "RoleBinding", "Service", "ServiceAccount"}
	if !slices.Equal(got, want) {
		t.Fatalf("kinds %v, want %v", got, want)
	}

	dep := &appsv1.Deployment{}
	into(t, find(t, objs, "Deployment"), dep)
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Name != "manager" || c.Image != image {
		t.Errorf("container %s image %q, want manager with %q", c.Name, c.Image, image)
	}
	var gateway string
	for _, e := range c.Env {
		if e.Name == "GATEWAY_IMAGE" {
			gateway = e.Value
		}
	}
	if gateway != image {
		t.Errorf("GATEWAY_IMAGE %q, want the operator's own image %q: the gateways would run another version", gateway, image)
	}
	checkMetrics(t, c, dep, find(t, objs, "Service"))

	env := &envtest.Environment{}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		env.BinaryAssetsDirectory = repoPath("bin", "controlplane")
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest (run `make test`, which builds kube-apiserver and etcd): %v", err)
	}
	defer func() { _ = env.Stop() }()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// As `kubectl apply` does it: the Namespace and the CRDs first.
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return order(a) - order(b) })
	for _, o := range objs {
		if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()),
			client.FieldOwner("installer-test"), client.ForceOwnership); err != nil {
			t.Fatalf("server-side apply of %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetKind() == "CustomResourceDefinition" {
			waitEstablished(t, k8s, o.GetName())
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "manager-test", Namespace: dep.Namespace, Labels: dep.Spec.Template.Labels},
		Spec: dep.Spec.Template.Spec}
	if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Fatalf("the manager's pod is refused in its namespace: %v", err)
	}
	ns := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: dep.Namespace}, ns); err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace %s labels %v (%v): want Pod Security enforce=restricted", dep.Namespace, ns.Labels, err)
	}
}

// checkMetrics: the manager serves metrics over HTTPS (--metrics-secure) on the
// container port named metrics, which the Service reaches and whose pods it selects.
func checkMetrics(t *testing.T, c corev1.Container, dep *appsv1.Deployment, svcObj *unstructured.Unstructured) {
	t.Helper()
	if !slices.Contains(c.Args, "--metrics-secure") && !slices.Contains(c.Args, "--metrics-secure=true") {
		t.Errorf("args %v: want --metrics-secure", c.Args)
	}
	var port int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			port = p.ContainerPort
		}
	}
	if port == 0 || !slices.Contains(c.Args, "--metrics-bind-address=:"+strconv.Itoa(int(port))) {
		t.Errorf("args %v and ports %v: --metrics-bind-address must be the metrics container port", c.Args, c.Ports)
	}
	svc := &corev1.Service{}
	into(t, svcObj, svc)
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not select the manager's pods %v", svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "metrics" || svc.Namespace != dep.Namespace {
		t.Errorf("Service %s/%s ports %v: want one port to the container port metrics", svc.Namespace, svc.Name, svc.Spec.Ports)
	}
}

func order(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	}
	return 2
}

// render runs hack/installer.sh as `make build-installer` does.
func render(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	kustomize := os.Getenv("KUSTOMIZE")
	if kustomize == "" {
		kustomize, _ = filepath.Abs(repoPath("bin", "kustomize"))
	}
	if _, err := os.Stat(kustomize); err != nil {
		t.Fatalf("kustomize missing: run `make kustomize` (make test does): %v", err)
	}
	cmd := exec.Command(repoPath("hack", "installer.sh"), image)
	cmd.Env = append(os.Environ(), "KUSTOMIZE="+kustomize)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/installer.sh: %v\n%s", err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(&stdout))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s, got %d", kind, len(found))
	}
	return found[0]
}

func into(t *testing.T, u *unstructured.Unstructured, out any) {
	t.Helper()
	data, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func waitEstablished(t *testing.T, c client.Client, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		err := c.Get(context.Background(), client.ObjectKey{Name: name}, crd)
		if err == nil {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return
				}
			}
			err = fmt.Errorf("not established: %v", crd.Status.Conditions)
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRD %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}
