package render

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// FuzzRender builds VoiceAgents (and the AuditSink they use) from fuzz inputs, keeps
// those the API server would admit, judged in-process by the CRDs of config/crd/bases
// (structural schema with defaults, list-map keys, CEL rules, object names), and holds
// Render to its contract for them: it never panics, and what it returns is valid as far
// as can be checked without an API server (names, labels, ports, selectors, CIDRs, the
// pod's volumes, mounts, probes and listeners, the gateway configuration), and the
// ConfigMap never names a credential's Secret or remote key.
func FuzzRender(f *testing.F) {
	crds := loadCRDs(f)
	seeds := append([]renderInput{}, renderSeeds...)
	for _, c := range renderEdgeCases {
		ri := c.base
		c.mutate(&ri)
		seeds = append(seeds, ri)
	}
	for _, s := range seeds {
		f.Add(s.name, s.namespace, s.image, s.replicas, s.port, s.provider, s.modelName, s.modelEndpoint,
			s.fallback, s.fallbackEndpoint, s.integName, s.integType, s.integEndpoint, s.integHost, s.integPort,
			s.secret, s.daily, s.monthly, s.rps, s.burst, s.duration, s.sessions,
			s.ingressNamespace, s.egressCIDR, s.sinkName, s.sinkTarget, s.dnsName, s.flags)
	}
	f.Fuzz(func(t *testing.T, name, namespace, image string, replicas, port int32, provider uint8, modelName, modelEndpoint string,
		fallback uint8, fallbackEndpoint, integName string, integType uint8, integEndpoint, integHost string, integPort int32,
		secret, daily, monthly string, rps, burst int32, duration string, sessions int32,
		ingressNamespace, egressCIDR, sinkName, sinkTarget, dnsName string, flags uint16) {
		renderAndCheck(t, crds, renderInput{name, namespace, image, replicas, port, provider, modelName, modelEndpoint,
			fallback, fallbackEndpoint, integName, integType, integEndpoint, integHost, integPort,
			secret, daily, monthly, rps, burst, duration, sessions,
			ingressNamespace, egressCIDR, sinkName, sinkTarget, dnsName, flags})
	})
}

// renderInput is one fuzz input: the fields of a VoiceAgent and its AuditSink that
// vary, and flags that switch its optional parts on (see renderAndCheck).
type renderInput struct {
	name, namespace, image                                      string
	replicas, port                                              int32
	provider                                                    uint8
	modelName, modelEndpoint                                    string
	fallback                                                    uint8
	fallbackEndpoint                                            string
	integName                                                   string
	integType                                                   uint8
	integEndpoint, integHost                                    string
	integPort                                                   int32
	secret, daily, monthly                                      string
	rps, burst                                                  int32
	duration                                                    string
	sessions                                                    int32
	ingressNamespace, egressCIDR, sinkName, sinkTarget, dnsName string
	flags                                                       uint16
}

// renderSeeds are the fuzzer's seeds: the test data's two specs and two more that
// switch on the other optional parts.
var renderSeeds = []renderInput{
	{"support-line", "callcenter", "registry.example.com/acme/agent@sha256:" + strings.Repeat("ab", 32), 2, 8080,
		0, "gemini-2.5-flash", "", 2, "", "crm", 1, "https://crm.example.com/api", "", 0,
		"gemini-key", "50.00", "1000.00", 2, 200, "30s", 10, "telephony", "10.20.0.0/16", "soc-webhook", "https://siem.example.com/ingest", "",
		0xffff &^ (1 << 15)},
	{"hello", "demo", "agent:1", 1, 0, 0, "gemini-2.5-flash", "", 0, "", "", 0, "", "", 0,
		"k", "", "", 0, 0, "", 0, "", "", "", "", "", 0},
	{"a", "b", "x", 3, 9000, 1, "gpt-4o", "https://llm.internal.svc:8443/v1", 3, "https://api.anthropic.com",
		"orders-db", 6, "", "orders-db.data.svc.cluster.local", 5432,
		"db", "0.000003", "", 7, 1, "1h", 1, "kube-system", "2001:db8::/32", "siem-syslog", "syslog.example.com:6514", "agent.example.com",
		1<<1 | 1<<5 | 1<<6 | 1<<7 | 1<<8 | 1<<12},
	{"tickets", "support", "img", 100, 1024, 3, "local", "https://10.1.2.3:9443/", 4, "https://x.y.svc",
		"tickets", 2, "https://tickets.support.svc.cluster.local:8443/graphql", "", 0,
		"t", "1", "1", 1000, 1000, "90m", 100, "ns", "10.0.0.0/8", "sink", "https://a.b.svc/x", "",
		1<<0 | 1<<4 | 1<<5 | 1<<9 | 1<<10 | 1<<11 | 1<<13 | 1<<14},
}

// renderAndCheck builds the VoiceAgent and AuditSink of ri, and when the API server
// would admit them, renders them and checks the children.
func renderAndCheck(t *testing.T, crds crdSet, ri renderInput) {
	t.Helper()
	vaObj, sinkObj := buildObjects(ri)
	if vaObj == nil {
		return
	}
	va, in, ok := admit(t, crds, vaObj, sinkObj)
	if !ok {
		return // the API server refuses it: not Render's to handle
	}
	ch, err := Render(va, in)
	if err != nil {
		if !strings.Contains(err.Error(), "spec.") {
			t.Fatalf("Render's error does not name the field: %v\n%s", err, dump(vaObj))
		}
		return // an admitted spec Render refuses, naming the field: the InvalidSpec condition
	}
	if errs := checkChildren(va, in, ch); len(errs) > 0 {
		t.Fatalf("Render made objects the API server would refuse or that cannot run:\n  %s\nVoiceAgent:\n%s\nAuditSinks: %s",
			strings.Join(errs, "\n  "), dump(vaObj), dump(sinkObj))
	}
}

// buildObjects builds the VoiceAgent and AuditSink (nil when flag 5 is off) of ri, as
// a client would send them; nil when ri carries the canary outside credentials.
func buildObjects(ri renderInput) (vaObj, sinkObj map[string]any) {
	name, namespace, image := ri.name, ri.namespace, ri.image
	replicas, port, provider, modelName, modelEndpoint := ri.replicas, ri.port, ri.provider, ri.modelName, ri.modelEndpoint
	fallback, fallbackEndpoint, integName, integType := ri.fallback, ri.fallbackEndpoint, ri.integName, ri.integType
	integEndpoint, integHost, integPort := ri.integEndpoint, ri.integHost, ri.integPort
	secret, daily, monthly, rps, burst, duration, sessions := ri.secret, ri.daily, ri.monthly, ri.rps, ri.burst, ri.duration, ri.sessions
	ingressNamespace, egressCIDR, sinkName, sinkTarget, dnsName, flags := ri.ingressNamespace, ri.egressCIDR, ri.sinkName, ri.sinkTarget, ri.dnsName, ri.flags
	for _, s := range []string{name, namespace, image, modelName, modelEndpoint, fallbackEndpoint, integName, integEndpoint,
		integHost, daily, monthly, duration, ingressNamespace, egressCIDR, sinkName, sinkTarget, dnsName} {
		if strings.Contains(s, canary) {
			return nil, nil // the ConfigMap may name these; only credential references carry the canary
		}
	}
	flag := func(bit uint) bool { return flags&(1<<bit) != 0 }
	providers := []string{"gemini", "openai", "anthropic", "openai-compatible", "bogus"}
	cred := func(slot string) map[string]any {
		if flag(0) {
			es := map[string]any{
				"storeRef":  map[string]any{"kind": "ClusterSecretStore", "name": canary + "-store"},
				"remoteRef": map[string]any{"key": canary + "/" + slot + "/" + secret, "property": canary + "-property"},
			}
			if flag(13) {
				es["refreshInterval"] = duration
			}
			return map[string]any{"externalSecret": es}
		}
		return map[string]any{"secretRef": map[string]any{"name": canary + "-" + slot + secret, "key": canary + "-key"}}
	}
	model := map[string]any{"provider": providers[int(provider)%len(providers)], "name": modelName, "credentials": cred("model")}
	if modelEndpoint != "" {
		model["endpoint"] = modelEndpoint
	}
	if flag(9) {
		model["timeout"] = duration
	}
	if fallback%6 != 0 {
		fb := map[string]any{"provider": providers[int(fallback-1)%len(providers)], "name": modelName + "-fallback", "credentials": cred("fallback")}
		if fallbackEndpoint != "" {
			fb["endpoint"] = fallbackEndpoint
		}
		model["fallbacks"] = []any{fb}
	}
	spec := map[string]any{"image": image, "model": model}
	if !flag(15) {
		spec["replicas"] = int64(replicas)
		spec["gateway"] = map[string]any{"replicas": int64(max(replicas, 1))}
	}
	if port != 0 {
		spec["port"] = int64(port)
	}
	types := []string{"", "rest", "graphql", "slack", "whatsapp", "email", "database"}
	if ty := types[int(integType)%len(types)]; ty != "" {
		in := map[string]any{"name": integName, "type": ty, "credentials": cred("integration")}
		if ty == "database" {
			in["host"], in["port"] = integHost, int64(integPort)
		} else {
			in["endpoint"] = integEndpoint
			if flag(14) {
				in["auth"] = map[string]any{"type": "header", "headerName": "X-Api-Key"}
			}
		}
		if rps > 0 {
			in["rateLimit"] = map[string]any{"requestsPerMinute": int64(rps), "burst": int64(burst)}
		}
		// A second integration, so that two share the pod.
		spec["integrations"] = []any{in, map[string]any{"name": "crm-" + integName, "type": "rest", "endpoint": "https://crm.example.com/"}}
	}
	// A limit store at the integration host when the integration is not a database
	// (whose host it is): in-cluster names, private and public addresses alike.
	if integHost != "" && types[int(integType)%len(types)] != "database" {
		redis := map[string]any{"address": net.JoinHostPort(integHost, strconv.Itoa(int(integPort))), "credentials": cred("limit-store-password")}
		if flag(14) {
			redis["username"] = cred("limit-store-username")
		}
		if flag(13) {
			redis["tls"] = map[string]any{"serverName": integHost, "ca": cred("limit-store-ca")}
		}
		ls := map[string]any{"redis": redis}
		if flag(2) {
			ls["failurePolicy"] = "FailClosed"
		}
		spec["limitStore"] = ls
	}
	if rps != 0 {
		spec["rateLimits"] = map[string]any{"requestsPerSecond": int64(rps), "burst": int64(burst), "maxConcurrentCalls": int64(sessions), "tokensPerMinute": int64(rps) * 1000}
	}
	if daily != "" || monthly != "" {
		cl := map[string]any{"onExceeded": "Block"}
		if flag(2) {
			cl["onExceeded"] = "AlertOnly"
		}
		if daily != "" {
			cl["dailyBudget"] = daily
		}
		if monthly != "" {
			cl["monthlyBudget"] = monthly
		}
		spec["costLimits"] = cl
	}
	if flag(3) {
		voice := map[string]any{"maxSessionDuration": duration, "maxConcurrentSessions": int64(sessions), "sessionsPerMinute": int64(rps)}
		if flag(12) {
			voice["drainTimeout"] = duration
		}
		spec["voice"] = voice
	}
	if flag(10) {
		spec["circuitBreaker"] = map[string]any{"failureThreshold": int64(burst), "openDuration": duration}
	}
	enc := map[string]any{}
	if flag(1) {
		tls := map[string]any{"issuerRef": map[string]any{"kind": "ClusterIssuer", "name": "internal-ca"}}
		if flag(11) {
			tls["duration"], tls["renewBefore"] = duration, duration
		}
		if flag(8) {
			tls["dnsNames"] = []any{dnsName}
		}
		enc["inTransit"] = tls
	}
	if flag(7) {
		enc["atRest"] = map[string]any{"keyFrom": cred("session-key")}
	}
	if len(enc) > 0 {
		spec["encryption"] = enc
	}
	if flag(4) {
		rule := map[string]any{"to": []any{map[string]any{"ipBlock": map[string]any{"cidr": egressCIDR}}}}
		if integPort != 0 {
			rule["ports"] = []any{map[string]any{"protocol": "TCP", "port": int64(integPort)}}
		}
		spec["network"] = map[string]any{
			"allowIngressFrom": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{corev1.LabelMetadataName: ingressNamespace}}}},
			"allowEgressTo":    []any{rule},
		}
	}

	if flag(5) {
		spec["audit"] = map[string]any{"sinkRefs": []any{map[string]any{"name": sinkName}}}
		sinkSpec := map[string]any{"type": "webhook", "webhook": map[string]any{"url": sinkTarget,
			"credentials": map[string]any{"bearerToken": cred("sink-token"), "signingKey": cred("sink-key")}}}
		if flag(6) {
			sinkSpec = map[string]any{"type": "syslog", "syslog": map[string]any{"address": sinkTarget}}
		}
		sinkObj = map[string]any{"apiVersion": "voiceagent.dev/v1alpha1", "kind": "AuditSink",
			"metadata": map[string]any{"name": sinkName, "namespace": namespace, "uid": "00000000-0000-0000-0000-0000000000a5"},
			"spec":     sinkSpec}
	}
	vaObj = map[string]any{"apiVersion": "voiceagent.dev/v1alpha1", "kind": "VoiceAgent",
		"metadata": map[string]any{"name": name, "namespace": namespace, "uid": "00000000-0000-0000-0000-00000000005a", "generation": int64(3)},
		"spec":     spec}
	// What the API server receives is JSON: strings are UTF-8 (invalid bytes become
	// U+FFFD on the way), integers int64.
	return viaJSON(vaObj), viaJSON(sinkObj)
}

func viaJSON(obj map[string]any) map[string]any {
	if obj == nil {
		return nil
	}
	data, err := json.Marshal(obj)
	if err != nil {
		panic(err) // maps of strings, numbers, booleans, maps and slices
	}
	out := map[string]any{}
	if err := utiljson.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	return out
}

// admit defaults and judges vaObj and sinkObj as the API server would, and decodes
// them as the operator's client does. ok is false when the API server would refuse
// them.
func admit(t *testing.T, crds crdSet, vaObj, sinkObj map[string]any) (va *v1alpha1.VoiceAgent, in Inputs, ok bool) {
	t.Helper()
	if errs := crds.voiceAgents.admit(vaObj); len(errs) > 0 {
		return nil, in, false
	}
	va = &v1alpha1.VoiceAgent{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(vaObj, va); err != nil {
		if strings.Contains(err.Error(), "time: invalid duration") {
			t.Skipf("known gap, see TestAdmittedDurationsDecode: %v", err)
		}
		t.Fatalf("the API server admits this VoiceAgent but the operator cannot decode it: %v\n%s", err, dump(vaObj))
	}
	in = Inputs{GatewayImage: "registry.example.com/voiceagent-operator@sha256:" + strings.Repeat("cd", 32),
		AgentSecretVersions: map[string]string{va.Name + "-session-key": "1"},
		Admin:               AdminAccess{OperatorNamespace: "voiceagent-system", ScraperNamespaces: []string{"monitoring"}},
		CertManager:         va.Spec.Replicas == nil || *va.Spec.Replicas%2 == 0}
	if sinkObj != nil {
		if errs := crds.auditSinks.admit(sinkObj); len(errs) > 0 {
			return nil, in, false
		}
		sink := v1alpha1.AuditSink{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(sinkObj, &sink); err != nil {
			t.Fatalf("the API server admits this AuditSink but the operator cannot decode it: %v\n%s", err, dump(sinkObj))
		}
		in.Sinks = []v1alpha1.AuditSink{sink}
	}
	return va, in, true
}

// canary marks every credential reference the fuzzer writes (Secret names and keys,
// stores, remote keys and properties); the ConfigMap must hold none of them.
const canary = "q7canary"

func dump(obj map[string]any) string {
	if obj == nil {
		return "none"
	}
	b, _ := yaml.Marshal(obj)
	return string(b)
}

// crdAdmission judges a custom resource the way the API server's create path does,
// short of webhooks: defaults, structural schema, embedded object metadata, list-type
// invariants, then the CEL rules, and the name rules of every object.
type crdAdmission struct {
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

type crdSet struct{ voiceAgents, auditSinks *crdAdmission }

var (
	crdsOnce sync.Once
	crdsVal  crdSet
	crdsErr  error
)

func loadCRDs(tb testing.TB) crdSet {
	tb.Helper()
	crdsOnce.Do(func() {
		dir := filepath.Join("..", "..", "config", "crd", "bases")
		if crdsVal.voiceAgents, crdsErr = newCRDAdmission(filepath.Join(dir, "voiceagent.dev_voiceagents.yaml")); crdsErr != nil {
			return
		}
		crdsVal.auditSinks, crdsErr = newCRDAdmission(filepath.Join(dir, "voiceagent.dev_auditsinks.yaml"))
	})
	if crdsErr != nil {
		tb.Fatal(crdsErr)
	}
	return crdsVal
}

func newCRDAdmission(file string) (*crdAdmission, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(data, crd); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(crd.Spec.Versions) != 1 {
		return nil, fmt.Errorf("%s: %d versions; the fuzzer knows one", file, len(crd.Spec.Versions))
	}
	internal := &apiextensionsinternal.CustomResourceValidation{}
	if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(crd.Spec.Versions[0].Schema, internal, nil); err != nil {
		return nil, err
	}
	structural, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
	if err != nil {
		return nil, err
	}
	sv, _, err := apiservervalidation.NewSchemaValidator(internal.OpenAPIV3Schema)
	if err != nil {
		return nil, err
	}
	return &crdAdmission{structural: structural, schema: sv, cel: cel.NewValidator(structural, true, celconfig.PerCallLimit)}, nil
}

// admit defaults obj in place and returns why the API server would refuse it.
func (a *crdAdmission) admit(obj map[string]any) field.ErrorList {
	var errs field.ErrorList
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
	}
	for _, msg := range validation.IsDNS1123Label(ns) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "namespace"), ns, msg))
	}
	if len(errs) > 0 {
		return errs
	}
	structuraldefaulting.Default(obj, a.structural)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, a.schema)...)
	errs = append(errs, schemaobjectmeta.Validate(context.Background(), nil, obj, a.structural, false)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, a.structural, obj)...)
	if len(errs) > 0 {
		return errs
	}
	celErrs, _ := a.cel.Validate(context.Background(), nil, a.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return celErrs
}

// checkChildren lists what is wrong with ch: every problem the API server would refuse
// the object for that can be seen without one, and what would keep the pod from running.
func checkChildren(va *v1alpha1.VoiceAgent, in Inputs, ch *Children) []string {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	msgs := func(what string, m []string) {
		for _, s := range m {
			bad("%s: %s", what, s)
		}
	}
	fieldErrs := func(l field.ErrorList) {
		for _, e := range l {
			bad("%s", e.Error())
		}
	}

	type named struct {
		kind string
		obj  metav1.Object
	}
	objs := []named{{"ServiceAccount", ch.ServiceAccount}, {"ConfigMap", ch.ConfigMap}, {"Deployment", ch.Deployment},
		{"Service", ch.Service}, {"NetworkPolicy", ch.NetworkPolicy},
		{"ServiceAccount", ch.GatewayServiceAccount}, {"Deployment", ch.GatewayDeployment},
		{"Service", ch.GatewayService}, {"NetworkPolicy", ch.GatewayNetworkPolicy}}
	for _, pdb := range []*policyv1.PodDisruptionBudget{ch.PodDisruptionBudget, ch.GatewayPodDisruptionBudget} {
		if pdb != nil {
			objs = append(objs, named{"PodDisruptionBudget", pdb})
		}
	}
	for _, o := range ch.GatewayTLS {
		objs = append(objs, named{o.GetKind(), o})
	}
	if ch.Certificate != nil {
		objs = append(objs, named{"Certificate", ch.Certificate})
	}
	for _, es := range ch.ExternalSecrets {
		objs = append(objs, named{"ExternalSecret", es})
	}
	for _, o := range objs {
		what := o.kind + " " + o.obj.GetName()
		msgs(what+" name", validation.IsDNS1123Subdomain(o.obj.GetName()))
		if o.kind == "Service" {
			msgs(what+" name", validation.IsDNS1035Label(o.obj.GetName()))
		}
		if o.obj.GetNamespace() != va.Namespace {
			bad("%s: namespace %q, want %q", what, o.obj.GetNamespace(), va.Namespace)
		}
		fieldErrs(metav1validation.ValidateLabels(o.obj.GetLabels(), field.NewPath(what, "metadata", "labels")))
		if refs := o.obj.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != va.UID || refs[0].Name != va.Name {
			bad("%s: owner references %+v", what, refs)
		}
	}

	// The pods: the agent's and the gateway's.
	checkPod := func(d *appsv1.Deployment, wantReplicas int32, extraListeners map[int32]string) map[string]bool {
		pod := d.Spec.Template.Spec
		fieldErrs(metav1validation.ValidateLabels(d.Spec.Template.Labels, field.NewPath("Deployment", "spec", "template", "metadata", "labels")))
		fieldErrs(metav1validation.ValidateLabelSelector(d.Spec.Selector, metav1validation.LabelSelectorValidationOptions{}, field.NewPath("Deployment", "spec", "selector")))
		for k, v := range d.Spec.Selector.MatchLabels {
			if d.Spec.Template.Labels[k] != v {
				bad("Deployment: the selector's %s=%s does not match the pod template", k, v)
			}
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != wantReplicas {
			bad("Deployment %s: replicas %v, want %d", d.Name, d.Spec.Replicas, wantReplicas)
		}
		msgs("Deployment serviceAccountName", validation.IsDNS1123Subdomain(pod.ServiceAccountName))
		if g := pod.TerminationGracePeriodSeconds; g == nil || *g < 0 {
			bad("Deployment: terminationGracePeriodSeconds %v", g)
		}
		if a := pod.Affinity; a != nil && a.PodAntiAffinity != nil {
			for _, term := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				fieldErrs(metav1validation.ValidateLabelSelector(term.PodAffinityTerm.LabelSelector, metav1validation.LabelSelectorValidationOptions{}, field.NewPath("Deployment", "affinity")))
			}
		}
		volumes := map[string]bool{}
		for _, v := range pod.Volumes {
			msgs("volume "+v.Name, validation.IsDNS1123Label(v.Name))
			if volumes[v.Name] {
				bad("volume %s: defined twice", v.Name)
			}
			volumes[v.Name] = true
			if s := v.Secret; s != nil {
				msgs("volume "+v.Name+" secretName", validation.IsDNS1123Subdomain(s.SecretName))
				for _, it := range s.Items {
					msgs("volume "+v.Name+" key", validation.IsConfigMapKey(it.Key))
					if it.Path == "" || strings.HasPrefix(it.Path, "/") || strings.Contains(it.Path, "..") {
						bad("volume %s: item path %q", v.Name, it.Path)
					}
				}
			}
			if c := v.ConfigMap; c != nil {
				msgs("volume "+v.Name+" configMap", validation.IsDNS1123Subdomain(c.Name))
			}
		}
		// Every port something in the pod listens on, which the pod's containers share: the
		// declared container ports (native sidecars' too) and extraListeners.
		listeners := map[int32]string{}
		for p, what := range extraListeners {
			listeners[p] = what
		}
		portNames := map[string]bool{}
		for _, c := range append(append([]corev1.Container(nil), pod.InitContainers...), pod.Containers...) {
			what := "container " + c.Name
			msgs(what+" name", validation.IsDNS1123Label(c.Name))
			if c.Image == "" || strings.TrimSpace(c.Image) != c.Image {
				bad("%s: image %q must be set and have no surrounding white space", what, c.Image)
			}
			names := map[string]bool{}
			for _, p := range c.Ports {
				msgs(what+" port", validation.IsValidPortNum(int(p.ContainerPort)))
				msgs(what+" port name", validation.IsValidPortName(p.Name))
				if other, ok := listeners[p.ContainerPort]; ok {
					bad("%s: port %d (%s) is also %s", what, p.ContainerPort, p.Name, other)
				}
				listeners[p.ContainerPort] = what + " port " + p.Name
				if portNames[p.Name] {
					bad("%s: port name %s used twice in the pod", what, p.Name)
				}
				names[p.Name], portNames[p.Name] = true, true
			}
			env := map[string]bool{}
			for _, e := range c.Env {
				msgs(what+" env", validation.IsEnvVarName(e.Name))
				if env[e.Name] && !isUserEnv(va, e.Name) {
					bad("%s: env %s set twice", what, e.Name)
				}
				env[e.Name] = true
			}
			mounts := map[string]bool{}
			for _, m := range c.VolumeMounts {
				if !volumes[m.Name] {
					bad("%s: mounts volume %s, which the pod does not have", what, m.Name)
				}
				if mounts[m.MountPath] {
					bad("%s: two mounts at %s", what, m.MountPath)
				}
				mounts[m.MountPath] = true
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := c.Resources.Requests[res]
				lim, hasLim := c.Resources.Limits[res]
				if hasReq && hasLim && req.Cmp(lim) > 0 {
					bad("%s: %s request %s above its limit %s", what, res, req.String(), lim.String())
				}
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				if p == nil {
					continue
				}
				var port intstr.IntOrString
				switch {
				case p.HTTPGet != nil:
					port = p.HTTPGet.Port
				case p.TCPSocket != nil:
					port = p.TCPSocket.Port
				}
				if port.Type == intstr.String && !names[port.StrVal] {
					bad("%s: probe on port %s, which it does not declare", what, port.StrVal)
				}
			}
		}
		return portNames
	}
	portNames := checkPod(ch.Deployment, Replicas(va), nil)
	gatewayPortNames := checkPod(ch.GatewayDeployment, GatewayReplicas(va), nil)
	for _, p := range ch.GatewayService.Spec.Ports {
		if p.TargetPort.Type == intstr.String && !gatewayPortNames[p.TargetPort.StrVal] {
			bad("gateway Service: targets port %s, which no gateway container declares", p.TargetPort.StrVal)
		}
	}
	// The two workloads' selectors never match the other's pods.
	for _, pair := range [][2]*appsv1.Deployment{{ch.Deployment, ch.GatewayDeployment}, {ch.GatewayDeployment, ch.Deployment}} {
		sel, _ := metav1.LabelSelectorAsSelector(pair[0].Spec.Selector)
		if sel.Matches(labels.Set(pair[1].Spec.Template.Labels)) {
			bad("Deployment %s's selector matches the pods of %s", pair[0].Name, pair[1].Name)
		}
	}

	// The Service and the PodDisruptionBudget.
	for _, p := range ch.Service.Spec.Ports {
		msgs("Service port", validation.IsValidPortNum(int(p.Port)))
		msgs("Service port name", validation.IsDNS1123Label(p.Name))
		if p.TargetPort.Type == intstr.String && !portNames[p.TargetPort.StrVal] {
			bad("Service: targets port %s, which no container declares", p.TargetPort.StrVal)
		}
	}
	fieldErrs(metav1validation.ValidateLabels(ch.Service.Spec.Selector, field.NewPath("Service", "spec", "selector")))
	if pdb := ch.PodDisruptionBudget; pdb != nil {
		fieldErrs(metav1validation.ValidateLabelSelector(pdb.Spec.Selector, metav1validation.LabelSelectorValidationOptions{}, field.NewPath("PodDisruptionBudget", "spec", "selector")))
	}

	// The NetworkPolicy: every rule, derived or the user's.
	np := ch.NetworkPolicy.Spec
	fieldErrs(metav1validation.ValidateLabelSelector(&np.PodSelector, metav1validation.LabelSelectorValidationOptions{}, field.NewPath("NetworkPolicy", "spec", "podSelector")))
	checkPeers := func(what string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) {
		for i, p := range peers {
			path := field.NewPath("NetworkPolicy", what).Index(i)
			fieldErrs(metav1validation.ValidateLabelSelector(p.PodSelector, metav1validation.LabelSelectorValidationOptions{}, path.Child("podSelector")))
			fieldErrs(metav1validation.ValidateLabelSelector(p.NamespaceSelector, metav1validation.LabelSelectorValidationOptions{}, path.Child("namespaceSelector")))
			if b := p.IPBlock; b != nil {
				_, cidr, err := net.ParseCIDR(b.CIDR)
				if err != nil {
					bad("%s: ipBlock cidr %q: %v", path, b.CIDR, err)
					continue
				}
				outer, _ := cidr.Mask.Size()
				for _, e := range b.Except {
					ip, ec, err := net.ParseCIDR(e)
					if err != nil || !cidr.Contains(ip) {
						bad("%s: ipBlock except %q is not a CIDR inside %s", path, e, b.CIDR)
					} else if inner, _ := ec.Mask.Size(); inner <= outer {
						bad("%s: ipBlock except %q is not strictly inside %s", path, e, b.CIDR)
					}
				}
			}
		}
		for _, p := range ports {
			if p.Port != nil {
				if p.Port.Type == intstr.Int {
					msgs("NetworkPolicy "+what+" port", validation.IsValidPortNum(int(p.Port.IntVal)))
				} else {
					msgs("NetworkPolicy "+what+" port", validation.IsValidPortName(p.Port.StrVal))
				}
			}
			if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP && *p.Protocol != corev1.ProtocolUDP && *p.Protocol != corev1.ProtocolSCTP {
				bad("NetworkPolicy %s: protocol %s", what, *p.Protocol)
			}
		}
	}
	// The user's own rules (spec.network) are passed through as they are: the CRD
	// checks only their types, so their ports, CIDRs and selectors are checked here only
	// for being the user's, verbatim. (An admitted port 0 or CIDR "x" makes the
	// NetworkPolicy apply fail; see the report of issue 17.)
	var userFrom []networkingv1.NetworkPolicyPeer
	var userEgress []networkingv1.NetworkPolicyEgressRule
	if n := va.Spec.Network; n != nil {
		userFrom, userEgress = n.AllowIngressFrom, UserEgressRules(n.AllowEgressTo)
	}
	ingress := np.Ingress
	if len(userFrom) > 0 {
		if len(ingress) == 0 || !reflect.DeepEqual(ingress[0].From, userFrom) {
			bad("NetworkPolicy: the first ingress rule is not spec.network.allowIngressFrom")
		} else {
			checkPeers("ingress", nil, ingress[0].Ports)
			ingress = ingress[1:]
		}
	}
	for _, r := range ingress {
		checkPeers("ingress", r.From, r.Ports)
	}
	derived := np.Egress
	if n := len(np.Egress) - len(userEgress); n < 1 || (len(userEgress) > 0 && !reflect.DeepEqual(np.Egress[n:], userEgress)) {
		bad("NetworkPolicy: the egress rules do not end with spec.network.allowEgressTo")
	} else {
		derived = np.Egress[:n]
	}
	for _, r := range derived {
		checkPeers("egress", r.To, r.Ports)
	}
	gnp := ch.GatewayNetworkPolicy.Spec
	fieldErrs(metav1validation.ValidateLabelSelector(&gnp.PodSelector, metav1validation.LabelSelectorValidationOptions{}, field.NewPath("gateway NetworkPolicy", "spec", "podSelector")))
	for _, r := range gnp.Ingress {
		checkPeers("gateway ingress", r.From, r.Ports)
	}
	for _, r := range gnp.Egress {
		checkPeers("gateway egress", r.To, r.Ports)
	}

	// The ConfigMap and the gateway configuration.
	data, err := ch.GatewayConfig.Marshal()
	if err != nil {
		bad("gateway config: Marshal: %v", err)
	}
	for k := range ch.ConfigMap.Data {
		msgs("ConfigMap key", validation.IsConfigMapKey(k))
	}
	if got := ch.ConfigMap.Data[gw.FileName]; got != string(data) {
		bad("ConfigMap %s is not the gateway configuration Render returned", gw.FileName)
	}
	if err := ch.GatewayConfig.Validate(); err != nil {
		bad("gateway config: Validate: %v", err)
	}
	parsed, err := gw.Parse(data)
	if err != nil {
		bad("gateway config: Parse: %v", err)
	} else if !reflect.DeepEqual(parsed, ch.GatewayConfig) {
		bad("gateway config: Parse(Marshal(c)) differs from c:\n%+v\n%+v", parsed, ch.GatewayConfig)
	}
	for key, v := range ch.ConfigMap.Data {
		if strings.Contains(v, canary) {
			bad("ConfigMap %s names a credential's Secret, store or remote key:\n%s", key, v)
		}
	}
	for _, c := range ch.Credentials {
		if !strings.HasPrefix(c.File(), gw.CredentialsDir+"/") {
			bad("credential %s: file %s outside %s", c.Slot, c.File(), gw.CredentialsDir)
		}
	}

	// The Certificate and ExternalSecrets.
	if c := ch.Certificate; c != nil {
		secret, _, _ := unstructured.NestedString(c.Object, "spec", "secretName")
		msgs("Certificate secretName", validation.IsDNS1123Subdomain(secret))
		if va.Spec.Encryption.InTransit.DNSNames == nil {
			names, _, _ := unstructured.NestedStringSlice(c.Object, "spec", "dnsNames")
			for _, n := range names {
				msgs("Certificate dnsName", validation.IsDNS1123Subdomain(n))
			}
		}
	}
	for _, es := range ch.ExternalSecrets {
		target, _, _ := unstructured.NestedString(es.Object, "spec", "target", "name")
		if target != es.GetName() {
			bad("ExternalSecret %s: target %s", es.GetName(), target)
		}
		store, _, _ := unstructured.NestedString(es.Object, "spec", "secretStoreRef", "name")
		if store == "" {
			bad("ExternalSecret %s: no store", es.GetName())
		}
	}
	return errs
}

// isUserEnv says whether name is one of spec.env's: the user may set a variable the
// operator sets too (the later one, the user's, wins), which is theirs to decide.
func isUserEnv(va *v1alpha1.VoiceAgent, name string) bool {
	for _, e := range va.Spec.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}

// TestFuzzRenderAdmission checks the fuzzer's in-process admission against specs
// whose verdict is known: the test data is admitted, and a few of the admission
// corpus's refusals are refused.
func TestFuzzRenderAdmission(t *testing.T) {
	crds := loadCRDs(t)
	for _, file := range []string{"minimal.yaml", "full.yaml"} {
		obj := readObject(t, file)
		if errs := crds.voiceAgents.admit(obj); len(errs) > 0 {
			t.Errorf("%s refused: %v", file, errs)
		}
		spec := obj["spec"].(map[string]any)
		if spec["gateway"] == nil || spec["circuitBreaker"] == nil {
			t.Errorf("%s: defaults not applied: %v", file, spec)
		}
	}
	for _, tt := range []struct{ name, patch string }{
		{"a name with upper case", `{"metadata":{"name":"Hello"}}`},
		{"autoscaling with a fixed replicas", `{"spec":{"replicas":2,"autoscaling":{"maxReplicas":5}}}`},
		{"minReplicas above maxReplicas", `{"spec":{"autoscaling":{"minReplicas":6,"maxReplicas":5}}}`},
		{"a name longer than 40", `{"metadata":{"name":"` + strings.Repeat("a", 41) + `"}}`},
		{"both credential sources", `{"spec":{"model":{"credentials":{"externalSecret":{"storeRef":{"name":"v"},"remoteRef":{"key":"k"}}}}}}`},
		{"an http endpoint", `{"spec":{"model":{"endpoint":"http://a"}}}`},
		{"a zero budget", `{"spec":{"costLimits":{"dailyBudget":"0.00"}}}`},
		{"a drain timeout above 4h", `{"spec":{"voice":{"drainTimeout":"5h"}}}`},
		{"two integrations of one name", `{"spec":{"integrations":[{"name":"a","type":"rest","endpoint":"https://a"},{"name":"a","type":"rest","endpoint":"https://b"}]}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			obj := mergeMaps(readObject(t, "minimal.yaml"), parseObject(t, []byte(tt.patch)))
			if errs := crds.voiceAgents.admit(obj); len(errs) == 0 {
				t.Errorf("admitted: %s", dump(obj))
			}
		})
	}
}

// readObject reads a YAML file as the API server decodes JSON: integers as int64.
func readObject(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return parseObject(t, data)
}

func parseObject(t *testing.T, data []byte) map[string]any {
	t.Helper()
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	obj := map[string]any{}
	if err := utiljson.Unmarshal(js, &obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

func mergeMaps(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = mergeMaps(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

type renderEdgeCase struct {
	name    string
	base    renderInput
	mutate  func(*renderInput)
	refused string // "" means it renders
	// notAdmitted: the API server refuses it now (the fix moved to admission); Render
	// still refuses it too, for objects stored before.
	notAdmitted bool
}

// renderEdgeCases are what the fuzzer's checks found in specs the API server admits,
// and seeds of FuzzRender.
var renderEdgeCases = func() []renderEdgeCase {
	webhook := renderSeeds[3] // a webhook AuditSink with both credentials, TLS off
	syslog := renderSeeds[2]  // a syslog AuditSink, TLS on
	return []renderEdgeCase{
		{"an AuditSink name with dots: volume names stay DNS labels", webhook,
			func(r *renderInput) { r.sinkName = "soc.webhook.eu" }, "", false},
		{"a long AuditSink name: volume names stay within 63 characters", webhook,
			func(r *renderInput) { r.sinkName = "siem-webhook-production-eu-west-1-primary" }, "", false},
		{"an AuditSink name of 250 characters: its Secret names stay within 253", webhook,
			func(r *renderInput) { r.sinkName = strings.Repeat("a", 100) + "." + strings.Repeat("b", 149) }, "", false},
		{"a syslog port of 0", syslog,
			func(r *renderInput) { r.sinkTarget = "syslog.example.com:0" }, "spec.syslog.address", true},
		{"a syslog port above 65535", syslog,
			func(r *renderInput) { r.sinkTarget = "syslog.example.com:99999" }, "spec.syslog.address", true},
		{"an endpoint in a .svc domain whose namespace is not a DNS label", webhook,
			func(r *renderInput) { r.integEndpoint = "https://a.b!c.svc/" }, "", false},
		{"an endpoint in a .svc domain whose namespace is too long", webhook,
			func(r *renderInput) { r.integEndpoint = "https://a." + strings.Repeat("n", 64) + ".svc/" }, "", false},
		{"the agent on the gateway's proxy port: the gateway has pods of its own", webhook,
			func(r *renderInput) { r.port = gw.ProxyPort }, "", false},
		{"the agent on the admin port with TLS off: no inbound role in the pod", webhook,
			func(r *renderInput) { r.port = gw.AdminPort }, "", false},
		{"the agent on the inbound role's admin port with TLS on", syslog,
			func(r *renderInput) { r.port = gw.AdminPort }, "spec.port", true},
		{"the agent on the inbound role's TLS port with TLS on", syslog,
			func(r *renderInput) { r.port = gw.TLSPort }, "spec.port", true},
		{"the agent on 8443 with TLS off", webhook,
			func(r *renderInput) { r.port = gw.TLSPort }, "", false},
		{"an image with a leading space", webhook,
			func(r *renderInput) { r.image = " agent:1" }, "spec.image", true},
		{"a secretRef name that is not a Secret name", syslog,
			func(r *renderInput) { r.secret = "-Bad name" }, "spec.model.credentials.secretRef.name", true},
		{"a model timeout of 0s", webhook,
			func(r *renderInput) { r.duration = "0s" }, "spec.model.timeout", true},
		{"a model endpoint that is not a URL", webhook,
			func(r *renderInput) { r.modelEndpoint = "https://llm.internal.svc:8443v" }, "spec.model.endpoint", true},
		{"a limit store in the cluster", webhook,
			func(r *renderInput) { r.integHost, r.integPort = "redis.limits.svc", 6379 }, "", false},
		{"a limit store at a private IPv6 address with its own CA", webhook,
			func(r *renderInput) { r.integHost, r.integPort, r.flags = "fd00::10", 6380, r.flags|1<<13|1<<14 }, "", false},
		{"a limit store on a public host", webhook,
			func(r *renderInput) { r.integHost, r.integPort = "redis.example.com", 6379 }, "spec.limitStore.redis.address", true},
		{"a limit store at AWS's IPv6 metadata address", webhook,
			func(r *renderInput) { r.integHost, r.integPort = "fd00:ec2::254", 80 }, "spec.limitStore.redis.address", true},
		{"a limit store in another cluster domain's .svc", webhook,
			func(r *renderInput) { r.integHost, r.integPort = "redis.limits.svc.other.example", 6379 }, "spec.limitStore.redis.address", false},
		{"a daily budget too small to share between the gateway replicas", syslog,
			func(r *renderInput) { r.daily = "0.000001" }, "spec.costLimits.dailyBudget", false},
	}
}()

// TestRenderAdmittedEdgeCases holds what the fuzzer's checks found in specs the API
// server admits: each now renders valid objects, or is refused by Render with an error
// that names the field (the VoiceAgent's InvalidSpec condition).
func TestRenderAdmittedEdgeCases(t *testing.T) {
	crds := loadCRDs(t)
	for _, tt := range renderEdgeCases {
		t.Run(tt.name, func(t *testing.T) {
			ri := tt.base
			tt.mutate(&ri)
			if tt.notAdmitted {
				vaObj, sinkObj := buildObjects(ri)
				if _, _, ok := admit(t, crds, vaObj, sinkObj); ok {
					t.Fatalf("admitted; the API server should refuse it: %s", dump(vaObj))
				}
				return
			}
			va, in := admitted(t, crds, ri)
			ch, err := Render(va, in)
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("Render: %v, want an error naming %s", err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if errs := checkChildren(va, in, ch); len(errs) > 0 {
				t.Fatalf("%s", strings.Join(errs, "\n"))
			}
		})
	}
}

// admitted builds and admits ri, which must be admitted.
func admitted(t *testing.T, crds crdSet, ri renderInput) (*v1alpha1.VoiceAgent, Inputs) {
	t.Helper()
	vaObj, sinkObj := buildObjects(ri)
	va, in, ok := admit(t, crds, vaObj, sinkObj)
	if !ok {
		t.Fatalf("not admitted: %s", dump(vaObj))
	}
	return va, in
}

// TestSecretKeyDotDot: "." and "..", which a Secret volume cannot project, are refused
// at admission, and by Render for a VoiceAgent stored before that rule.
func TestSecretKeyDotDot(t *testing.T) {
	crds := loadCRDs(t)
	obj := mergeMaps(readObject(t, "minimal.yaml"), parseObject(t, []byte(`{"spec":{"model":{"credentials":{"secretRef":{"key":".."}}}}}`)))
	if _, _, ok := admit(t, crds, obj, nil); ok {
		t.Fatal("admitted")
	}
	va := loadVoiceAgent(t, "minimal.yaml")
	va.Spec.Model.Credentials.SecretRef.Key = ".."
	if _, err := Render(va, Inputs{GatewayImage: "img"}); err == nil || !strings.Contains(err.Error(), "spec.model.credentials.secretRef.key") {
		t.Fatalf("Render: %v", err)
	}
}

// TestAdmittedDurationsDecode: every duration the CRD admits must decode, or the
// operator's cache cannot list the VoiceAgent (nor, with it, the others of its list).
// The CRD's duration pattern, ^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$, admits durations
// past Go's 290 years, which metav1.Duration cannot hold. Only spec.voice.drainTimeout
// has a CEL bound. Skipped while the gap is open: the fix is in api/ (issue 17).
func TestAdmittedDurationsDecode(t *testing.T) {
	crds := loadCRDs(t)
	ri := renderSeeds[3] // the duration goes into the model's timeout and others
	ri.duration = "9999999999999h"
	vaObj, _ := buildObjects(ri)
	if errs := crds.voiceAgents.admit(vaObj); len(errs) > 0 {
		return // refused at admission: the gap is closed
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(vaObj, &v1alpha1.VoiceAgent{}); err != nil {
		t.Skipf("known gap (api/): the CRD admits the duration %q and the operator cannot decode it: %v", ri.duration, err)
	}
}
