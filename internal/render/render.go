package render

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// Inputs are the observed facts rendering depends on besides the VoiceAgent itself.
type Inputs struct {
	// GatewayImage is the operator's own image: the gateway is the same binary.
	GatewayImage string
	// Sinks are the AuditSinks va references that exist, in spec order.
	Sinks []v1alpha1.AuditSink
	// AgentSecretVersions maps each Secret mounted into the agent to its resourceVersion.
	AgentSecretVersions map[string]string
	// ClusterDomain is the cluster's DNS suffix, "cluster.local" by default.
	ClusterDomain string
	// Admin says who may reach the gateways' admin port besides nobody.
	Admin AdminAccess
	// CertManager is installed: the agent's calls to its gateway are encrypted with a
	// certificate of the VoiceAgent's own CA.
	CertManager bool
	// KEDA is installed: spec.autoscaling scales on sessions, through a ScaledObject
	// that reads them from PrometheusAddress; else on CPU, through an HPA.
	KEDA              bool
	PrometheusAddress string
	// CarriedSpend is the VoiceAgent-wide spend of gateway pods that are gone, in the
	// UTC day and month it belongs to (from status.spend): each gateway replica counts
	// its share of it against its budgets.
	CarriedSpend *gw.CarriedSpend
}

// Children are the objects va wants. Optional ones are nil when not wanted. The
// unprefixed ones are the agent workload's; the Gateway ones the gateway workload's.
type Children struct {
	ServiceAccount      *corev1.ServiceAccount
	ConfigMap           *corev1.ConfigMap
	Deployment          *appsv1.Deployment
	Service             *corev1.Service
	NetworkPolicy       *networkingv1.NetworkPolicy
	PodDisruptionBudget *policyv1.PodDisruptionBudget
	Certificate         *unstructured.Unstructured
	ExternalSecrets     []*unstructured.Unstructured

	GatewayServiceAccount      *corev1.ServiceAccount
	GatewayDeployment          *appsv1.Deployment
	GatewayService             *corev1.Service
	GatewayNetworkPolicy       *networkingv1.NetworkPolicy
	GatewayPodDisruptionBudget *policyv1.PodDisruptionBudget
	// GatewayTLS are the Issuers and Certificates of the agent-to-gateway hop, in
	// dependency order; empty without cert-manager.
	GatewayTLS []*unstructured.Unstructured
	// ScaledObject (with KEDA) or HorizontalPodAutoscaler (without) scale the agent
	// Deployment when spec.autoscaling is set; at most one is non-nil.
	ScaledObject            *unstructured.Unstructured
	HorizontalPodAutoscaler *autoscalingv2.HorizontalPodAutoscaler

	Credentials   []Credential
	GatewayConfig *gw.Config
	EgressAllowed []string
}

// Render builds every child of va. It fails only on a spec the API server's validation
// could not catch; the error names the field.
func Render(va *v1alpha1.VoiceAgent, in Inputs) (*Children, error) {
	if in.ClusterDomain == "" {
		in.ClusterDomain = "cluster.local"
	}
	if err := checkPod(va); err != nil {
		return nil, err
	}
	if err := checkSecretRefs(va, in.Sinks); err != nil {
		return nil, err
	}
	// Destinations first: its errors name the spec field of a URL that is not one.
	dests, err := Destinations(va, in.Sinks)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	databases, err := DatabaseDestinations(va, in.ClusterDomain)
	if err != nil {
		return nil, err
	}
	if err := checkAgentEgress(va); err != nil {
		return nil, err
	}
	store, err := limitStoreDestination(va, in.ClusterDomain)
	if err != nil {
		return nil, err
	}
	if store != nil {
		dests = dedupe(append(dests, *store))
	}
	creds := Credentials(va, in.Sinks)
	cfg, err := GatewayConfig(va, in.Sinks, creds, in.CertManager)
	if err != nil {
		return nil, err
	}
	if cfg.Budget != nil {
		cfg.Budget.Carried = carriedShare(in.CarriedSpend, GatewayReplicas(va))
	}
	cm, err := ConfigMap(va, cfg)
	if err != nil {
		return nil, err
	}
	egress, allowed := EgressRules(dests, in.ClusterDomain)
	agentEgress, _ := destinationRules(databases, in.ClusterDomain)
	pods := DeploymentInputs{
		GatewayImage: in.GatewayImage, Credentials: creds, AgentSecretVersions: in.AgentSecretVersions,
		GatewayTLS: in.CertManager,
	}
	ch := &Children{
		ServiceAccount:      ServiceAccount(va),
		ConfigMap:           cm,
		Deployment:          Deployment(va, pods),
		Service:             Service(va),
		NetworkPolicy:       NetworkPolicy(va, agentEgress),
		PodDisruptionBudget: PodDisruptionBudget(va),
		Certificate:         Certificate(va, in.ClusterDomain),
		ExternalSecrets:     ExternalSecrets(va, creds),

		GatewayServiceAccount:      GatewayServiceAccount(va),
		GatewayDeployment:          GatewayDeployment(va, pods),
		GatewayService:             GatewayService(va),
		GatewayNetworkPolicy:       GatewayNetworkPolicy(va, egress, in.Admin),
		GatewayPodDisruptionBudget: GatewayPodDisruptionBudget(va),

		Credentials:   creds,
		GatewayConfig: cfg,
		EgressAllowed: allowed,
	}
	if in.CertManager {
		ch.GatewayTLS = GatewayTLSObjects(va, in.ClusterDomain)
	}
	if in.KEDA {
		ch.ScaledObject = ScaledObject(va, in.PrometheusAddress)
	} else {
		ch.HorizontalPodAutoscaler = HorizontalPodAutoscaler(va)
	}
	return ch, nil
}

// carriedShare is one gateway replica's share of the carried spend, rounded up so that
// the shares never count less than the whole; nil when there is none.
func carriedShare(c *gw.CarriedSpend, replicas int32) *gw.CarriedSpend {
	if c == nil || (c.DailyMicros <= 0 && c.MonthMicros <= 0) {
		return nil
	}
	n := int64(max(replicas, 1))
	share := func(v int64) int64 { return (max(v, 0) + n - 1) / n }
	return &gw.CarriedSpend{Day: c.Day, DailyMicros: share(c.DailyMicros), Month: c.Month, MonthMicros: share(c.MonthMicros)}
}

// AgentEgress is status.security.agentEgress: where the agent pods may connect.
func AgentEgress(va *v1alpha1.VoiceAgent) string {
	if n := va.Spec.Network; n != nil && len(n.AllowEgressTo) > 0 {
		return "gatewayAndInCluster"
	}
	for _, i := range va.Spec.Integrations {
		if i.Type == v1alpha1.IntegrationDatabase {
			return "gatewayAndInCluster"
		}
	}
	return "gatewayOnly"
}

// checkPod refuses what the CRD admits but the pod could not run with: an agent port
// the inbound TLS role listens on in the same pod, or an image the API server refuses
// in a pod.
func checkPod(va *v1alpha1.VoiceAgent) error {
	for _, suffix := range reservedNameSuffixes {
		if strings.HasSuffix(va.Name, suffix) {
			return fmt.Errorf("metadata.name: %q ends in %q, which names another VoiceAgent's gateway objects; choose another name", va.Name, suffix)
		}
	}
	if p := AgentPort(va); TLSEnabled(va) && (p == gw.TLSPort || p == gw.AdminPort) {
		return fmt.Errorf("spec.port: %d is a port of the inbound TLS role in the same pod when spec.encryption.inTransit is set (%d and %d); choose another", p, gw.TLSPort, gw.AdminPort)
	}
	if strings.TrimSpace(va.Spec.Image) != va.Spec.Image {
		return fmt.Errorf("spec.image: %q must not have leading or trailing white space", va.Spec.Image)
	}
	return nil
}

// reservedNameSuffixes end the names of a VoiceAgent's gateway children: a VoiceAgent
// named with one would render children of the same names as another's gateway.
var reservedNameSuffixes = []string{"-gateway", "-gateway-ca", "-gateway-selfsigned", "-gateway-tls", "-agent-token"}

// AgentSecrets lists the Secrets mounted into the agent container, whose versions
// roll the pods when they change.
func AgentSecrets(va *v1alpha1.VoiceAgent, creds []Credential) []string {
	out := []string{AgentTokenSecretName(va)}
	if GeneratesSessionKey(va) {
		out = append(out, SessionKeySecretName(va))
	}
	for _, c := range creds {
		if c.InAgent {
			out = append(out, c.SecretName)
		}
	}
	return out
}

// CredentialsInAgent says whether any credential is mounted into the agent container
// besides the session key.
func CredentialsInAgent(creds []Credential) bool {
	for _, c := range creds {
		if c.InAgent && c.Slot != "session-key" {
			return true
		}
	}
	return false
}
