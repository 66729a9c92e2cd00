package render

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
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
}

// Children are the objects va wants. Optional ones are nil when not wanted.
type Children struct {
	ServiceAccount      *corev1.ServiceAccount
	ConfigMap           *corev1.ConfigMap
	Deployment          *appsv1.Deployment
	Service             *corev1.Service
	NetworkPolicy       *networkingv1.NetworkPolicy
	PodDisruptionBudget *policyv1.PodDisruptionBudget
	Certificate         *unstructured.Unstructured
	ExternalSecrets     []*unstructured.Unstructured

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
	creds := Credentials(va, in.Sinks)
	cfg, err := GatewayConfig(va, in.Sinks, creds)
	if err != nil {
		return nil, err
	}
	cm, err := ConfigMap(va, cfg)
	if err != nil {
		return nil, err
	}
	egress, allowed := EgressRules(dests, in.ClusterDomain)
	return &Children{
		ServiceAccount: ServiceAccount(va),
		ConfigMap:      cm,
		Deployment: Deployment(va, DeploymentInputs{
			GatewayImage: in.GatewayImage, Credentials: creds, AgentSecretVersions: in.AgentSecretVersions,
		}),
		Service:             Service(va),
		NetworkPolicy:       NetworkPolicy(va, egress, in.Admin),
		PodDisruptionBudget: PodDisruptionBudget(va),
		Certificate:         Certificate(va, in.ClusterDomain),
		ExternalSecrets:     ExternalSecrets(va, creds),
		Credentials:         creds,
		GatewayConfig:       cfg,
		EgressAllowed:       allowed,
	}, nil
}

// checkPod refuses what the CRD admits but the pod could not run with: an agent port
// the gateway listens on in the same pod, or an image the API server refuses in a pod.
func checkPod(va *v1alpha1.VoiceAgent) error {
	switch p := AgentPort(va); {
	case p == gw.ProxyPort:
		return fmt.Errorf("spec.port: %d is the gateway's proxy port in the same pod; choose another", p)
	case p == gw.AdminPort:
		return fmt.Errorf("spec.port: %d is the gateway's admin port in the same pod; choose another", p)
	case p == gw.TLSPort && TLSEnabled(va):
		return fmt.Errorf("spec.port: %d is the gateway's TLS port in the same pod when spec.encryption.inTransit is set; choose another", p)
	}
	if strings.TrimSpace(va.Spec.Image) != va.Spec.Image {
		return fmt.Errorf("spec.image: %q must not have leading or trailing white space", va.Spec.Image)
	}
	return nil
}

// AgentSecrets lists the Secrets mounted into the agent container, whose versions
// roll the pods when they change.
func AgentSecrets(va *v1alpha1.VoiceAgent, creds []Credential) []string {
	var out []string
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
