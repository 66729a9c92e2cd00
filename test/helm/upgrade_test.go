package helm_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// previousCRDs are the CRDs of the chart before they moved into templates: its crds/
// folder as committed at f600432 (chart 0.1.0), older than config/crd/bases (no
// spec.voice, no integration pricing).
const previousCRDs = "testdata/crds-previous"

const voiceAgentsCRD = "voiceagents.voiceagent.dev"

// TestHelmUpgradeUpgradesTheCRDs plays, with the real helm CLI against a real API server,
// what a user does: install the chart that shipped its CRDs in crds/, create a VoiceAgent,
// `helm upgrade` to this chart, uninstall, install again. It checks what Helm does with
// CRDs as templates:
//   - the upgrade refuses CRDs it did not create (crds/ gives them no release metadata)
//     until they are adopted (docs/operations.md says how);
//   - after the upgrade the API server serves the new CRDs (a field only they know is
//     stored; the old ones pruned it), and the VoiceAgent created before is still there;
//   - uninstalling keeps the CRDs (helm.sh/resource-policy: keep) and so every VoiceAgent;
//   - a new release takes them over with --take-ownership.
func TestHelmUpgradeUpgradesTheCRDs(t *testing.T) {
	env := newEnvironment() // no CRDs: the old chart installs them
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	admin, err := env.AddUser(envtest.User{Name: "helm-upgrade-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfigFile := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfigFile, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	const ns = "voiceagent-system"
	onCluster := func(args ...string) (string, error) {
		return helm(append(args, "--namespace", ns, "--kubeconfig", kubeconfigFile)...)
	}

	// 1. The previous chart: Helm creates the CRDs of crds/ before the release.
	if out, err := onCluster("install", releaseName, previousChart(t), "--create-namespace"); err != nil {
		t.Fatalf("install the previous chart: %v\n%s", err, out)
	}
	old := waitEstablished(t, c, voiceAgentsCRD)
	checkSchema(t, old, filepath.Join(previousCRDs, "voiceagent.dev_voiceagents.yaml"))
	if old.Labels["app.kubernetes.io/managed-by"] == "Helm" || old.Annotations["meta.helm.sh/release-name"] != "" {
		t.Fatalf("a CRD from crds/ carries release metadata %v %v: the test no longer plays the previous chart", old.Labels, old.Annotations)
	}
	survivor := voiceAgent("default", "created-before-the-upgrade", true)
	if err := c.Create(ctx, survivor); err != nil {
		t.Fatal(err)
	}
	if _, found := voiceOf(t, c, survivor); found {
		t.Fatal("control: the previous CRD kept spec.voice, so the check after the upgrade proves nothing")
	}

	// 2. helm upgrade does not adopt objects it did not create.
	if out, err := onCluster("upgrade", releaseName, chartDir); err == nil || !strings.Contains(err.Error(), "invalid ownership metadata") {
		t.Fatalf("upgrade over CRDs from crds/ without adopting them: want Helm's ownership error, got %v\n%s", err, out)
	}
	// 3. Adopt them as docs/operations.md says (kubectl label / annotate), then upgrade.
	for _, name := range crdNames(t) {
		patch := `{"metadata":{"labels":{"app.kubernetes.io/managed-by":"Helm"},"annotations":{"meta.helm.sh/release-name":"` +
			releaseName + `","meta.helm.sh/release-namespace":"` + ns + `"}}}`
		crd := &apiextensionsv1.CustomResourceDefinition{}
		crd.Name = name
		if err := c.Patch(ctx, crd, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := onCluster("upgrade", releaseName, chartDir); err != nil {
		t.Fatalf("upgrade to this chart: %v\n%s", err, out)
	}
	upgraded := waitEstablished(t, c, voiceAgentsCRD)
	checkSchema(t, upgraded, filepath.Join(chartDir, "files", "crds", "voiceagent.dev_voiceagents.yaml"))
	if upgraded.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("upgraded CRD annotations %v: want helm.sh/resource-policy: keep", upgraded.Annotations)
	}
	checkSurvived(t, c, survivor)
	// The new schema is served: spec.voice is stored now, on a new object and on the old one.
	eventually(t, func() error {
		after := voiceAgent("default", "created-after-the-upgrade", true)
		if err := c.Create(ctx, after); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		if _, found := voiceOf(t, c, after); !found {
			_ = c.Delete(ctx, after) // created while the old schema was still served
			return errString("spec.voice was pruned: the API server still serves the old CRD")
		}
		return nil
	})
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"voice":{"maxConcurrentSessions":3}}}`))
	if err := c.Patch(ctx, survivor, patch); err != nil {
		t.Fatal(err)
	}
	if v, found := voiceOf(t, c, survivor); !found || v["maxConcurrentSessions"] != int64(3) {
		t.Errorf("spec.voice of the VoiceAgent from before the upgrade: %v (found %v)", v, found)
	}

	// 4. Uninstall: the release goes, the CRDs and so the VoiceAgents stay.
	if out, err := onCluster("uninstall", releaseName, "--wait"); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	eventually(t, func() error {
		sa := &unstructured.Unstructured{}
		sa.SetAPIVersion("v1")
		sa.SetKind("ServiceAccount")
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: releaseName + "-" + chartName}, sa)
		if err == nil {
			return errString("the release's ServiceAccount is still there")
		}
		return client.IgnoreNotFound(err)
	})
	waitEstablished(t, c, voiceAgentsCRD)
	checkSurvived(t, c, survivor)

	// 5. Another release finds CRDs that name the old one as owner: --take-ownership.
	if _, err := onCluster("install", "vao-again", chartDir); err == nil || !strings.Contains(err.Error(), "invalid ownership metadata") {
		t.Fatalf("install under another name over kept CRDs: want Helm's ownership error, got %v", err)
	}
	if out, err := onCluster("install", "vao-again", chartDir, "--take-ownership"); err != nil {
		t.Fatalf("install --take-ownership: %v\n%s", err, out)
	}
	if crd := waitEstablished(t, c, voiceAgentsCRD); crd.Annotations["meta.helm.sh/release-name"] != "vao-again" {
		t.Errorf("CRD owner after --take-ownership: %v", crd.Annotations)
	}
	checkSurvived(t, c, survivor)
}

// previousChart is this chart as the previous version shipped its CRDs: in crds/ (those
// of testdata/crds-previous), without templates/crds.yaml and files/crds. Its other
// templates are this chart's; only the CRDs matter here.
func previousChart(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), chartName)
	err := filepath.WalkDir(chartDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(chartDir, path)
		if err != nil {
			return err
		}
		if rel == filepath.Join("templates", "crds.yaml") || rel == filepath.Join("files", "crds") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if rel == "Chart.yaml" {
			data = []byte(replaceLine(t, string(data), "version: ", "version: 0.1.0"))
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dst, "crds"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range yamlFiles(t, previousCRDs) {
		if err := os.WriteFile(filepath.Join(dst, "crds", name), readFile(t, filepath.Join(previousCRDs, name)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func replaceLine(t *testing.T, s, prefix, line string) string {
	t.Helper()
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines[i] = line
			return strings.Join(lines, "\n")
		}
	}
	t.Fatalf("no line starting %q", prefix)
	return s
}

// crdNames are the names of the chart's CRDs.
func crdNames(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, name := range yamlFiles(t, filepath.Join(chartDir, "files", "crds")) {
		var crd apiextensionsv1.CustomResourceDefinition
		readYAML(t, filepath.Join(chartDir, "files", "crds", name), &crd)
		out = append(out, crd.Name)
	}
	return out
}

func waitEstablished(t *testing.T, c client.Client, name string) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	eventually(t, func() error {
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return err
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return errString("CRD " + name + " is not established")
	})
	return crd
}

// checkSchema: the live CRD has the versions and schemas of the file.
func checkSchema(t *testing.T, live *apiextensionsv1.CustomResourceDefinition, file string) {
	t.Helper()
	var want apiextensionsv1.CustomResourceDefinition
	readYAML(t, file, &want)
	if len(live.Spec.Versions) != len(want.Spec.Versions) {
		t.Fatalf("CRD %s has %d versions, %s %d", live.Name, len(live.Spec.Versions), file, len(want.Spec.Versions))
	}
	for i, v := range want.Spec.Versions {
		got := live.Spec.Versions[i]
		if got.Name != v.Name || got.Served != v.Served || got.Storage != v.Storage ||
			!equality.Semantic.DeepEqual(got.Schema, v.Schema) {
			t.Errorf("CRD %s version %s is not the one of %s", live.Name, v.Name, file)
		}
	}
}

// voiceAgent is a minimal valid VoiceAgent; withVoice sets spec.voice, a field only the
// current CRD has.
func voiceAgent(ns, name string, withVoice bool) *unstructured.Unstructured {
	spec := map[string]any{
		"image": "registry.example.com/acme/agent:1.0",
		"model": map[string]any{"provider": "gemini", "name": "gemini-2.5-flash",
			"credentials": map[string]any{"secretRef": map[string]any{"name": "gemini-key", "key": "api-key"}}},
	}
	if withVoice {
		spec["voice"] = map[string]any{"maxConcurrentSessions": int64(2)}
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion("voiceagent.dev/v1alpha1")
	u.SetKind("VoiceAgent")
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// voiceOf reads spec.voice of the live object.
func voiceOf(t *testing.T, c client.Client, va *unstructured.Unstructured) (map[string]any, bool) {
	t.Helper()
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(va.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(va), live); err != nil {
		t.Fatal(err)
	}
	v, found, _ := unstructured.NestedMap(live.Object, "spec", "voice")
	return v, found
}

// checkSurvived: the object is still there, the same one (UID) as created.
func checkSurvived(t *testing.T, c client.Client, va *unstructured.Unstructured) {
	t.Helper()
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(va.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(va), live); err != nil {
		t.Fatalf("VoiceAgent %s: %v", va.GetName(), err)
	}
	if live.GetUID() != va.GetUID() {
		t.Fatalf("VoiceAgent %s was re-created (UID %s, was %s)", va.GetName(), live.GetUID(), va.GetUID())
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// eventually polls check until it returns nil, for at most 30 s.
func eventually(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within 30s: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // polling interval, not synchronisation
	}
}
