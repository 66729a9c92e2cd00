package helm_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

const monitoringGroup = "monitoring.coreos.com"

// renderCases are the values the chart is rendered with: its defaults, every option
// set, and RBAC and the ServiceAccount left to the platform.
var renderCases = []struct {
	name   string
	ns     string
	values []string
}{
	{name: "default values", ns: "helm-default"},
	{name: "all options", ns: "helm-all-options", values: []string{"testdata/all-options.yaml"}},
	{name: "external RBAC and ServiceAccount", ns: "helm-external-rbac", values: []string{"testdata/external-rbac.yaml"}},
	{name: "ServiceMonitor with defaults", ns: "helm-servicemonitor", values: []string{"testdata/servicemonitor-defaults.yaml"}},
	{name: "plain HTTP metrics", ns: "helm-plain-metrics", values: []string{"testdata/plain-metrics.yaml"}},
}

// TestRenderedObjectsAreAcceptedByTheAPIServer renders the chart and applies every object
// with server-side apply in dry-run mode to a real API server (apply is always strict
// about fields, so a misspelt or misplaced field fails), runs the manager's pod through
// Pod Security admission "restricted", and checks that every value reached its place.
// The monitoring.coreos.com objects have no CRD here; test/promrules checks their rules
// with Prometheus' own parser.
func TestRenderedObjectsAreAcceptedByTheAPIServer(t *testing.T) {
	chart := chartMeta(t)
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			createNamespace(t, tc.ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
			v := loadValues(t, tc.values...)
			objs := helmTemplate(t, tc.ns, tc.values)

			if got, want := kinds(objs), expectedKinds(v); !slices.Equal(got, want) {
				t.Fatalf("rendered kinds %v, want %v", got, want)
			}
			for _, o := range objs {
				if o.GetKind() == "CustomResourceDefinition" { // rendered as generated (drift_test.go)
					if keep := o.GetAnnotations()["helm.sh/resource-policy"] == "keep"; keep != v.boolean("crds.keep") {
						t.Errorf("CRD %s: kept on uninstall %v, want crds.keep %v", o.GetName(), keep, v.boolean("crds.keep"))
					}
				} else {
					checkCommonLabels(t, o, v)
				}
				if o.GroupVersionKind().Group == monitoringGroup {
					if want := orDefault(v.str(monitorKey(o.GetKind())+".namespace"), tc.ns); o.GetNamespace() != want {
						t.Errorf("%s in namespace %q, want %q", o.GetKind(), o.GetNamespace(), want)
					}
					continue
				}
				if isNamespaced(o.GetKind()) && o.GetNamespace() != tc.ns {
					t.Errorf("%s %s in namespace %q, want the release namespace %q", o.GetKind(), o.GetName(), o.GetNamespace(), tc.ns)
				}
				err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()),
					client.DryRunAll, client.FieldOwner("helm-chart-test"), client.ForceOwnership)
				if err != nil {
					t.Errorf("server-side dry-run apply of %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
			if t.Failed() {
				return
			}

			dep := &appsv1.Deployment{}
			into(t, find(t, objs, "Deployment"), dep)
			saName := checkServiceAccount(t, objs, v)
			checkDeployment(t, dep, v, chart, saName)
			checkRBAC(t, objs, v, tc.ns, saName)
			svc := &corev1.Service{}
			into(t, find(t, objs, "Service"), svc)
			checkService(t, svc, dep, v)
			if v.boolean("serviceMonitor.enabled") {
				checkServiceMonitor(t, find(t, objs, "ServiceMonitor"), svc, v, tc.ns)
			}
			if v.boolean("gatewayPodMonitor.enabled") {
				checkGatewayPodMonitor(t, find(t, objs, "PodMonitor"), v)
			}
			checkPodAdmission(t, tc.ns, dep, objs, saName)
		})
	}
}

// expectedKinds lists what the values ask for.
func expectedKinds(v values) []string {
	want := []string{"Deployment", "Service"}
	if v.boolean("crds.enabled") {
		want = append(want, "CustomResourceDefinition", "CustomResourceDefinition")
	}
	if v.boolean("serviceAccount.create") {
		want = append(want, "ServiceAccount")
	}
	if v.boolean("rbac.create") {
		// The manager's ClusterRole and the metrics-reader ClusterRole.
		want = append(want, "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
		if len(v.list("rbac.metricsReaders")) > 0 {
			want = append(want, "ClusterRoleBinding")
		}
	}
	if v.boolean("serviceMonitor.enabled") {
		want = append(want, "ServiceMonitor")
	}
	if v.boolean("gatewayPodMonitor.enabled") {
		want = append(want, "PodMonitor")
	}
	if v.boolean("prometheusRule.enabled") {
		want = append(want, "PrometheusRule")
	}
	slices.Sort(want)
	return want
}

func monitorKey(kind string) string {
	switch kind {
	case "ServiceMonitor":
		return "serviceMonitor"
	case "PodMonitor":
		return "gatewayPodMonitor"
	default:
		return "prometheusRule"
	}
}

func isNamespaced(kind string) bool {
	return kind != "ClusterRole" && kind != "ClusterRoleBinding" && kind != "CustomResourceDefinition"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func checkCommonLabels(t *testing.T, o *unstructured.Unstructured, v values) {
	t.Helper()
	l := o.GetLabels()
	for k, want := range v.strMap("commonLabels") {
		if l[k] != want {
			t.Errorf("%s %s: label %s=%q, want %q (commonLabels)", o.GetKind(), o.GetName(), k, l[k], want)
		}
	}
	if l["app.kubernetes.io/instance"] != releaseName || l["app.kubernetes.io/managed-by"] != "Helm" {
		t.Errorf("%s %s: standard labels missing: %v", o.GetKind(), o.GetName(), l)
	}
}

type chartInfo struct {
	AppVersion string `json:"appVersion"`
	Version    string `json:"version"`
	Name       string `json:"name"`
}

func chartMeta(t *testing.T) chartInfo {
	var c chartInfo
	readYAML(t, chartDir+"/Chart.yaml", &c)
	return c
}

// checkServiceAccount returns the name the manager runs as.
func checkServiceAccount(t *testing.T, objs []*unstructured.Unstructured, v values) string {
	t.Helper()
	if !v.boolean("serviceAccount.create") {
		if v.str("serviceAccount.name") == "" {
			t.Fatal("serviceAccount.create false without serviceAccount.name")
		}
		return v.str("serviceAccount.name")
	}
	sa := &corev1.ServiceAccount{}
	into(t, find(t, objs, "ServiceAccount"), sa)
	if n := v.str("serviceAccount.name"); n != "" && sa.Name != n {
		t.Errorf("ServiceAccount %q, want serviceAccount.name %q", sa.Name, n)
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Error("the ServiceAccount must not hand its token to every pod (automountServiceAccountToken: false)")
	}
	for k, want := range v.strMap("serviceAccount.annotations") {
		if sa.Annotations[k] != want {
			t.Errorf("ServiceAccount annotation %s=%q, want %q", k, sa.Annotations[k], want)
		}
	}
	return sa.Name
}

func checkDeployment(t *testing.T, dep *appsv1.Deployment, v values, chart chartInfo, saName string) {
	t.Helper()
	if f := v.str("fullnameOverride"); f != "" && dep.Name != f {
		t.Errorf("Deployment %q, want fullnameOverride %q", dep.Name, f)
	}
	if dep.Name != fullname(v) {
		t.Errorf("Deployment %q, want %q", dep.Name, fullname(v))
	}
	if want := int32(v.get("replicaCount").(float64)); ptr.Deref(dep.Spec.Replicas, -1) != want {
		t.Errorf("replicas %v, want %d", dep.Spec.Replicas, want)
	}
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("selector %v does not select the pod labels %v (%v)", dep.Spec.Selector, dep.Spec.Template.Labels, err)
	}
	tmpl := dep.Spec.Template
	// The gateways' NetworkPolicy admits the operator by this label, whatever nameOverride says.
	if tmpl.Labels[render.OperatorPodLabel] != render.OperatorPodLabelValue {
		t.Errorf("pod labels %v lack %s=%s: the gateways' admin port would refuse the operator", tmpl.Labels, render.OperatorPodLabel, render.OperatorPodLabelValue)
	}
	for k, want := range v.strMap("podLabels") {
		if tmpl.Labels[k] != want {
			t.Errorf("pod label %s=%q, want %q", k, tmpl.Labels[k], want)
		}
	}
	for k, want := range v.strMap("podAnnotations") {
		if tmpl.Annotations[k] != want {
			t.Errorf("pod annotation %s=%q, want %q", k, tmpl.Annotations[k], want)
		}
	}
	pod := tmpl.Spec
	if pod.ServiceAccountName != saName {
		t.Errorf("serviceAccountName %q, want %q", pod.ServiceAccountName, saName)
	}
	if !ptr.Deref(pod.AutomountServiceAccountToken, false) {
		t.Error("the manager talks to the API server: its pod must mount the token (automountServiceAccountToken: true)")
	}
	if pod.PriorityClassName != v.str("priorityClassName") {
		t.Errorf("priorityClassName %q, want %q", pod.PriorityClassName, v.str("priorityClassName"))
	}
	wantFromValues(t, "nodeSelector", v.get("nodeSelector"), pod.NodeSelector, map[string]string{})
	wantFromValues(t, "tolerations", v.get("tolerations"), pod.Tolerations, []corev1.Toleration{})
	wantFromValues(t, "imagePullSecrets", v.get("imagePullSecrets"), pod.ImagePullSecrets, []corev1.LocalObjectReference{})
	if v.get("affinity") != nil && len(v.get("affinity").(map[string]any)) > 0 {
		wantFromValues(t, "affinity", v.get("affinity"), pod.Affinity, &corev1.Affinity{})
	} else if pod.Affinity != nil {
		t.Errorf("affinity %v, want none", pod.Affinity)
	}

	// Restricted security context, fixed whatever the values say.
	psc := pod.SecurityContext
	if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and seccomp RuntimeDefault", psc)
	}
	if psc != nil {
		checkID(t, "runAsUser", v.get("securityContext.runAsUser"), psc.RunAsUser)
		checkID(t, "runAsGroup", v.get("securityContext.runAsGroup"), psc.RunAsGroup)
	}
	if len(pod.Containers) != 1 || pod.Containers[0].Name != "manager" {
		t.Fatalf("want one container named manager, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if want := imageRef(v, "image", chart.AppVersion); c.Image != want {
		t.Errorf("image %q, want %q", c.Image, want)
	}
	if string(c.ImagePullPolicy) != v.str("image.pullPolicy") {
		t.Errorf("imagePullPolicy %q, want %q", c.ImagePullPolicy, v.str("image.pullPolicy"))
	}
	sc := c.SecurityContext
	if sc == nil || ptr.Deref(sc.AllowPrivilegeEscalation, true) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
		!ptr.Deref(sc.RunAsNonRoot, false) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(sc.Capabilities.Add) != 0 || ptr.Deref(sc.Privileged, false) {
		t.Errorf("container securityContext %+v: want no privilege escalation, read-only root, non-root, drop ALL", sc)
	}
	wantRes := corev1.ResourceRequirements{}
	fromValues(t, v.get("resources"), &wantRes)
	if !equality.Semantic.DeepEqual(c.Resources, wantRes) {
		t.Errorf("resources %+v, want %+v", c.Resources, wantRes)
	}

	// The arguments must be flags the manager really has, with the values asked for.
	if len(c.Args) == 0 || c.Args[0] != "manager" {
		t.Fatalf("args %v: want the manager subcommand first", c.Args)
	}
	flags := managerFlags(t)
	if err := flags.Parse(c.Args[1:]); err != nil {
		t.Fatalf("args %v are not the manager's flags: %v", c.Args, err)
	}
	wantGateway := imageRef(v, "image", chart.AppVersion)
	if v.str("gateway.image.repository") != "" {
		wantGateway = imageRef(v, "gateway.image", chart.AppVersion)
	}
	for name, want := range map[string]string{
		"leader-elect":   "true",
		"gateway-image":  wantGateway,
		"cluster-domain": v.str("clusterDomain"),
		"zap-log-level":  v.str("logLevel"),
		"gateway-metrics-namespaces": func() string {
			var out []string
			if list, ok := v.get("gatewayPodMonitor.scraperNamespaces").([]any); ok {
				for _, ns := range list {
					out = append(out, fmt.Sprint(ns))
				}
			}
			return strings.Join(out, ",")
		}(),
	} {
		if got := flags.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s=%q, want %q", name, got, want)
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for flagName, portName := range map[string]string{"metrics-bind-address": "metrics", "health-probe-bind-address": "health"} {
		addr := flags.Lookup(flagName).Value.String()
		if want := ":" + strconv.Itoa(int(ports[portName])); ports[portName] == 0 || addr != want {
			t.Errorf("--%s=%q but container port %q is %d", flagName, addr, portName, ports[portName])
		}
	}
	checkMetricsServing(t, pod, c, flags, v)
	for name, probe := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != name || probe.HTTPGet.Port.String() != "health" {
			t.Errorf("probe %s: %+v, want an HTTP GET on the health port", name, probe)
		}
	}
}

// checkMetricsServing: --metrics-secure says what metrics.secure says, and with
// metrics.certSecretName the manager reads its certificate from that Secret, mounted
// read-only where --metrics-cert-path points; without it, no volume at all.
func checkMetricsServing(t *testing.T, pod corev1.PodSpec, c corev1.Container, flags *flag.FlagSet, v values) {
	t.Helper()
	if got, want := flags.Lookup("metrics-secure").Value.String(), strconv.FormatBool(v.boolean("metrics.secure")); got != want {
		t.Errorf("--metrics-secure=%s, want %s (metrics.secure)", got, want)
	}
	certPath := flags.Lookup("metrics-cert-path").Value.String()
	secret := v.str("metrics.certSecretName")
	if secret == "" {
		if certPath != "" || len(pod.Volumes) != 0 || len(c.VolumeMounts) != 0 {
			t.Errorf("no metrics.certSecretName, but --metrics-cert-path=%q, volumes %v, mounts %v", certPath, pod.Volumes, c.VolumeMounts)
		}
		return
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].Secret == nil || pod.Volumes[0].Secret.SecretName != secret {
		t.Fatalf("volumes %+v, want the one Secret %s", pod.Volumes, secret)
	}
	items := map[string]string{}
	for _, it := range pod.Volumes[0].Secret.Items {
		items[it.Key] = it.Path
	}
	if want := map[string]string{"tls.crt": "tls.crt", "tls.key": "tls.key"}; !equality.Semantic.DeepEqual(items, want) {
		t.Errorf("metrics certificate volume items %v, want %v (the names the manager reads)", items, want)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].Name != pod.Volumes[0].Name || !c.VolumeMounts[0].ReadOnly ||
		c.VolumeMounts[0].MountPath != certPath {
		t.Errorf("mounts %+v, want volume %s read-only at --metrics-cert-path=%q", c.VolumeMounts, pod.Volumes[0].Name, certPath)
	}
}

func checkID(t *testing.T, name string, want any, got *int64) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s %d, want none", name, *got)
	case want != nil && (got == nil || float64(*got) != want.(float64)):
		t.Errorf("%s %v, want %v", name, got, want)
	}
}

// fromValues converts a part of the values into a typed Kubernetes struct.
func fromValues(t *testing.T, in, out any) {
	t.Helper()
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatalf("values %s: %v", data, err)
	}
}

// wantFromValues compares a rendered field with the value it came from; empty equals nil.
func wantFromValues[T any](t *testing.T, name string, in any, got, want T) {
	t.Helper()
	if in != nil {
		fromValues(t, in, &want)
	}
	if !equality.Semantic.DeepDerivative(want, got) || !equality.Semantic.DeepDerivative(got, want) {
		t.Errorf("%s: rendered %+v, want %+v", name, got, want)
	}
}

// managerFlags builds the manager's flag set from cmd/voiceagent-operator/manager.go:
// every fs.XxxVar / fs.Xxx call there, plus controller-runtime's zap flags, bound by the
// same zap.Options.BindFlags the manager calls.
func managerFlags(t *testing.T) *flag.FlagSet {
	t.Helper()
	file := repoPath("cmd", "voiceagent-operator", "manager.go")
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || len(call.Args) < 2 {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); !ok || id.Name != "fs" {
			return true
		}
		nameArg := call.Args[0]
		if strings.HasSuffix(sel.Sel.Name, "Var") {
			nameArg = call.Args[1]
		}
		lit, ok := nameArg.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		name, _ := strconv.Unquote(lit.Value)
		if strings.HasPrefix(sel.Sel.Name, "Bool") {
			fs.Bool(name, false, "")
		} else {
			fs.String(name, "", "")
		}
		return true
	})
	for _, want := range []string{"leader-elect", "gateway-image", "metrics-bind-address", "health-probe-bind-address", "cluster-domain"} {
		if fs.Lookup(want) == nil {
			t.Fatalf("%s defines no flag --%s any more: update the chart", file, want)
		}
	}
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	return fs
}

func checkRBAC(t *testing.T, objs []*unstructured.Unstructured, v values, ns, saName string) {
	t.Helper()
	if !v.boolean("rbac.create") {
		return
	}
	manager := []any{map[string]any{"kind": "ServiceAccount", "name": saName, "namespace": ns}}
	for _, pair := range [][2]string{{"ClusterRoleBinding", "ClusterRole"}, {"RoleBinding", "Role"}} {
		name := fullname(v)
		if pair[1] == "Role" {
			name += "-leader-election"
		}
		checkBinding(t, find(t, objs, pair[0], name), find(t, objs, pair[1], name), manager)
	}
	if r := find(t, objs, "Role"); r.GetNamespace() != ns {
		t.Errorf("leader-election Role in %q, want the release namespace %q", r.GetNamespace(), ns)
	}
	// The metrics-reader ClusterRole, bound to rbac.metricsReaders only: the manager itself
	// never scrapes its own metrics.
	reader := find(t, objs, "ClusterRole", fullname(v)+"-metrics-reader")
	readers := v.list("rbac.metricsReaders")
	if len(readers) == 0 {
		for _, o := range objs {
			if o.GetKind() == "ClusterRoleBinding" && o.GetName() == reader.GetName() {
				t.Errorf("ClusterRoleBinding %s rendered without rbac.metricsReaders", o.GetName())
			}
		}
		return
	}
	var want []any
	for _, r := range readers {
		s := map[string]any{}
		for k, x := range r.(map[string]any) {
			s[k] = x
		}
		if s["kind"] != "ServiceAccount" {
			s["apiGroup"] = "rbac.authorization.k8s.io"
		}
		want = append(want, s)
	}
	checkBinding(t, find(t, objs, "ClusterRoleBinding", reader.GetName()), reader, want)
}

// checkBinding: b binds exactly the subjects to role r.
func checkBinding(t *testing.T, b, r *unstructured.Unstructured, subjects []any) {
	t.Helper()
	ref, _, _ := unstructured.NestedStringMap(b.Object, "roleRef")
	if ref["kind"] != r.GetKind() || ref["name"] != r.GetName() || ref["apiGroup"] != "rbac.authorization.k8s.io" {
		t.Errorf("%s %s roleRef %v, want %s %s", b.GetKind(), b.GetName(), ref, r.GetKind(), r.GetName())
	}
	got, _, _ := unstructured.NestedSlice(b.Object, "subjects")
	if !equality.Semantic.DeepEqual(got, subjects) {
		t.Errorf("%s %s subjects %v, want %v", b.GetKind(), b.GetName(), got, subjects)
	}
}

func checkService(t *testing.T, svc *corev1.Service, dep *appsv1.Deployment, v values) {
	t.Helper()
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not select the manager's pods %v", svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("want one Service port, got %v", svc.Spec.Ports)
	}
	p := svc.Spec.Ports[0]
	if want := int32(v.get("metrics.service.port").(float64)); p.Port != want {
		t.Errorf("Service port %d, want %d", p.Port, want)
	}
	found := false
	for _, cp := range dep.Spec.Template.Spec.Containers[0].Ports {
		found = found || (cp.Name == p.TargetPort.String())
	}
	if !found {
		t.Errorf("Service targetPort %q is no container port", p.TargetPort.String())
	}
	for k, want := range v.strMap("metrics.service.annotations") {
		if svc.Annotations[k] != want {
			t.Errorf("Service annotation %s=%q, want %q", k, svc.Annotations[k], want)
		}
	}
}

func checkMonitorMeta(t *testing.T, o *unstructured.Unstructured, v values, key string) {
	t.Helper()
	for k, want := range v.strMap(key + ".labels") {
		if o.GetLabels()[k] != want {
			t.Errorf("%s label %s=%q, want %q", o.GetKind(), k, o.GetLabels()[k], want)
		}
	}
}

func checkEndpoint(t *testing.T, kind string, ep map[string]any, v values, key string) {
	t.Helper()
	for _, f := range []string{"interval", "scrapeTimeout"} {
		got, _ := ep[f].(string)
		if want := v.str(key + "." + f); got != want {
			t.Errorf("%s %s %q, want %q", kind, f, got, want)
		}
	}
}

func checkServiceMonitor(t *testing.T, sm *unstructured.Unstructured, svc *corev1.Service, v values, ns string) {
	t.Helper()
	checkMonitorMeta(t, sm, v, "serviceMonitor")
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the metrics Service %v", sel, svc.Labels)
	}
	names, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames")
	if !slices.Equal(names, []string{ns}) {
		t.Errorf("ServiceMonitor namespaces %v, want [%s]", names, ns)
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("want one endpoint, got %v", eps)
	}
	ep := eps[0].(map[string]any)
	if ep["port"] != svc.Spec.Ports[0].Name {
		t.Errorf("ServiceMonitor port %v, want the Service's %q", ep["port"], svc.Spec.Ports[0].Name)
	}
	checkEndpoint(t, "ServiceMonitor", ep, v, "serviceMonitor")
	checkScrapeAuth(t, ep, v, svc)
}

// checkScrapeAuth: with metrics.secure the ServiceMonitor scrapes over HTTPS with a
// bearer token (Prometheus' own, or the Secret asked for) and verifies the certificate
// against the CA asked for, for the Service's DNS name; with no CA it skips verification,
// as kubebuilder's config/prometheus/monitor.yaml does. Without metrics.secure, plain
// HTTP and no credentials.
func checkScrapeAuth(t *testing.T, ep map[string]any, v values, svc *corev1.Service) {
	t.Helper()
	auth := map[string]any{}
	for _, k := range []string{"scheme", "bearerTokenFile", "authorization", "tlsConfig"} {
		if x, ok := ep[k]; ok {
			auth[k] = x
		}
	}
	want := map[string]any{"scheme": "http"}
	if v.boolean("metrics.secure") {
		want = map[string]any{"scheme": "https"}
		if name := v.str("serviceMonitor.bearerTokenSecret.name"); name != "" {
			want["authorization"] = map[string]any{"type": "Bearer", "credentials": map[string]any{
				"name": name, "key": v.str("serviceMonitor.bearerTokenSecret.key")}}
		} else {
			want["bearerTokenFile"] = "/var/run/secrets/kubernetes.io/serviceaccount/token"
		}
		if ca := v.str("serviceMonitor.tls.caSecret.name"); ca != "" {
			want["tlsConfig"] = map[string]any{
				"ca":                 map[string]any{"secret": map[string]any{"name": ca, "key": v.str("serviceMonitor.tls.caSecret.key")}},
				"serverName":         orDefault(v.str("serviceMonitor.tls.serverName"), svc.Name+"."+svc.Namespace+".svc"),
				"insecureSkipVerify": false,
			}
		} else {
			want["tlsConfig"] = map[string]any{"insecureSkipVerify": true}
		}
	}
	if !equality.Semantic.DeepEqual(auth, want) {
		t.Errorf("ServiceMonitor scrape settings %v, want %v", auth, want)
	}
}

// checkGatewayPodMonitor renders VoiceAgent pods with the operator's own renderer and
// checks that the PodMonitor selects them, scrapes a port the gateway has, and copies
// the VoiceAgent's name into the label the alerts group by.
func checkGatewayPodMonitor(t *testing.T, pm *unstructured.Unstructured, v values) {
	t.Helper()
	checkMonitorMeta(t, pm, v, "gatewayPodMonitor")
	sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	nsSel, _, _ := unstructured.NestedMap(pm.Object, "spec", "namespaceSelector")
	want := map[string]any{"any": true}
	if ns := v.get("gatewayPodMonitor.namespaces").([]any); len(ns) > 0 {
		want = map[string]any{"matchNames": ns}
	}
	if !equality.Semantic.DeepEqual(nsSel, want) {
		t.Errorf("PodMonitor namespaceSelector %v, want %v", nsSel, want)
	}
	eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(eps) != 1 {
		t.Fatalf("want one podMetricsEndpoint, got %v", eps)
	}
	ep := eps[0].(map[string]any)
	checkEndpoint(t, "PodMonitor", ep, v, "gatewayPodMonitor")
	relabel := ep["relabelings"].([]any)[0].(map[string]any)
	for _, file := range []string{"minimal.yaml", "full.yaml"} {
		va := &v1alpha1.VoiceAgent{}
		readYAML(t, repoPath("internal", "render", "testdata", file), va)
		ch, err := render.Render(va, render.Inputs{GatewayImage: "voiceagent-operator:test"})
		if err != nil {
			t.Fatal(err)
		}
		// The gateway pods, and never the agent pods (whose inbound TLS role also has an
		// admin port, with no metrics).
		podLabels := ch.GatewayDeployment.Spec.Template.Labels
		if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(podLabels)) {
			t.Errorf("%s: PodMonitor selector %v does not select the gateway pod %v", file, sel, podLabels)
		}
		if agentLabels := ch.Deployment.Spec.Template.Labels; labels.SelectorFromSet(sel).Matches(labels.Set(agentLabels)) {
			t.Errorf("%s: PodMonitor selector %v selects the agent pod %v", file, sel, agentLabels)
		}
		var gateway *corev1.Container
		for i, c := range ch.GatewayDeployment.Spec.Template.Spec.Containers {
			if c.Name == render.GatewayContainer {
				gateway = &ch.GatewayDeployment.Spec.Template.Spec.Containers[i]
			}
		}
		if gateway == nil || !slices.ContainsFunc(gateway.Ports, func(p corev1.ContainerPort) bool { return p.Name == ep["port"] }) {
			t.Errorf("%s: PodMonitor port %v is no port of the gateway container", file, ep["port"])
		}
		src := relabel["sourceLabels"].([]any)[0].(string)
		label := strings.TrimPrefix(src, "__meta_kubernetes_pod_label_")
		found := false
		for k, val := range podLabels {
			if sanitize(k) == label && val == va.Name {
				found = true
			}
		}
		if !found || relabel["targetLabel"] != "voiceagent" {
			t.Errorf("%s: relabeling %v does not copy the VoiceAgent's name %q from the pod labels %v into `voiceagent`", file, relabel, va.Name, podLabels)
		}
	}
}

// sanitize is how Prometheus' Kubernetes discovery turns a label name into a meta label.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// checkPodAdmission creates what the pod needs (its ServiceAccount, its PriorityClass) and
// then the manager's pod in dry-run mode in a namespace that enforces Pod Security
// "restricted": the API server's own admission judges the security context.
func checkPodAdmission(t *testing.T, ns string, dep *appsv1.Deployment, objs []*unstructured.Unstructured, saName string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: saName, Namespace: ns}}
	if err := k8s.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if pc := dep.Spec.Template.Spec.PriorityClassName; pc != "" {
		err := k8s.Create(ctx, &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: pc}, Value: 1000})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	tmpl := dep.Spec.Template
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: dep.Name + "-test", Namespace: ns, Labels: tmpl.Labels}, Spec: tmpl.Spec}
	if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Fatalf("the manager's pod is refused in a namespace enforcing Pod Security restricted: %v", err)
	}
	// Control: the same pod as root must be refused, or the namespace enforces nothing.
	root := pod.DeepCopy()
	root.Spec.SecurityContext.RunAsNonRoot = ptr.To(false)
	root.Spec.Containers[0].SecurityContext.RunAsNonRoot = nil
	if err := k8s.Create(ctx, root, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("control: want a PodSecurity violation for a root pod, got %v", err)
	}
}

func createNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}
