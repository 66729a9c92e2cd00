package render

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	objs := []runtime.Object{ch.ServiceAccount, ch.ConfigMap, ch.Deployment, ch.Service, ch.NetworkPolicy}
	if ch.PodDisruptionBudget != nil {
		objs = append(objs, ch.PodDisruptionBudget)
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
		name      string
		file      string
		withSinks bool
	}{
		{name: "minimal", file: "minimal.yaml"},
		{name: "full", file: "full.yaml", withSinks: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			va := loadVoiceAgent(t, tt.file)
			in := Inputs{GatewayImage: "voiceagent-operator:test", AgentSecretVersions: map[string]string{"x": "1"}}
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
	ch, err := Render(va, Inputs{GatewayImage: "img", Sinks: loadSinks(t)})
	if err != nil {
		t.Fatal(err)
	}
	pod := ch.Deployment.Spec.Template.Spec
	agent, gateway := pod.Containers[0], pod.Containers[1]
	if agent.Name != AgentContainer || gateway.Name != GatewayContainer {
		t.Fatalf("containers are %s, %s", agent.Name, gateway.Name)
	}
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
	for _, c := range ch.Credentials {
		inAgent, inGateway := agentMounts[c.VolumeName()], gatewayMounts[c.VolumeName()]
		wantAgent := c.Slot == "integration-orders-db"
		if inAgent != wantAgent || inGateway == wantAgent {
			t.Errorf("credential %s: in agent %v, in gateway %v; want agent %v", c.Slot, inAgent, inGateway, wantAgent)
		}
	}
	for _, e := range agent.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("agent env %s reads a Secret", e.Name)
		}
	}
	if !CredentialsInAgent(ch.Credentials) {
		t.Error("CredentialsInAgent = false with a database integration")
	}
	if len(ch.Credentials) != 7 {
		t.Errorf("got %d credentials, want 7 (model, fallback, 3 integrations, 2 sink)", len(ch.Credentials))
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
		va.Spec.Replicas = &tt.replicas
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
	if ch.Certificate == nil || ch.PodDisruptionBudget == nil || len(ch.ExternalSecrets) != 2 {
		t.Errorf("full spec: cert %v pdb %v es %d (want the model's and crm's; the sink's belongs to the AuditSink)",
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
		{"no operator namespace: ingress stays deny-all", "minimal.yaml", "", 0},
		{"operator namespace: one rule, admin port only", "minimal.yaml", "voiceagent-system", 1},
		{"with allowIngressFrom: the serving rule and the admin rule", "full.yaml", "voiceagent-system", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := Render(loadVoiceAgent(t, tt.file), Inputs{GatewayImage: "img", Sinks: loadSinks(t), Admin: AdminAccess{OperatorNamespace: tt.operatorNS}})
			if err != nil {
				t.Fatal(err)
			}
			rules := ch.NetworkPolicy.Spec.Ingress
			if len(rules) != tt.wantRules {
				t.Fatalf("%d ingress rules, want %d: %+v", len(rules), tt.wantRules, rules)
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
		rules := ch.NetworkPolicy.Spec.Ingress
		if len(rules) != 1 || len(rules[0].From) != 1 || rules[0].From[0].PodSelector != nil ||
			rules[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" ||
			rules[0].Ports[0].Port.IntVal != gatewayconfig.AdminPort {
			t.Errorf("ingress %+v", rules)
		}
	})
}
