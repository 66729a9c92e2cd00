package render

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// ServiceAccount is the agent pods' identity, with no API token mounted: the agent has
// no business calling the Kubernetes API.
func ServiceAccount(va *v1alpha1.VoiceAgent) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   objectMeta(va, va.Name),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// Service exposes one port: the inbound TLS role's port when TLS is on, else the
// agent's.
func Service(va *v1alpha1.VoiceAgent) *corev1.Service {
	port := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("agent"), Protocol: corev1.ProtocolTCP}
	if TLSEnabled(va) {
		port = corev1.ServicePort{Name: "https", Port: gw.TLSPort, TargetPort: intstr.FromString("https"), Protocol: corev1.ProtocolTCP}
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(va, va.Name),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: SelectorLabels(va),
			Ports:    []corev1.ServicePort{port},
		},
	}
}

// Endpoint is the URL clients use to reach va.
func Endpoint(va *v1alpha1.VoiceAgent) string {
	if TLSEnabled(va) {
		return fmt.Sprintf("https://%s.%s.svc:%d", va.Name, va.Namespace, gw.TLSPort)
	}
	return fmt.Sprintf("http://%s.%s.svc:80", va.Name, va.Namespace)
}
