package render

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// Destination is one host the pod must reach.
type Destination struct {
	Host string
	Port int32
}

func (d Destination) String() string { return net.JoinHostPort(d.Host, strconv.Itoa(int(d.Port))) }

// Non-public address ranges. A public host name may resolve anywhere, so egress to it
// is opened to public addresses only: a poisoned DNS answer or an SSRF through the
// gateway cannot reach the cluster network or the cloud metadata endpoint.
var (
	privateIPv4 = []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.168.0.0/16",
	}
	privateIPv6 = []string{"::1/128", "64:ff9b::/96", "fc00::/7", "fe80::/10"}
)

// Destinations derives the gateway pods' egress destinations from va's model,
// fallbacks, HTTP integrations and the AuditSinks it uses.
func Destinations(va *v1alpha1.VoiceAgent, sinks []v1alpha1.AuditSink) ([]Destination, error) {
	var out []Destination
	addURL := func(field, raw string) error {
		d, err := urlDestination(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		out = append(out, d)
		return nil
	}
	if err := addURL("spec.model.endpoint", ModelEndpoint(va.Spec.Model.ModelTarget)); err != nil {
		return nil, err
	}
	for i, fb := range va.Spec.Model.Fallbacks {
		if err := addURL(fmt.Sprintf("spec.model.fallbacks[%d].endpoint", i), ModelEndpoint(fb)); err != nil {
			return nil, err
		}
	}
	for i, in := range va.Spec.Integrations {
		if in.Type == v1alpha1.IntegrationDatabase {
			continue // the agent pods' own, see DatabaseDestinations
		}
		if err := addURL(fmt.Sprintf("spec.integrations[%d].endpoint", i), in.Endpoint); err != nil {
			return nil, err
		}
	}
	for _, s := range sinks {
		switch {
		case s.Spec.Webhook != nil:
			if err := addURL("auditsink "+s.Name+" spec.webhook.url", s.Spec.Webhook.URL); err != nil {
				return nil, err
			}
		case s.Spec.Syslog != nil:
			host, port, err := net.SplitHostPort(s.Spec.Syslog.Address)
			if err != nil {
				return nil, fmt.Errorf("auditsink %s spec.syslog.address: %w", s.Name, err)
			}
			p, err := strconv.Atoi(port)
			if err != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("auditsink %s spec.syslog.address: port %q must be 1 to 65535", s.Name, port)
			}
			out = append(out, Destination{Host: host, Port: int32(p)})
		}
	}
	return dedupe(out), nil
}

// DatabaseDestinations are the agent pods' own destinations besides their gateway:
// the database integrations, which speak plain TCP the gateway cannot proxy. Each must
// be an in-cluster Service name or an IP address (admission refuses anything else):
// a public host name could only be opened as its port on every public address.
func DatabaseDestinations(va *v1alpha1.VoiceAgent, clusterDomain string) ([]Destination, error) {
	var out []Destination
	for i, in := range va.Spec.Integrations {
		if in.Type != v1alpha1.IntegrationDatabase {
			continue
		}
		if _, ok := inClusterNamespace(in.Host, clusterDomain); !ok && !privateIP(in.Host) {
			return nil, fmt.Errorf("spec.integrations[%d].host: %q is neither an in-cluster Service name (<service>.<namespace>.svc) nor a private IP address; the agent pods may reach nothing else directly", i, in.Host)
		}
		out = append(out, Destination{Host: in.Host, Port: int32Or(in.Port, 0)})
	}
	return dedupe(out), nil
}

// agentPrivateRanges are the address ranges a database integration's IP may be in:
// the private ones admission allows, never loopback, link-local or the internet.
var agentPrivateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"}

// metadataAddresses are cloud metadata and resolver addresses inside the private
// ranges (Alibaba Cloud's 100.100.100.200; AWS's IPv6 IMDS fd00:ec2::254, resolver
// fd00:ec2::253 and time server fd00:ec2::123, all in fd00:ec2::/112, which a /120
// would miss): never the agent's, whatever a rule says.
var metadataAddresses = []string{"100.100.100.200/32", "fd00:ec2::/112"}

func privateIP(host string) bool {
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, m := range metadataAddresses {
		if _, n, err := net.ParseCIDR(m); err == nil && n.Contains(ip) {
			return false
		}
	}
	for _, r := range agentPrivateRanges {
		if _, n, err := net.ParseCIDR(r); err == nil && n.Contains(ip) {
			return true
		}
	}
	return false
}

// privateCIDR says whether cidr lies inside one of the private ranges.
func privateCIDR(cidr string) bool {
	_, c, err := net.ParseCIDR(cidr)
	if err != nil {
		return false
	}
	ones, _ := c.Mask.Size()
	for _, r := range agentPrivateRanges {
		_, n, err := net.ParseCIDR(r)
		if err != nil {
			continue
		}
		rOnes, _ := n.Mask.Size()
		if n.Contains(c.IP) && ones >= rOnes && len(n.IP) == len(c.IP) {
			return true
		}
	}
	return false
}

// checkAgentEgress refuses what admission refuses, for a VoiceAgent stored before the
// rules (their CEL is not run again on it): a rule without destinations, or an address
// block outside the private ranges, would give the agent pods the internet.
func checkAgentEgress(va *v1alpha1.VoiceAgent) error {
	if va.Spec.Network == nil {
		return nil
	}
	for i, r := range va.Spec.Network.AllowEgressTo {
		if len(r.To) == 0 {
			return fmt.Errorf("spec.network.allowEgressTo[%d]: a rule without 'to' allows every destination, the public internet included; name in-cluster peers, or declare an integration", i)
		}
		for j, p := range r.To {
			if p.IPBlock != nil && !privateCIDR(p.IPBlock.CIDR) {
				return fmt.Errorf("spec.network.allowEgressTo[%d].to[%d].ipBlock.cidr: %q is not inside the private ranges; declare an integration instead, which the gateway reaches for the agent", i, j, p.IPBlock.CIDR)
			}
		}
	}
	return nil
}

// withoutMetadata leaves the metadata addresses out of a user's address block that
// holds them.
func withoutMetadata(b *networkingv1.IPBlock) *networkingv1.IPBlock {
	_, c, err := net.ParseCIDR(b.CIDR)
	if err != nil {
		return b
	}
	out := &networkingv1.IPBlock{CIDR: b.CIDR, Except: append([]string(nil), b.Except...)}
	cOnes, _ := c.Mask.Size()
	for _, m := range metadataAddresses {
		_, n, err := net.ParseCIDR(m)
		if err != nil || len(n.IP) != len(c.IP) || !c.Contains(n.IP) {
			continue
		}
		if ones, _ := n.Mask.Size(); ones > cOnes {
			out.Except = append(out.Except, m)
		}
	}
	return out
}

func urlDestination(raw string) (Destination, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return Destination{}, fmt.Errorf("%q is not a URL with a host", raw)
	}
	port := int32(443)
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Destination{}, fmt.Errorf("%q has an invalid port", raw)
		}
		port = int32(n)
	}
	return Destination{Host: u.Hostname(), Port: port}, nil
}

func dedupe(ds []Destination) []Destination {
	seen := map[Destination]bool{}
	out := ds[:0]
	for _, d := range ds {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// inClusterNamespace returns the namespace of an in-cluster service host name
// (<svc>.<ns>.svc or <svc>.<ns>.svc.<cluster domain>).
func inClusterNamespace(host, clusterDomain string) (string, bool) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	h = strings.TrimSuffix(h, "."+clusterDomain)
	if !strings.HasSuffix(h, ".svc") {
		return "", false
	}
	parts := strings.Split(strings.TrimSuffix(h, ".svc"), ".")
	if len(parts) < 2 {
		return "", false
	}
	// A namespace is a DNS label. A host whose would-be namespace is not one names no
	// service of this cluster: it gets the public rule, never an invalid selector.
	ns := parts[len(parts)-1]
	if len(validation.IsDNS1123Label(ns)) > 0 {
		return "", false
	}
	return ns, true
}

// EgressRules turns destinations into NetworkPolicy egress rules, DNS first. It
// returns the rules and the human-readable list for status.security.egressAllowed.
func EgressRules(ds []Destination, clusterDomain string) ([]networkingv1.NetworkPolicyEgressRule, []string) {
	rules, allowed := destinationRules(ds, clusterDomain)
	return append([]networkingv1.NetworkPolicyEgressRule{dnsRule()}, rules...), append([]string{"dns:53"}, allowed...)
}

// destinationRules turns destinations into egress rules: an IP address gets its own
// block, an in-cluster name its namespace, a public name the public addresses on its
// port.
func destinationRules(ds []Destination, clusterDomain string) ([]networkingv1.NetworkPolicyEgressRule, []string) {
	var rules []networkingv1.NetworkPolicyEgressRule
	var allowed []string
	publicPorts := map[int32]bool{}
	for _, d := range ds {
		allowed = append(allowed, d.String())
		port := []networkingv1.NetworkPolicyPort{tcpPort(d.Port)}
		if ip := net.ParseIP(d.Host); ip != nil {
			bits := "/32"
			if ip.To4() == nil {
				bits = "/128"
			}
			rules = append(rules, networkingv1.NetworkPolicyEgressRule{
				Ports: port,
				To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: ip.String() + bits}}},
			})
			continue
		}
		if ns, ok := inClusterNamespace(d.Host, clusterDomain); ok {
			rules = append(rules, networkingv1.NetworkPolicyEgressRule{
				Ports: port,
				To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{corev1.LabelMetadataName: ns},
				}}},
			})
			continue
		}
		publicPorts[d.Port] = true
	}
	if len(publicPorts) > 0 {
		ports := make([]int32, 0, len(publicPorts))
		for p := range publicPorts {
			ports = append(ports, p)
		}
		sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
		rule := networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: privateIPv4}},
			{IPBlock: &networkingv1.IPBlock{CIDR: "::/0", Except: privateIPv6}},
		}}
		for _, p := range ports {
			rule.Ports = append(rule.Ports, tcpPort(p))
		}
		rules = append(rules, rule)
	}
	return rules, allowed
}

// dnsRule lets the pod resolve names through the cluster DNS service only.
func dnsRule() networkingv1.NetworkPolicyEgressRule {
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	port := intstr.FromInt32(53)
	return networkingv1.NetworkPolicyEgressRule{
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &port}, {Protocol: &tcp, Port: &port}},
		To: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "kube-system"}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
		}},
	}
}

func tcpPort(p int32) networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(p)
	return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port}
}
