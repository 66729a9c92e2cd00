// Package helm_test tests the Helm chart in charts/voiceagent-operator with the real helm
// CLI (built into bin/ by hack/build-helm.sh) and a real API server (envtest, with the
// binaries hack/build-controlplane.sh builds): lint, render, server-side dry-run apply of
// every object, Pod Security admission of the manager's pod, schema rejections, drift
// against the generated files in config/, and helm install, upgrade and uninstall of the
// CRDs on an API server of their own.
package helm_test

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
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

const releaseName = "vao"

var (
	k8s     client.Client // admin client of the test API server
	restCfg *rest.Config
	helmBin string
)

func repoPath(p ...string) string { return filepath.Join(append([]string{"..", ".."}, p...)...) }

var chartDir = repoPath("charts", "voiceagent-operator")

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	helmBin = os.Getenv("HELM")
	if helmBin == "" {
		helmBin = repoPath("bin", "helm")
	}
	if _, err := os.Stat(helmBin); err != nil {
		fmt.Fprintln(os.Stderr, "helm missing: run `make test` (it runs hack/build-helm.sh) or hack/build-helm.sh:", err)
		return 1
	}
	// The chart's own CRDs, as `helm install` creates them before anything else (Helm
	// orders CustomResourceDefinitions first).
	env := newEnvironment(filepath.Join(chartDir, "files", "crds"))
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest (run `make test`, which builds kube-apiserver and etcd):", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	restCfg = cfg
	if k8s, err = client.New(cfg, client.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// newEnvironment configures envtest with the binaries in bin/controlplane and the CRDs
// of crdDirs.
func newEnvironment(crdDirs ...string) *envtest.Environment {
	env := &envtest.Environment{CRDDirectoryPaths: crdDirs, ErrorIfCRDPathMissing: len(crdDirs) > 0}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		env.BinaryAssetsDirectory = repoPath("bin", "controlplane")
	}
	return env
}

// helm runs the helm CLI and returns stdout; stderr is in the error.
func helm(args ...string) (string, error) {
	cmd := exec.Command(helmBin, args...)
	// A private home, so that no repository config or plugin of the machine leaks in.
	home, err := os.MkdirTemp("", "helm-home-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(home)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// helmTemplate runs `helm template` with the given values files and --set flags.
func helmTemplate(t *testing.T, namespace string, valuesFiles []string, sets ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", releaseName, chartDir, "--namespace", namespace}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := helm(args...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parseObjects(out)
	if err != nil {
		t.Fatalf("parse helm template output: %v\n%s", err, out)
	}
	if len(objs) == 0 {
		t.Fatal("helm template rendered nothing")
	}
	return objs
}

// parseObjects splits a multi-document YAML stream into objects, skipping empty documents.
func parseObjects(s string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		m := map[string]any{}
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// find returns the one object of kind (and name, when given) or fails.
func find(t *testing.T, objs []*unstructured.Unstructured, kind string, name ...string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && (len(name) == 0 || o.GetName() == name[0]) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %v, got %d (kinds: %v)", kind, name, len(found), kinds(objs))
	}
	return found[0]
}

func kinds(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind())
	}
	sort.Strings(out)
	return out
}

// into converts an unstructured object into a typed one, failing on unknown fields.
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

func readYAML(t *testing.T, path string, out any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

var ctx = context.Background()
