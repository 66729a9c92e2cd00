package render

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func loadVoiceAgent(t *testing.T, file string) *v1alpha1.VoiceAgent {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	va := &v1alpha1.VoiceAgent{}
	if err := yaml.UnmarshalStrict(data, va); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return va
}

func loadSinks(t *testing.T) []v1alpha1.AuditSink {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "sinks.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []v1alpha1.AuditSink
	for _, doc := range strings.Split(string(data), "\n---\n") {
		s := v1alpha1.AuditSink{}
		if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// renderYAML renders every child of va as one multi-document YAML stream.
func renderYAML(t *testing.T, ch *Children) []byte {
	t.Helper()
	objs := []runtime.Object{ch.ServiceAccount, ch.ConfigMap, ch.Deployment, ch.Service, ch.NetworkPolicy,
		ch.GatewayServiceAccount, ch.GatewayDeployment, ch.GatewayService, ch.GatewayNetworkPolicy}
	if ch.PodDisruptionBudget != nil {
		objs = append(objs, ch.PodDisruptionBudget)
	}
	if ch.GatewayPodDisruptionBudget != nil {
		objs = append(objs, ch.GatewayPodDisruptionBudget)
	}
	for _, o := range ch.GatewayTLS {
		objs = append(objs, o)
	}
	if ch.Certificate != nil {
		objs = append(objs, ch.Certificate)
	}
	for _, es := range ch.ExternalSecrets {
		objs = append(objs, es)
	}
	var buf bytes.Buffer
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return buf.Bytes()
}

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name        string
		file        string
		withSinks   bool
		certManager bool
	}{
		{name: "minimal", file: "minimal.yaml"},
		{name: "full", file: "full.yaml", withSinks: true, certManager: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			va := loadVoiceAgent(t, tt.file)
			in := Inputs{GatewayImage: "voiceagent-operator:test", AgentSecretVersions: map[string]string{"x": "1"}, CertManager: tt.certManager}
			if tt.withSinks {
				in.Sinks = loadSinks(t)
			}
			ch, err := Render(va, in)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			got := renderYAML(t, ch)
			golden := filepath.Join("testdata", tt.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/render -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendered YAML differs from %s; run `go test ./internal/render -update` and review the diff", golden)
			}
		})
	}
}

func TestCredentialsNeverInAgentExceptDatabaseAndSessionKey(t *testing.T) {
	va := loadVoiceAgent(t, "full.yaml")
	ch, err := Render(va, Inputs{GatewayImage: "img", Sinks: loadSinks(t), CertManager: true})
	if err != nil {
		t.Fatal(err)
	}
	pod, gwPod := ch.Deployment.Spec.Template.Spec, ch.GatewayDeployment.Spec.Template.Spec
	if len(pod.Containers) != 1 || pod.Containers[0].Name != AgentContainer {
		t.Fatalf("agent pod containers: %+v", pod.Containers)
	}
	if len(gwPod.Containers) != 1 || gwPod.Containers[0].Name != GatewayContainer {
		t.Fatalf("gateway pod containers: %+v", gwPod.Containers)
	}
	// The inbound TLS role shares the agent's pod: it mounts the Service's certificate
	// and nothing else.
	if len(pod.InitContainers) != 1 || pod.InitContainers[0].Name != InboundContainer {
		t.Fatalf("agent pod init containers: %+v", pod.InitContainers)
	}
	if m := pod.InitContainers[0].VolumeMounts; len(m) != 1 || m[0].Name != "tls" {
		t.Errorf("inbound role mounts %+v, want only tls", m)
	}
	agent, gateway := pod.Containers[0], gwPod.Containers[0]
	agentMounts := map[string]bool{}
	for _, m := range agent.VolumeMounts {
		agentMounts[m.Name] = true
	}
	gatewayMounts := map[string]bool{}
	for _, m := range gateway.VolumeMounts {
		gatewayMounts[m.Name] = true
		if strings.HasPrefix(m.Name, "cred-") && !m.ReadOnly {
			t.Errorf("gateway mount %s is writable", m.Name)
		}
	}
	// No pod even declares a volume of a credential it must not hold.
	agentVolumes, gatewayVolumes := map[string]bool{}, map[string]bool{}
	for _, v := range pod.Volumes {
		agentVolumes[v.Name] = true
	}
	for _, v := range gwPod.Volumes {
		gatewayVolumes[v.Name] = true
	}
	for _, c := range ch.Credentials {
		inAgent, inGateway := agentMounts[c.VolumeName()], gatewayMounts[c.VolumeName()]
		wantAgent := c.Slot == "integration-orders-db" || c.Slot == "session-key"
		if c.Slot == "session-key" {
			inAgent = agentMounts["session-key"]
		}
		if inAgent != wantAgent || inGateway == wantAgent {
			t.Errorf("credential %s: in agent %v, in gateway %v; want agent %v", c.Slot, inAgent, inGateway, wantAgent)
		}
		if !wantAgent && agentVolumes[c.VolumeName()] {
			t.Errorf("credential %s: the agent pod declares its volume", c.Slot)
		}
		if wantAgent && gatewayVolumes[c.VolumeName()] {
			t.Errorf("credential %s: the gateway pod declares its volume", c.Slot)
		}
	}
	// The agent pod gets ca.crt alone of the gateway's certificate Secret, never its key.
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == GatewayTLSSecretName(va) {
			if len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "ca.crt" {
				t.Errorf("agent pod mounts %+v of the gateway's certificate Secret, want only ca.crt", v.Secret.Items)
			}
		}
	}
	if !agentMounts["agent-token"] || !gatewayMounts["agent-token"] {
		t.Error("the agent token is not mounted into both workloads")
	}
	for _, e := range agent.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("agent env %s reads a Secret", e.Name)
		}
	}
	if !CredentialsInAgent(ch.Credentials) {
		t.Error("CredentialsInAgent = false with a database integration")
	}
	if len(ch.Credentials) != 10 {
		t.Errorf("got %d credentials, want 10 (model, fallback, 3 integrations, 3 limit store, 2 sink)", len(ch.Credentials))
	}
}

func TestAgentReachesItsGatewayByServiceName(t *testing.T) {
	va := loadVoiceAgent(t, "minimal.yaml")
	for _, tls := range []bool{false, true} {
		ch, err := Render(va, Inputs{GatewayImage: "img", CertManager: tls})
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, e := range ch.Deployment.Spec.Template.Spec.Containers[0].Env {
			env[e.Name] = e.Value
		}
		want := "http://hello-gateway.demo.svc:15001"
		if tls {
			want = "https://hello-gateway.demo.svc:15001"
		}
		if env["VOICEAGENT_GATEWAY_URL"] != want || env["VOICEAGENT_MODEL_URL"] != want+"/model" {
			t.Errorf("tls %v: gateway URL %q, model URL %q; want %s", tls, env["VOICEAGENT_GATEWAY_URL"], env["VOICEAGENT_MODEL_URL"], want)
		}
		if env["VOICEAGENT_AGENT_TOKEN_FILE"] != gatewayconfig.AgentTokenFile {
			t.Errorf("tls %v: token file %q", tls, env["VOICEAGENT_AGENT_TOKEN_FILE"])
		}
		for _, name := range []string{"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"} {
			if got, wantCA := env[name], map[bool]string{true: gatewayconfig.GatewayCAFile}[tls]; got != wantCA {
				t.Errorf("tls %v: %s = %q, want %q", tls, name, got, wantCA)
			}
		}
		c := ch.GatewayConfig
		if c.AgentAuth == nil || c.AgentAuth.TokenFile != gatewayconfig.AgentTokenFile {
			t.Errorf("tls %v: gateway config agentAuth %+v", tls, c.AgentAuth)
		}
		if (c.Listen.ProxyTLS != nil) != tls {
			t.Errorf("tls %v: gateway config proxyTLS %+v", tls, c.Listen.ProxyTLS)
		}
		if got := len(ch.GatewayTLS); (got == 4) != tls || (got == 0) == tls {
			t.Errorf("tls %v: %d gateway TLS objects", tls, got)
		}
	}
}

func TestPerReplicaShares(t *testing.T) {
	va := loadVoiceAgent(t, "full.yaml")
	tests := []struct {
		replicas           int32
		rps                float64
		burst, concurrency int
		daily, monthly     string
		integrationRPM     float64
	}{
		{1, 2, 200, 50, "50.000000", "1000.000000", 60},
		{2, 1, 100, 25, "25.000000", "500.000000", 30},
		{3, 2.0 / 3, 66, 16, "16.666666", "333.333333", 20},
	}
	for _, tt := range tests {
		va.Spec.Gateway = &v1alpha1.GatewaySpec{Replicas: &tt.replicas}
		ch, err := Render(va, Inputs{GatewayImage: "img"})
		if err != nil {
			t.Fatal(err)
		}
		c := ch.GatewayConfig
		if c.Limits.RequestsPerSecond != tt.rps || c.Limits.Burst != tt.burst || c.Limits.MaxConcurrentCalls != tt.concurrency {
			t.Errorf("replicas %d: limits %+v", tt.replicas, c.Limits)
		}
		if c.Budget.Daily != tt.daily || c.Budget.Monthly != tt.monthly {
			t.Errorf("replicas %d: budget %+v, want %s/%s", tt.replicas, c.Budget, tt.daily, tt.monthly)
		}
		if c.Integrations[0].RequestsPerMinute != tt.integrationRPM {
			t.Errorf("replicas %d: crm rpm %v", tt.replicas, c.Integrations[0].RequestsPerMinute)
		}
	}
}

func TestOptionalChildren(t *testing.T) {
	va := loadVoiceAgent(t, "minimal.yaml")
	ch, err := Render(va, Inputs{GatewayImage: "img"})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Certificate != nil || ch.PodDisruptionBudget != nil || len(ch.ExternalSecrets) != 0 {
		t.Errorf("minimal spec rendered optional children: cert %v pdb %v es %d", ch.Certificate != nil, ch.PodDisruptionBudget != nil, len(ch.ExternalSecrets))
	}
	if got := Endpoint(va); got != "http://hello.demo.svc:80" {
		t.Errorf("Endpoint = %s", got)
	}
	if p := ch.Service.Spec.Ports; len(p) != 1 || p[0].Name != "http" {
		t.Errorf("service ports %+v", p)
	}
	full := loadVoiceAgent(t, "full.yaml")
	ch, err = Render(full, Inputs{GatewayImage: "img", Sinks: loadSinks(t)})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Certificate == nil || ch.PodDisruptionBudget == nil || len(ch.ExternalSecrets) != 3 {
		t.Errorf("full spec: cert %v pdb %v es %d (want the model's, crm's and the limit store password's; the sink's belongs to the AuditSink)",
			ch.Certificate != nil, ch.PodDisruptionBudget != nil, len(ch.ExternalSecrets))
	}
	if p := ch.Service.Spec.Ports; len(p) != 1 || p[0].Name != "https" || p[0].Port != 8443 {
		t.Errorf("service ports %+v, want only https 8443", p)
	}
}

func TestRestartHashFollowsAgentSecrets(t *testing.T) {
	va := loadVoiceAgent(t, "minimal.yaml")
	hash := func(v map[string]string) string {
		ch, err := Render(va, Inputs{GatewayImage: "img", AgentSecretVersions: v})
		if err != nil {
			t.Fatal(err)
		}
		return ch.Deployment.Spec.Template.Annotations[AnnotationRestartHash]
	}
	a, b, c := hash(map[string]string{"hello-session-key": "1"}), hash(map[string]string{"hello-session-key": "1"}), hash(map[string]string{"hello-session-key": "2"})
	if a != b || a == c {
		t.Errorf("hash not a stable function of versions: %s %s %s", a, b, c)
	}
}

func TestOperatorReachesOnlyTheAdminPort(t *testing.T) {
	for _, tt := range []struct {
		name, file, operatorNS string
		wantRules              int
	}{
		{"no operator namespace: the agent pods' rule only", "minimal.yaml", "", 1},
		{"operator namespace: one more rule, admin port only", "minimal.yaml", "voiceagent-system", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := Render(loadVoiceAgent(t, tt.file), Inputs{GatewayImage: "img", Sinks: loadSinks(t), Admin: AdminAccess{OperatorNamespace: tt.operatorNS}})
			if err != nil {
				t.Fatal(err)
			}
			if in := ch.NetworkPolicy.Spec.Ingress; len(in) != 0 {
				t.Errorf("agent pods: %d ingress rules without allowIngressFrom, want none: %+v", len(in), in)
			}
			rules := ch.GatewayNetworkPolicy.Spec.Ingress
			if len(rules) != tt.wantRules {
				t.Fatalf("%d ingress rules, want %d: %+v", len(rules), tt.wantRules, rules)
			}
			agents := rules[0]
			if len(agents.Ports) != 1 || agents.Ports[0].Port.IntVal != gatewayconfig.ProxyPort ||
				len(agents.From) != 1 || agents.From[0].NamespaceSelector != nil || agents.From[0].PodSelector.MatchLabels[LabelName] != "voiceagent" {
				t.Errorf("agent rule %+v, want the agent pods on the proxy port", agents)
			}
			if tt.operatorNS == "" {
				return
			}
			admin := rules[len(rules)-1]
			if len(admin.Ports) != 1 || admin.Ports[0].Port.IntVal != gatewayconfig.AdminPort {
				t.Errorf("admin rule ports %+v, want only %d", admin.Ports, gatewayconfig.AdminPort)
			}
			peer := admin.From[0]
			if peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != tt.operatorNS || peer.PodSelector.MatchLabels[OperatorPodLabel] != OperatorPodLabelValue {
				t.Errorf("admin rule peer %+v", peer)
			}
		})
	}
	t.Run("scraper namespaces: any pod there, admin port only", func(t *testing.T) {
		ch, err := Render(loadVoiceAgent(t, "minimal.yaml"), Inputs{GatewayImage: "img",
			Admin: AdminAccess{ScraperNamespaces: []string{"monitoring"}}})
		if err != nil {
			t.Fatal(err)
		}
		rules := ch.GatewayNetworkPolicy.Spec.Ingress
		if len(rules) != 2 || len(rules[1].From) != 1 || rules[1].From[0].PodSelector != nil ||
			rules[1].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" ||
			rules[1].Ports[0].Port.IntVal != gatewayconfig.AdminPort {
			t.Errorf("ingress %+v", rules)
		}
	})
}

func TestAutoscalingOwnsTheAgentReplicas(t *testing.T) {
	va := loadVoiceAgent(t, "minimal.yaml")
	va.Spec.Replicas = nil
	va.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: 2, MaxReplicas: 20, TargetActiveSessionsPerReplica: 10}
	withKEDA, err := Render(va, Inputs{GatewayImage: "img", KEDA: true, PrometheusAddress: "http://prom.monitoring.svc:9090"})
	if err != nil {
		t.Fatal(err)
	}
	if withKEDA.Deployment.Spec.Replicas != nil {
		t.Errorf("the agent Deployment sets replicas %d under an autoscaler", *withKEDA.Deployment.Spec.Replicas)
	}
	if withKEDA.HorizontalPodAutoscaler != nil || withKEDA.ScaledObject == nil {
		t.Fatalf("with KEDA: want a ScaledObject and no HPA")
	}
	so := withKEDA.ScaledObject.Object
	trig, _, _ := unstructured.NestedSlice(so, "spec", "triggers")
	meta, _, _ := unstructured.NestedStringMap(trig[0].(map[string]any), "metadata")
	if meta["threshold"] != "10" || meta["serverAddress"] != "http://prom.monitoring.svc:9090" ||
		!strings.Contains(meta["query"], `voiceagent_gateway_active_sessions{namespace="demo",voiceagent="hello"}`) {
		t.Errorf("trigger metadata %v", meta)
	}
	if min, _, _ := unstructured.NestedInt64(so, "spec", "minReplicaCount"); min != 2 {
		t.Errorf("minReplicaCount %d", min)
	}
	if target, _, _ := unstructured.NestedString(so, "spec", "scaleTargetRef", "name"); target != "hello" {
		t.Errorf("scales %q, want the agent Deployment", target)
	}
	// The gateway is not the autoscaler's: its replicas stay the spec's.
	if r := withKEDA.GatewayDeployment.Spec.Replicas; r == nil || *r != DefaultGatewayReplicas {
		t.Errorf("gateway replicas %v", r)
	}
	if withKEDA.PodDisruptionBudget == nil {
		t.Error("no agent PDB with minReplicas 2")
	}

	noKEDA, err := Render(va, Inputs{GatewayImage: "img"})
	if err != nil {
		t.Fatal(err)
	}
	hpa := noKEDA.HorizontalPodAutoscaler
	if noKEDA.ScaledObject != nil || hpa == nil {
		t.Fatal("without KEDA: want an HPA and no ScaledObject")
	}
	if *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 20 || *hpa.Spec.Metrics[0].Resource.Target.AverageUtilization != 70 {
		t.Errorf("HPA spec %+v", hpa.Spec)
	}

	va.Spec.Autoscaling = nil
	off, err := Render(va, Inputs{GatewayImage: "img", KEDA: true})
	if err != nil {
		t.Fatal(err)
	}
	if off.ScaledObject != nil || off.HorizontalPodAutoscaler != nil || off.Deployment.Spec.Replicas == nil || *off.Deployment.Spec.Replicas != 1 {
		t.Error("without spec.autoscaling: no autoscaler, and the operator owns replicas (1 when unset)")
	}
}

// TestStoredSpecsCannotOpenTheInternet: what admission refuses today may be stored from
// before its rules; Render refuses it too, and leaves the metadata addresses out of any
// private block the user allows.
func TestStoredSpecsCannotOpenTheInternet(t *testing.T) {
	for _, tt := range []struct {
		name  string
		rules []v1alpha1.EgressRule
		want  string
	}{
		{"every public address", []v1alpha1.EgressRule{{To: []v1alpha1.EgressPeer{{IPBlock: &v1alpha1.EgressIPBlock{CIDR: "0.0.0.0/0"}}}}}, "allowEgressTo[0].to[0].ipBlock.cidr"},
		{"a rule without destinations", []v1alpha1.EgressRule{{}}, "allowEgressTo[0]: a rule without 'to'"},
		{"a private range that holds a public one", []v1alpha1.EgressRule{{To: []v1alpha1.EgressPeer{{IPBlock: &v1alpha1.EgressIPBlock{CIDR: "8.0.0.0/6"}}}}}, "ipBlock.cidr"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			va := loadVoiceAgent(t, "minimal.yaml")
			va.Spec.Network = &v1alpha1.NetworkSpec{AllowEgressTo: tt.rules}
			if _, err := Render(va, Inputs{GatewayImage: "img"}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Render: %v, want an error naming %s", err, tt.want)
			}
		})
	}
	va := loadVoiceAgent(t, "minimal.yaml")
	va.Spec.Network = &v1alpha1.NetworkSpec{AllowEgressTo: []v1alpha1.EgressRule{{To: []v1alpha1.EgressPeer{{IPBlock: &v1alpha1.EgressIPBlock{CIDR: "100.64.0.0/10"}}}}}}
	ch, err := Render(va, Inputs{GatewayImage: "img"})
	if err != nil {
		t.Fatal(err)
	}
	rules := ch.NetworkPolicy.Spec.Egress
	block := rules[len(rules)-1].To[0].IPBlock
	if block == nil || strings.Join(block.Except, ",") != "100.100.100.200/32" {
		t.Errorf("the user's 100.64.0.0/10 block: %+v, want the metadata address left out", block)
	}
	for _, name := range []string{"support-gateway", "support-gateway-ca", "x-agent-token"} {
		va := loadVoiceAgent(t, "minimal.yaml")
		va.Name = name
		if _, err := Render(va, Inputs{GatewayImage: "img"}); err == nil || !strings.Contains(err.Error(), "metadata.name") {
			t.Errorf("name %s: Render %v, want refused (another VoiceAgent's gateway children)", name, err)
		}
	}
}
