package render

import (
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// Both policies list both policy types, so that an empty rule list means deny, never
// "not restricted". Each selects one workload's pods only: the two workloads' pods
// carry different app.kubernetes.io/name labels.

// NetworkPolicy is the agent pods' policy. Their only ways out are DNS, their own
// gateway pods' proxy port and the in-cluster destinations the spec declares
// (database integrations, spec.network.allowEgressTo, which admission keeps inside the
// cluster): never the internet. Their only way in is the Service port, from
// spec.network.allowIngressFrom.
func NetworkPolicy(va *v1alpha1.VoiceAgent, agentEgress []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	egress := append([]networkingv1.NetworkPolicyEgressRule{dnsRule(), {
		To: []networkingv1.NetworkPolicyPeer{{
			PodSelector: &metav1.LabelSelector{MatchLabels: GatewaySelectorLabels(va.Name)},
		}},
		Ports: []networkingv1.NetworkPolicyPort{tcpPort(gatewayconfig.ProxyPort)},
	}}, agentEgress...)
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
		np.Spec.Egress = append(np.Spec.Egress, UserEgressRules(n.AllowEgressTo)...)
		if len(n.AllowIngressFrom) > 0 {
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  n.AllowIngressFrom,
				Ports: []networkingv1.NetworkPolicyPort{tcpPort(servingPort(va))},
			}}
		}
	}
	return np
}

// LockdownNetworkPolicy is the agent pods' policy while their spec cannot be rendered:
// DNS and their gateway only, nothing the spec declares. An invalid spec must not leave
// an older, wider policy in force (that of a gateway sidecar, with its provider egress,
// from before the gateway had pods of its own).
func LockdownNetworkPolicy(va *v1alpha1.VoiceAgent) *networkingv1.NetworkPolicy {
	locked := va.DeepCopy()
	if n := locked.Spec.Network; n != nil {
		n.AllowEgressTo = nil
	}
	return NetworkPolicy(locked, nil)
}

// GatewayNetworkPolicy is the gateway pods' policy: in, the proxy port from this
// VoiceAgent's agent pods only, and the admin port (health, metrics, the audit delivery
// and spend summaries; no credential, no proxy route) from the operator's pods and the
// metrics scrapers' namespaces of admin; out, DNS and the destinations derived from the
// model, the HTTP integrations and the audit sinks.
func GatewayNetworkPolicy(va *v1alpha1.VoiceAgent, egress []networkingv1.NetworkPolicyEgressRule, admin AdminAccess) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: gatewayObjectMeta(va, GatewayName(va)),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: GatewaySelectorLabels(va.Name)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Egress:      egress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(va)}}},
				Ports: []networkingv1.NetworkPolicyPort{tcpPort(gatewayconfig.ProxyPort)},
			}},
		},
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

// UserEgressRules are spec.network.allowEgressTo as NetworkPolicy rules: the same
// fields.
func UserEgressRules(in []v1alpha1.EgressRule) []networkingv1.NetworkPolicyEgressRule {
	out := make([]networkingv1.NetworkPolicyEgressRule, 0, len(in))
	for _, r := range in {
		rule := networkingv1.NetworkPolicyEgressRule{}
		for _, p := range r.Ports {
			rule.Ports = append(rule.Ports, networkingv1.NetworkPolicyPort{Protocol: p.Protocol, Port: p.Port, EndPort: p.EndPort})
		}
		for _, p := range r.To {
			peer := networkingv1.NetworkPolicyPeer{PodSelector: p.PodSelector, NamespaceSelector: p.NamespaceSelector}
			if b := p.IPBlock; b != nil {
				peer.IPBlock = withoutMetadata(&networkingv1.IPBlock{CIDR: b.CIDR, Except: b.Except})
			}
			rule.To = append(rule.To, peer)
		}
		out = append(out, rule)
	}
	return out
}

// servingPort is the pod port clients reach: the inbound TLS role's port when TLS is
// on, else the agent's own port.
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
