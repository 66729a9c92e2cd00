package render

import (
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// NetworkPolicy denies all traffic to and from va's pods except: DNS, the derived
// egress destinations, the user's extra egress rules, and ingress to the serving port
// from spec.network.allowIngressFrom. Both policy types are always listed, so an
// empty rule list means deny, never "not restricted". The gateway's admin port (health,
// metrics and the audit delivery summary; no credential, no proxy route) is open to the
// operator's own pods and to the metrics scrapers' namespaces of admin, nothing else.
func NetworkPolicy(va *v1alpha1.VoiceAgent, egress []networkingv1.NetworkPolicyEgressRule, admin AdminAccess) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: objectMeta(va, va.Name),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(va)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Egress:      egress,
		},
	}
	if n := va.Spec.Network; n != nil {
		np.Spec.Egress = append(np.Spec.Egress, n.AllowEgressTo...)
		if len(n.AllowIngressFrom) > 0 {
			port := servingPort(va)
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  n.AllowIngressFrom,
				Ports: []networkingv1.NetworkPolicyPort{tcpPort(port)},
			}}
		}
	}
	var peers []networkingv1.NetworkPolicyPeer
	if admin.OperatorNamespace != "" {
		peers = append(peers, networkingv1.NetworkPolicyPeer{
			NamespaceSelector: namespaceSelector(admin.OperatorNamespace),
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{OperatorPodLabel: OperatorPodLabelValue}},
		})
	}
	for _, ns := range admin.ScraperNamespaces {
		peers = append(peers, networkingv1.NetworkPolicyPeer{NamespaceSelector: namespaceSelector(ns)})
	}
	if len(peers) > 0 {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
			From:  peers,
			Ports: []networkingv1.NetworkPolicyPort{tcpPort(gatewayconfig.AdminPort)},
		})
	}
	return np
}

// servingPort is the pod port clients reach: the gateway's TLS port when TLS is on,
// else the agent's own port.
func servingPort(va *v1alpha1.VoiceAgent) int32 {
	if TLSEnabled(va) {
		return gatewayconfig.TLSPort
	}
	return AgentPort(va)
}

// AdminAccess says who may reach the gateways' admin port.
type AdminAccess struct {
	// OperatorNamespace: the operator's pods there read the audit delivery summary.
	OperatorNamespace string
	// ScraperNamespaces: any pod there (Prometheus) may scrape the gateway's metrics.
	ScraperNamespaces []string
}

func namespaceSelector(ns string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}
}
