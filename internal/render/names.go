package render

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// FieldOwner is the server-side apply field manager of every child.
const FieldOwner = "voiceagent-operator"

// OperatorPodLabel and OperatorPodLabelValue mark the operator's own pods (config/manager
// and the Helm chart set them whatever the chart's nameOverride), so that the gateways'
// NetworkPolicy admits the operator to their admin port.
const (
	OperatorPodLabel      = "voiceagent.dev/component"
	OperatorPodLabelValue = "operator"
)

// Labels every child carries.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelComponent = "app.kubernetes.io/component"
	// LabelVoiceAgent selects every child of one VoiceAgent, for listing and deletion.
	LabelVoiceAgent = "voiceagent.dev/voiceagent"
	// LabelAuditSink marks the children of an AuditSink.
	LabelAuditSink = "voiceagent.dev/auditsink"
)

// AnnotationRestartHash rolls the pods when a Secret mounted into the agent changes:
// the gateway re-reads its own files, but an agent may read its files only at start.
const AnnotationRestartHash = "voiceagent.dev/restart-hash"

// AnnotationRotateAgentToken on a VoiceAgent asks for a new agent token: whenever its
// value differs from the one recorded on the token's Secret, the operator writes a new
// random token (without reading the old one) and records the value.
const AnnotationRotateAgentToken = "voiceagent.dev/rotate-agent-token"

// Container names.
const (
	AgentContainer   = "agent"
	GatewayContainer = "gateway"
	// InboundContainer terminates the Service's TLS in the agent's pod. It holds the
	// Service's certificate and nothing else: no credential, no egress.
	InboundContainer = "inbound-tls"
)

// Label values of the two workloads.
const (
	agentNameLabel   = "voiceagent"
	gatewayNameLabel = "voiceagent-gateway"
	// ComponentGateway is the component label of the gateway's children.
	ComponentGateway = "gateway"
)

// Labels returns the labels of every child of va.
func Labels(va *v1alpha1.VoiceAgent) map[string]string {
	return map[string]string{
		LabelName:       "voiceagent",
		LabelInstance:   va.Name,
		LabelManagedBy:  FieldOwner,
		LabelVoiceAgent: va.Name,
	}
}

// SelectorLabels select va's agent pods. They never change over a VoiceAgent's life,
// since a Deployment's selector is immutable.
func SelectorLabels(va *v1alpha1.VoiceAgent) map[string]string {
	return map[string]string{LabelName: agentNameLabel, LabelInstance: va.Name}
}

// GatewaySelectorLabels select the gateway pods of the VoiceAgent named name. Their
// app.kubernetes.io/name differs from the agent pods', so that no selector of one
// workload (Deployment, Service, NetworkPolicy, PDB) ever matches the other's pods.
func GatewaySelectorLabels(name string) map[string]string {
	return map[string]string{LabelName: gatewayNameLabel, LabelInstance: name}
}

// IsGatewayPod says whether labels are a gateway pod's.
func IsGatewayPod(labels map[string]string) bool { return labels[LabelName] == gatewayNameLabel }

// gatewayLabels are the labels of the gateway's children and pods.
func gatewayLabels(va *v1alpha1.VoiceAgent) map[string]string {
	l := Labels(va)
	l[LabelName] = gatewayNameLabel
	l[LabelComponent] = ComponentGateway
	return l
}

// GatewayName names the gateway's Deployment, Service, ServiceAccount, NetworkPolicy,
// PodDisruptionBudget and Certificate.
func GatewayName(va *v1alpha1.VoiceAgent) string { return va.Name + "-gateway" }

// ConfigMapName is the name of va's gateway configuration.
func ConfigMapName(va *v1alpha1.VoiceAgent) string { return va.Name + "-gateway" }

// AgentTokenSecretName holds the token the gateway requires of the agent.
func AgentTokenSecretName(va *v1alpha1.VoiceAgent) string { return va.Name + "-agent-token" }

// GatewayTLSSecretName holds the gateway's serving certificate and, under ca.crt, the
// CA the agent pods trust for it.
func GatewayTLSSecretName(va *v1alpha1.VoiceAgent) string { return va.Name + "-gateway-tls" }

// GatewayHost is the gateway Service's in-cluster name.
func GatewayHost(va *v1alpha1.VoiceAgent) string {
	return fmt.Sprintf("%s.%s.svc", GatewayName(va), va.Namespace)
}

// TLSSecretName is the Secret cert-manager writes va's certificate into.
func TLSSecretName(va *v1alpha1.VoiceAgent) string { return va.Name + "-tls" }

// SessionKeySecretName is the operator-generated session key of va.
func SessionKeySecretName(va *v1alpha1.VoiceAgent) string { return va.Name + "-session-key" }

// CredentialSecretName is the Secret an ExternalSecret of va syncs a slot into.
func CredentialSecretName(va *v1alpha1.VoiceAgent, slot string) string {
	return fmt.Sprintf("%s-%s", va.Name, slot)
}

// AuditSinkSecretName is the Secret an AuditSink's ExternalSecret syncs a slot into.
func AuditSinkSecretName(sink *v1alpha1.AuditSink, slot string) string {
	return fitName(fmt.Sprintf("%s-auditsink-%s", sink.Name, slot), false)
}

// fitName returns name when it is a valid DNS label (label) or DNS subdomain, as the
// names built from a VoiceAgent's are. A name built from an AuditSink's, which may be
// any subdomain of up to 253 characters, may not be one: it is then made one, with dots
// turned into dashes for a label, cut short, and ended with a dash and 10 hex digits of
// its SHA-256, so that distinct names stay distinct. Valid names never change, so that
// no existing pod is rolled and no Secret renamed.
func fitName(name string, label bool) string {
	limit, valid := validation.DNS1123SubdomainMaxLength, validation.IsDNS1123Subdomain
	if label {
		limit, valid = validation.DNS1123LabelMaxLength, validation.IsDNS1123Label
	}
	if len(valid(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	if label {
		name = strings.ReplaceAll(name, ".", "-")
	}
	name = strings.TrimRight(name[:min(len(name), limit-11)], "-.")
	return name + "-" + hex.EncodeToString(sum[:])[:10]
}

func int32Or(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// Replicas is va's agent replica count with its default.
func Replicas(va *v1alpha1.VoiceAgent) int32 { return int32Or(va.Spec.Replicas, 1) }

// DefaultGatewayReplicas keeps one gateway pod serving while another is drained,
// evicted or rolled: every call of the agent crosses one.
const DefaultGatewayReplicas = 2

// GatewayReplicas is the gateway replica count with its default, at least 1.
func GatewayReplicas(va *v1alpha1.VoiceAgent) int32 {
	n := int32(DefaultGatewayReplicas)
	if g := va.Spec.Gateway; g != nil && g.Replicas != nil {
		n = *g.Replicas
	}
	return max(n, 1)
}

// AgentPort is the agent container's port with its default.
func AgentPort(va *v1alpha1.VoiceAgent) int32 {
	if va.Spec.Port == 0 {
		return 8080
	}
	return va.Spec.Port
}

// TLSEnabled says whether va asks for TLS in transit.
func TLSEnabled(va *v1alpha1.VoiceAgent) bool {
	return va.Spec.Encryption != nil && va.Spec.Encryption.InTransit != nil
}

// objectMeta is the metadata of a child of va: its namespace, labels and a controller
// owner reference, so that the garbage collector deletes it with va.
func objectMeta(va *v1alpha1.VoiceAgent, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            name,
		Namespace:       va.Namespace,
		Labels:          Labels(va),
		OwnerReferences: []metav1.OwnerReference{ownerReference(va)},
	}
}

// gatewayObjectMeta is objectMeta for the gateway's children.
func gatewayObjectMeta(va *v1alpha1.VoiceAgent, name string) metav1.ObjectMeta {
	m := objectMeta(va, name)
	m.Labels = gatewayLabels(va)
	return m
}

func ownerReference(va *v1alpha1.VoiceAgent) metav1.OwnerReference {
	return *metav1.NewControllerRef(va, v1alpha1.GroupVersion.WithKind("VoiceAgent"))
}
