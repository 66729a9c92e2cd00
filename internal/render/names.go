package render

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

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

// Container names.
const (
	AgentContainer   = "agent"
	GatewayContainer = "gateway"
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

// SelectorLabels select va's pods. They never change over a VoiceAgent's life, since a
// Deployment's selector is immutable.
func SelectorLabels(va *v1alpha1.VoiceAgent) map[string]string {
	return map[string]string{LabelName: "voiceagent", LabelInstance: va.Name}
}

// ConfigMapName is the name of va's gateway configuration.
func ConfigMapName(va *v1alpha1.VoiceAgent) string { return va.Name + "-gateway" }

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

// Replicas is va's replica count with its default.
func Replicas(va *v1alpha1.VoiceAgent) int32 { return int32Or(va.Spec.Replicas, 1) }

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

func ownerReference(va *v1alpha1.VoiceAgent) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         v1alpha1.GroupVersion.String(),
		Kind:               "VoiceAgent",
		Name:               va.Name,
		UID:                va.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}
