package render

import (
	"fmt"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// The NetworkPolicy matrix: the rendered policies, as the API server would store them,
// evaluated by an engine that is not ours (cyclonus' matcher, the model behind its
// conformance probes) for connections between the pods of a small cluster and the
// internet. A verdict combines the source pod's egress policies and the destination
// pod's ingress policies, as Kubernetes does, so every policy of every VoiceAgent in
// the namespace is fed to the engine together.

const (
	matrixOperatorNS = "voiceagent-system"
	matrixScraperNS  = "monitoring"
)

// matrixWorld is the cluster and the internet the matrix connects.
type matrixWorld struct {
	ns string

	agent, gateway             *matcher.TrafficPeer // the VoiceAgent under test
	rivalAgent, rivalGateway   *matcher.TrafficPeer // another VoiceAgent in the same namespace
	greedyAgent, greedyGateway *matcher.TrafficPeer // another one, its allowEgressTo every pod of the namespace
	neighbour                  *matcher.TrafficPeer // a pod of the namespace without agent labels
	kubeDNS, kubeSystemOther   *matcher.TrafficPeer
	fakeDNS, elsewhere         *matcher.TrafficPeer // an undeclared namespace, one of its pods labelled like kube-dns
	ordersDB, tickets          *matcher.TrafficPeer // the namespaces of full.yaml's in-cluster integrations
	telephony                  *matcher.TrafficPeer // full.yaml's allowIngressFrom namespace
	cacheRedis, cacheOther     *matcher.TrafficPeer // full+allowEgressTo's pod-selector rule
	redisElsewhere             *matcher.TrafficPeer
	operator, operatorNSOther  *matcher.TrafficPeer
	impostorOperator, scraper  *matcher.TrafficPeer
	publicIP, modelIP          *matcher.TrafficPeer // 8.8.8.8; a public address standing for the model provider
	metadata                   *matcher.TrafficPeer // 169.254.169.254
	private10, private172      *matcher.TrafficPeer
	private192, cgnat          *matcher.TrafficPeer
	loopback                   *matcher.TrafficPeer
	publicV6, metadataV6       *matcher.TrafficPeer // 2001:4860:4860::8888; fd00:ec2::254 (AWS IMDS over IPv6)
	linkLocalV6, internetHost  *matcher.TrafficPeer // fe80::1; 203.0.113.7 as a client
	legacyIP, legacyNeighbour  *matcher.TrafficPeer // full.yaml's integration at 10.20.30.40; 10.20.30.41
	privateBlock, blockExcept  *matcher.TrafficPeer // inside / in the except of full+allowEgressTo's ipBlock
	reportsDB, reportsNeighbor *matcher.TrafficPeer // full+allowEgressTo's database at 10.40.0.7; 10.40.0.8
}

func internalPeer(ns, ip string, labels map[string]string) *matcher.TrafficPeer {
	return &matcher.TrafficPeer{IP: ip, Internal: &matcher.InternalPeer{
		Namespace:       ns,
		NamespaceLabels: map[string]string{corev1.LabelMetadataName: ns},
		PodLabels:       labels,
	}}
}

func externalPeer(ip string) *matcher.TrafficPeer { return &matcher.TrafficPeer{IP: ip} }

func newMatrixWorld(ns string, agentLabels, gatewayLabels, rivalAgent, rivalGateway, greedyAgent, greedyGateway map[string]string) *matrixWorld {
	return &matrixWorld{
		ns:               ns,
		agent:            internalPeer(ns, "10.244.1.10", agentLabels),
		gateway:          internalPeer(ns, "10.244.1.20", gatewayLabels),
		rivalAgent:       internalPeer(ns, "10.244.1.11", rivalAgent),
		rivalGateway:     internalPeer(ns, "10.244.1.21", rivalGateway),
		greedyAgent:      internalPeer(ns, "10.244.1.12", greedyAgent),
		greedyGateway:    internalPeer(ns, "10.244.1.22", greedyGateway),
		neighbour:        internalPeer(ns, "10.244.1.30", map[string]string{"app": "web"}),
		kubeDNS:          internalPeer("kube-system", "10.244.0.10", map[string]string{"k8s-app": "kube-dns"}),
		kubeSystemOther:  internalPeer("kube-system", "10.244.0.11", map[string]string{"k8s-app": "metrics-server"}),
		fakeDNS:          internalPeer("elsewhere", "10.244.2.10", map[string]string{"k8s-app": "kube-dns"}),
		elsewhere:        internalPeer("elsewhere", "10.244.2.11", map[string]string{"app": "web"}),
		ordersDB:         internalPeer("data", "10.244.3.10", map[string]string{"app": "orders-db"}),
		tickets:          internalPeer("support", "10.244.4.10", map[string]string{"app": "tickets"}),
		telephony:        internalPeer("telephony", "10.244.5.10", map[string]string{"app": "sip-trunk"}),
		cacheRedis:       internalPeer("cache", "10.244.6.10", map[string]string{"app": "redis"}),
		cacheOther:       internalPeer("cache", "10.244.6.11", map[string]string{"app": "memcached"}),
		redisElsewhere:   internalPeer("elsewhere", "10.244.2.12", map[string]string{"app": "redis"}),
		operator:         internalPeer(matrixOperatorNS, "10.244.7.10", map[string]string{LabelName: "voiceagent-operator", OperatorPodLabel: OperatorPodLabelValue}),
		operatorNSOther:  internalPeer(matrixOperatorNS, "10.244.7.11", map[string]string{"app": "debug-shell"}),
		impostorOperator: internalPeer("elsewhere", "10.244.2.13", map[string]string{LabelName: "voiceagent-operator", OperatorPodLabel: OperatorPodLabelValue}),
		scraper:          internalPeer(matrixScraperNS, "10.244.8.10", map[string]string{LabelName: "prometheus"}),
		publicIP:         externalPeer("8.8.8.8"),
		modelIP:          externalPeer("142.250.74.106"),
		metadata:         externalPeer("169.254.169.254"),
		private10:        externalPeer("10.0.0.5"),
		private172:       externalPeer("172.16.0.5"),
		private192:       externalPeer("192.168.1.5"),
		cgnat:            externalPeer("100.64.0.5"),
		loopback:         externalPeer("127.0.0.1"),
		publicV6:         externalPeer("2001:4860:4860::8888"),
		metadataV6:       externalPeer("fd00:ec2::254"),
		linkLocalV6:      externalPeer("fe80::1"),
		internetHost:     externalPeer("203.0.113.7"),
		legacyIP:         externalPeer("10.20.30.40"),
		legacyNeighbour:  externalPeer("10.20.30.41"),
		privateBlock:     externalPeer("10.30.1.2"),
		blockExcept:      externalPeer("10.30.99.2"),
		reportsDB:        externalPeer("10.40.0.7"),
		reportsNeighbor:  externalPeer("10.40.0.8"),
	}
}

type matrixRow struct {
	name     string
	from, to *matcher.TrafficPeer
	port     int
	portName string // the destination pod's name for port, when it has one
	proto    corev1.Protocol
	allowed  bool
}

func tcpRow(name string, from, to *matcher.TrafficPeer, port int, allowed bool) matrixRow {
	return matrixRow{name: name, from: from, to: to, port: port, proto: corev1.ProtocolTCP, allowed: allowed}
}

func udpRow(name string, from, to *matcher.TrafficPeer, port int, allowed bool) matrixRow {
	return matrixRow{name: name, from: from, to: to, port: port, proto: corev1.ProtocolUDP, allowed: allowed}
}

// toGateway is a TCP row to one of the gateway pod's named container ports.
func toGateway(name string, from, to *matcher.TrafficPeer, port int, allowed bool) matrixRow {
	r := tcpRow(name, from, to, port, allowed)
	r.portName = map[int]string{gatewayconfig.ProxyPort: "proxy", gatewayconfig.AdminPort: "admin"}[port]
	return r
}

// commonRows hold for every fixture: the agent pods reach DNS and their own gateway's
// proxy port and nothing public; the gateway pods reach DNS and public addresses on
// 443, never the private ranges or the metadata address; the gateway admits the proxy
// port from its own agent pods only and the admin port from the operator and the
// scrapers only.
func commonRows(w *matrixWorld) []matrixRow {
	return []matrixRow{
		// The agent pods' way out.
		tcpRow("agent to a public IP on 443: denied", w.agent, w.publicIP, 443, false),
		tcpRow("agent to the model provider's public address on 443: denied", w.agent, w.modelIP, 443, false),
		tcpRow("agent to a public IP on 80: denied", w.agent, w.publicIP, 80, false),
		tcpRow("agent to the IPv6 internet on 443: denied", w.agent, w.publicV6, 443, false),
		tcpRow("agent to the metadata address on 80: denied", w.agent, w.metadata, 80, false),
		tcpRow("agent to the metadata address on 443: denied", w.agent, w.metadata, 443, false),
		tcpRow("agent to the IPv6 metadata address on 80: denied", w.agent, w.metadataV6, 80, false),
		tcpRow("agent to a private address 10.0.0.5 on 443: denied", w.agent, w.private10, 443, false),
		tcpRow("agent to a pod of an undeclared namespace on 443: denied", w.agent, w.elsewhere, 443, false),
		tcpRow("agent to a pod of an undeclared namespace on 8080: denied", w.agent, w.elsewhere, 8080, false),
		tcpRow("agent to a pod of its own namespace on 8080: denied", w.agent, w.neighbour, 8080, false),
		toGateway("agent to its gateway's proxy port: allowed", w.agent, w.gateway, gatewayconfig.ProxyPort, true),
		toGateway("agent to its gateway's admin port: denied", w.agent, w.gateway, gatewayconfig.AdminPort, false),
		tcpRow("agent to its gateway on 443: denied", w.agent, w.gateway, 443, false),
		udpRow("agent to its gateway's proxy port over UDP: denied", w.agent, w.gateway, gatewayconfig.ProxyPort, false),
		toGateway("agent to another VoiceAgent's gateway's proxy port: denied", w.agent, w.rivalGateway, gatewayconfig.ProxyPort, false),
		udpRow("agent to kube-dns on 53/UDP: allowed", w.agent, w.kubeDNS, 53, true),
		tcpRow("agent to kube-dns on 53/TCP: allowed", w.agent, w.kubeDNS, 53, true),
		tcpRow("agent to kube-dns on 80: denied", w.agent, w.kubeDNS, 80, false),
		udpRow("agent to another kube-system pod on 53/UDP: denied", w.agent, w.kubeSystemOther, 53, false),
		udpRow("agent to a kube-dns-labelled pod outside kube-system on 53/UDP: denied", w.agent, w.fakeDNS, 53, false),
		udpRow("agent to a public resolver 8.8.8.8 on 53/UDP: denied", w.agent, w.publicIP, 53, false),
		tcpRow("agent to a pod of orders-db's namespace on 5433: denied", w.agent, w.ordersDB, 5433, false),

		// The gateway pods' way in.
		toGateway("a pod of the namespace without agent labels to the gateway's proxy port: denied", w.neighbour, w.gateway, gatewayconfig.ProxyPort, false),
		toGateway("a pod of the namespace without agent labels to the gateway's admin port: denied", w.neighbour, w.gateway, gatewayconfig.AdminPort, false),
		toGateway("another VoiceAgent's agent to this gateway's proxy port: denied", w.rivalAgent, w.gateway, gatewayconfig.ProxyPort, false),
		toGateway("another VoiceAgent's agent, allowEgressTo every pod of the namespace, to this gateway's proxy port: denied", w.greedyAgent, w.gateway, gatewayconfig.ProxyPort, false),
		toGateway("another VoiceAgent's agent, allowEgressTo every pod of the namespace, to this gateway's admin port: denied", w.greedyAgent, w.gateway, gatewayconfig.AdminPort, false),
		toGateway("another VoiceAgent's agent, allowEgressTo every pod of the namespace, to its own gateway: allowed", w.greedyAgent, w.greedyGateway, gatewayconfig.ProxyPort, true),
		toGateway("a pod of an undeclared namespace to the gateway's proxy port: denied", w.elsewhere, w.gateway, gatewayconfig.ProxyPort, false),
		toGateway("an internet client to the gateway's proxy port: denied", w.internetHost, w.gateway, gatewayconfig.ProxyPort, false),
		toGateway("the operator to the gateway's admin port: allowed", w.operator, w.gateway, gatewayconfig.AdminPort, true),
		toGateway("the operator to the gateway's proxy port: denied", w.operator, w.gateway, gatewayconfig.ProxyPort, false),
		toGateway("an unlabelled pod of the operator's namespace to the gateway's admin port: denied", w.operatorNSOther, w.gateway, gatewayconfig.AdminPort, false),
		toGateway("a pod with the operator's label in another namespace to the gateway's admin port: denied", w.impostorOperator, w.gateway, gatewayconfig.AdminPort, false),
		toGateway("a scraper to the gateway's admin port: allowed", w.scraper, w.gateway, gatewayconfig.AdminPort, true),
		toGateway("a scraper to the gateway's proxy port: denied", w.scraper, w.gateway, gatewayconfig.ProxyPort, false),

		// The gateway pods' way out.
		tcpRow("gateway to a public IP on 443: allowed", w.gateway, w.publicIP, 443, true),
		tcpRow("gateway to the model provider's public address on 443: allowed", w.gateway, w.modelIP, 443, true),
		tcpRow("gateway to the IPv6 internet on 443: allowed", w.gateway, w.publicV6, 443, true),
		udpRow("gateway to a public IP on 443/UDP: denied", w.gateway, w.publicIP, 443, false),
		tcpRow("gateway to a public IP on 80: denied", w.gateway, w.publicIP, 80, false),
		tcpRow("gateway to the metadata address on 80: denied", w.gateway, w.metadata, 80, false),
		tcpRow("gateway to the metadata address on 443: denied", w.gateway, w.metadata, 443, false),
		tcpRow("gateway to the IPv6 metadata address fd00:ec2::254 on 443: denied", w.gateway, w.metadataV6, 443, false),
		tcpRow("gateway to IPv6 link-local fe80::1 on 443: denied", w.gateway, w.linkLocalV6, 443, false),
		tcpRow("gateway to a private address 10.0.0.5 on 443: denied", w.gateway, w.private10, 443, false),
		tcpRow("gateway to a private address 172.16.0.5 on 443: denied", w.gateway, w.private172, 443, false),
		tcpRow("gateway to a private address 192.168.1.5 on 443: denied", w.gateway, w.private192, 443, false),
		tcpRow("gateway to a shared address 100.64.0.5 on 443: denied", w.gateway, w.cgnat, 443, false),
		tcpRow("gateway to loopback 127.0.0.1 on 443: denied", w.gateway, w.loopback, 443, false),
		tcpRow("gateway to a pod of an undeclared namespace on 443: denied", w.gateway, w.elsewhere, 443, false),
		tcpRow("gateway to its agent pod on 8080: denied", w.gateway, w.agent, 8080, false),
		tcpRow("gateway to a pod of orders-db's namespace on 5432 (the agent's own): denied", w.gateway, w.ordersDB, 5432, false),
		udpRow("gateway to kube-dns on 53/UDP: allowed", w.gateway, w.kubeDNS, 53, true),
		udpRow("gateway to a public resolver 8.8.8.8 on 53/UDP: denied", w.gateway, w.publicIP, 53, false),
	}
}

// matrixScenario is one VoiceAgent rendered with its Inputs and the rows only it has.
type matrixScenario struct {
	name string
	va   *v1alpha1.VoiceAgent
	in   Inputs
	rows func(w *matrixWorld) []matrixRow
}

func egressTCP(port int32) v1alpha1.EgressPort {
	p := tcpPort(port)
	return v1alpha1.EgressPort{Protocol: p.Protocol, Port: p.Port}
}

func matrixScenarios(t *testing.T) []matrixScenario {
	admin := AdminAccess{OperatorNamespace: matrixOperatorNS, ScraperNamespaces: []string{matrixScraperNS}}

	withEgress := loadVoiceAgent(t, "full.yaml")
	withEgress.Spec.Network.AllowEgressTo = []v1alpha1.EgressRule{
		{
			Ports: []v1alpha1.EgressPort{egressTCP(6379)},
			To: []v1alpha1.EgressPeer{{
				NamespaceSelector: namespaceSelector("cache"),
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "redis"}},
			}},
		},
		{
			Ports: []v1alpha1.EgressPort{egressTCP(9000)},
			To:    []v1alpha1.EgressPeer{{IPBlock: &v1alpha1.EgressIPBlock{CIDR: "10.30.0.0/16", Except: []string{"10.30.99.0/24"}}}},
		},
	}
	withEgress.Spec.Integrations = append(withEgress.Spec.Integrations, v1alpha1.Integration{
		Name: "reports-db", Type: v1alpha1.IntegrationDatabase, Host: "10.40.0.7", Port: ptr.To[int32](3306),
		Credentials: &v1alpha1.CredentialSource{SecretRef: &v1alpha1.SecretKeyReference{Name: "reports-db", Key: "dsn"}},
	})

	minimalRows := func(w *matrixWorld) []matrixRow {
		return []matrixRow{
			tcpRow("agent to a pod of orders-db's namespace on 5432 (not declared here): denied", w.agent, w.ordersDB, 5432, false),
			tcpRow("a pod of the namespace to the agent's port 8080 (no allowIngressFrom): denied", w.neighbour, w.agent, 8080, false),
			tcpRow("gateway to a public IP on 6514 (no syslog sink): denied", w.gateway, w.publicIP, 6514, false),
			tcpRow("gateway to a pod of tickets' namespace on 8443 (not declared here): denied", w.gateway, w.tickets, 8443, false),
		}
	}
	fullRows := func(w *matrixWorld) []matrixRow {
		return []matrixRow{
			tcpRow("agent to the declared database orders-db (a pod of its Service's namespace) on 5432: allowed", w.agent, w.ordersDB, 5432, true),
			udpRow("agent to the declared database orders-db on 5432/UDP: denied", w.agent, w.ordersDB, 5432, false),
			tcpRow("agent to the tickets integration's namespace on 8443 (the gateway's): denied", w.agent, w.tickets, 8443, false),
			tcpRow("agent to the legacy integration 10.20.30.40 on 9443 (the gateway's): denied", w.agent, w.legacyIP, 9443, false),
			tcpRow("agent to the syslog port 6514 on a public IP: denied", w.agent, w.publicIP, 6514, false),
			tcpRow("allowIngressFrom (telephony) to the agent's TLS port 8443: allowed", w.telephony, w.agent, 8443, true),
			tcpRow("allowIngressFrom (telephony) to the agent's own port 8080 behind TLS: denied", w.telephony, w.agent, 8080, false),
			tcpRow("a pod of the namespace to the agent's TLS port 8443: denied", w.neighbour, w.agent, 8443, false),
			tcpRow("gateway to the tickets integration (a pod of support) on 8443: allowed", w.gateway, w.tickets, 8443, true),
			tcpRow("gateway to a pod of support on 443: denied", w.gateway, w.tickets, 443, false),
			tcpRow("gateway to the legacy integration 10.20.30.40 on 9443: allowed", w.gateway, w.legacyIP, 9443, true),
			tcpRow("gateway to the legacy integration 10.20.30.40 on 443: denied", w.gateway, w.legacyIP, 443, false),
			tcpRow("gateway to 10.20.30.41 on 9443 (next to legacy): denied", w.gateway, w.legacyNeighbour, 9443, false),
			tcpRow("gateway to a public IP on 6514 (the syslog sink): allowed", w.gateway, w.publicIP, 6514, true),
			tcpRow("gateway to a private address on 6514: denied", w.gateway, w.private10, 6514, false),
			tcpRow("gateway to a public IP on 9443 (legacy's port, but an IP integration): denied", w.gateway, w.publicIP, 9443, false),
		}
	}
	withEgressRows := func(w *matrixWorld) []matrixRow {
		return append(fullRows(w),
			tcpRow("agent to allowEgressTo's redis pods in cache on 6379: allowed", w.agent, w.cacheRedis, 6379, true),
			tcpRow("agent to allowEgressTo's redis pods on 6380: denied", w.agent, w.cacheRedis, 6380, false),
			tcpRow("agent to another pod of cache on 6379: denied", w.agent, w.cacheOther, 6379, false),
			tcpRow("agent to a redis-labelled pod outside cache on 6379: denied", w.agent, w.redisElsewhere, 6379, false),
			tcpRow("agent to allowEgressTo's ipBlock 10.30.0.0/16 on 9000: allowed", w.agent, w.privateBlock, 9000, true),
			tcpRow("agent to allowEgressTo's ipBlock on 9001: denied", w.agent, w.privateBlock, 9001, false),
			tcpRow("agent to allowEgressTo's ipBlock except 10.30.99.0/24 on 9000: denied", w.agent, w.blockExcept, 9000, false),
			tcpRow("agent to the database integration at IP 10.40.0.7 on 3306: allowed", w.agent, w.reportsDB, 3306, true),
			tcpRow("agent to 10.40.0.8 on 3306 (next to the database IP): denied", w.agent, w.reportsNeighbor, 3306, false),
			tcpRow("agent to the database IP on 3307: denied", w.agent, w.reportsDB, 3307, false),
			tcpRow("gateway to the database IP on 3306 (the agent's own): denied", w.gateway, w.reportsDB, 3306, false),
			tcpRow("gateway to allowEgressTo's redis pods on 6379 (the agent's own): denied", w.gateway, w.cacheRedis, 6379, false),
		)
	}
	return []matrixScenario{
		{name: "minimal", va: loadVoiceAgent(t, "minimal.yaml"), in: Inputs{GatewayImage: "img", Admin: admin}, rows: minimalRows},
		{name: "full", va: loadVoiceAgent(t, "full.yaml"), in: Inputs{GatewayImage: "img", Sinks: loadSinks(t), Admin: admin, CertManager: true}, rows: fullRows},
		{name: "full+allowEgressTo", va: withEgress, in: Inputs{GatewayImage: "img", Sinks: loadSinks(t), Admin: admin, CertManager: true}, rows: withEgressRows},
	}
}

// asStored is np after a trip through YAML, as the API server would keep it.
func asStored(t *testing.T, np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	t.Helper()
	data, err := yaml.Marshal(np)
	if err != nil {
		t.Fatal(err)
	}
	out := &networkingv1.NetworkPolicy{}
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// matrixNeighbour renders another VoiceAgent of va's namespace, a copy of minimal.yaml
// named name, with the given allowEgressTo.
func matrixNeighbour(t *testing.T, ns, name string, egress []v1alpha1.EgressRule) *Children {
	t.Helper()
	va := loadVoiceAgent(t, "minimal.yaml")
	va.Name, va.Namespace = name, ns
	if egress != nil {
		va.Spec.Network = &v1alpha1.NetworkSpec{AllowEgressTo: egress}
	}
	ch, err := Render(va, Inputs{GatewayImage: "img"})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestNetpolMatrix(t *testing.T) {
	for _, sc := range matrixScenarios(t) {
		t.Run(sc.name, func(t *testing.T) {
			ch, err := Render(sc.va, sc.in)
			if err != nil {
				t.Fatal(err)
			}
			ns := sc.va.Namespace
			rival := matrixNeighbour(t, ns, "rival", nil)
			greedy := matrixNeighbour(t, ns, "greedy", []v1alpha1.EgressRule{{To: []v1alpha1.EgressPeer{{PodSelector: &metav1.LabelSelector{}}}}})

			var policies []*networkingv1.NetworkPolicy
			for _, c := range []*Children{ch, rival, greedy} {
				policies = append(policies, asStored(t, c.NetworkPolicy), asStored(t, c.GatewayNetworkPolicy))
			}
			engine := matcher.BuildNetworkPolicies(false, policies)

			w := newMatrixWorld(ns,
				ch.Deployment.Spec.Template.Labels, ch.GatewayDeployment.Spec.Template.Labels,
				rival.Deployment.Spec.Template.Labels, rival.GatewayDeployment.Spec.Template.Labels,
				greedy.Deployment.Spec.Template.Labels, greedy.GatewayDeployment.Spec.Template.Labels)

			// Every workload's pods are isolated both ways by the engine's reading of the
			// policies, or the denials below would be someone else's default.
			for name, p := range map[string]*matcher.TrafficPeer{
				"agent": w.agent, "gateway": w.gateway, "rival agent": w.rivalAgent,
				"rival gateway": w.rivalGateway, "greedy agent": w.greedyAgent, "greedy gateway": w.greedyGateway,
			} {
				for _, ingress := range []bool{true, false} {
					if got := engine.TargetsApplyingToPod(ingress, p.Internal.Namespace, p.Internal.PodLabels); len(got) != 1 {
						t.Errorf("%s pod (labels %v): %d policies select it for ingress=%v, want exactly 1", name, p.Internal.PodLabels, len(got), ingress)
					}
				}
			}
			if t.Failed() {
				t.FailNow()
			}

			rows := append(commonRows(w), sc.rows(w)...)
			seen := map[string]bool{}
			for _, r := range rows {
				if seen[r.name] {
					t.Fatalf("row name %q twice", r.name)
				}
				seen[r.name] = true
				t.Run(r.name, func(t *testing.T) {
					traffic := &matcher.Traffic{Source: r.from, Destination: r.to, ResolvedPort: r.port, ResolvedPortName: r.portName, Protocol: r.proto}
					res := engine.IsTrafficAllowed(traffic)
					if got := res.IsAllowed(); got != r.allowed {
						t.Errorf("%s -> %s %d/%s: allowed=%v (egress %v, ingress %v), want %v\n%s%s", peerString(r.from), peerString(r.to), r.port, r.proto, got,
							res.Egress.IsAllowed(), res.Ingress.IsAllowed(), r.allowed, traffic.Table(), res.Table())
					}
				})
			}
		})
	}
}

func peerString(p *matcher.TrafficPeer) string {
	if p.Internal == nil {
		return p.IP
	}
	return fmt.Sprintf("%s/%v (%s)", p.Internal.Namespace, p.Internal.PodLabels, p.IP)
}
