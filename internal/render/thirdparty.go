package render

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// Kinds of the optional integrations. They are built as unstructured objects so that
// the operator does not depend on those projects' Go modules; the integration tests
// apply them to those projects' real CRDs with strict field validation.
var (
	CertificateGVK    = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}
	IssuerGVK         = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Issuer"}
	ExternalSecretGVK = schema.GroupVersionKind{Group: "external-secrets.io", Version: "v1", Kind: "ExternalSecret"}
)

// CRD names of the optional integrations, for discovery.
const (
	CertificateCRD    = "certificates.cert-manager.io"
	ExternalSecretCRD = "externalsecrets.external-secrets.io"
)

func newUnstructured(gvk schema.GroupVersionKind, meta map[string]any, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"metadata": meta, "spec": spec}}
	u.SetGroupVersionKind(gvk)
	return u
}

func metaMap(va *v1alpha1.VoiceAgent, name string) map[string]any {
	return metaMapWith(va, name, Labels(va))
}

func metaMapWith(va *v1alpha1.VoiceAgent, name string, labels map[string]string) map[string]any {
	ref := ownerReference(va)
	return map[string]any{
		"name":      name,
		"namespace": va.Namespace,
		"labels":    stringMap(labels),
		"ownerReferences": []any{map[string]any{
			"apiVersion": ref.APIVersion, "kind": ref.Kind, "name": ref.Name, "uid": string(ref.UID),
			"controller": true, "blockOwnerDeletion": true,
		}},
	}
}

func stringMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func durationString(d time.Duration) string { return d.String() }

// Certificate asks cert-manager for the Service's serving certificate: ECDSA P-256,
// a new private key on every renewal, for the Service's DNS names.
func Certificate(va *v1alpha1.VoiceAgent, clusterDomain string) *unstructured.Unstructured {
	if !TLSEnabled(va) {
		return nil
	}
	t := va.Spec.Encryption.InTransit
	dns := t.DNSNames
	if len(dns) == 0 {
		dns = []string{
			fmt.Sprintf("%s.%s.svc", va.Name, va.Namespace),
			fmt.Sprintf("%s.%s.svc.%s", va.Name, va.Namespace, clusterDomain),
		}
	}
	dnsAny := make([]any, len(dns))
	for i, d := range dns {
		dnsAny[i] = d
	}
	kind := string(t.IssuerRef.Kind)
	if kind == "" {
		kind = "Issuer"
	}
	group := t.IssuerRef.Group
	if group == "" {
		group = "cert-manager.io"
	}
	spec := map[string]any{
		"secretName":  TLSSecretName(va),
		"dnsNames":    dnsAny,
		"duration":    durationString(durationOr(t.Duration, 2160*time.Hour).Duration),
		"renewBefore": durationString(durationOr(t.RenewBefore, 360*time.Hour).Duration),
		"issuerRef":   map[string]any{"name": t.IssuerRef.Name, "kind": kind, "group": group},
		"privateKey":  map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
		"usages":      []any{"server auth", "digital signature"},
		"secretTemplate": map[string]any{
			"labels": stringMap(Labels(va)),
		},
	}
	return newUnstructured(CertificateGVK, metaMap(va, va.Name), spec)
}

// GatewayCAName names the gateway's private CA: its Certificate, its Secret and the
// Issuer that signs with it.
func GatewayCAName(va *v1alpha1.VoiceAgent) string { return va.Name + "-gateway-ca" }

// GatewaySelfSignedIssuerName names the Issuer that signs the gateway's CA.
func GatewaySelfSignedIssuerName(va *v1alpha1.VoiceAgent) string {
	return va.Name + "-gateway-selfsigned"
}

// Durations of the gateway's certificates: the CA outlives many serving certificates,
// so that the ca.crt the agent pods trust stays the same across renewals (the kubelet
// refreshes the two pods' copies at different moments).
const (
	gatewayCADuration     = 87600 * time.Hour
	gatewayCARenewBefore  = 8760 * time.Hour
	gatewayCertDuration   = 2160 * time.Hour
	gatewayCertRenewAhead = 720 * time.Hour
)

// GatewayTLSObjects are what cert-manager needs to encrypt the agent's calls to its
// gateway, in the order they depend on one another: a self-signed Issuer, the
// VoiceAgent's own CA Certificate it signs, an Issuer that signs with that CA, and the
// gateway Service's serving Certificate. A private CA per VoiceAgent, not a cluster
// issuer: trust is pinned to exactly this gateway, and no cluster-wide CA is needed.
func GatewayTLSObjects(va *v1alpha1.VoiceAgent, clusterDomain string) []*unstructured.Unstructured {
	labels := gatewayLabels(va)
	issuerRef := func(name string) map[string]any {
		return map[string]any{"name": name, "kind": "Issuer", "group": "cert-manager.io"}
	}
	// Fresh maps for each object: unstructured objects are mutated in place by the
	// client (defaulting, managed fields) and must share nothing.
	key := func() map[string]any {
		return map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"}
	}
	secretTemplate := func() map[string]any { return map[string]any{"labels": stringMap(labels)} }
	selfSigned := newUnstructured(IssuerGVK, metaMapWith(va, GatewaySelfSignedIssuerName(va), labels),
		map[string]any{"selfSigned": map[string]any{}})
	ca := newUnstructured(CertificateGVK, metaMapWith(va, GatewayCAName(va), labels), map[string]any{
		"isCA":           true,
		"commonName":     GatewayName(va) + "." + va.Namespace + " CA",
		"secretName":     GatewayCAName(va),
		"duration":       durationString(gatewayCADuration),
		"renewBefore":    durationString(gatewayCARenewBefore),
		"issuerRef":      issuerRef(GatewaySelfSignedIssuerName(va)),
		"privateKey":     key(),
		"secretTemplate": secretTemplate(),
	})
	caIssuer := newUnstructured(IssuerGVK, metaMapWith(va, GatewayCAName(va), labels),
		map[string]any{"ca": map[string]any{"secretName": GatewayCAName(va)}})
	serving := newUnstructured(CertificateGVK, metaMapWith(va, GatewayName(va), labels), map[string]any{
		"secretName":     GatewayTLSSecretName(va),
		"dnsNames":       []any{GatewayHost(va), GatewayHost(va) + "." + clusterDomain},
		"duration":       durationString(gatewayCertDuration),
		"renewBefore":    durationString(gatewayCertRenewAhead),
		"issuerRef":      issuerRef(GatewayCAName(va)),
		"privateKey":     key(),
		"usages":         []any{"server auth", "digital signature"},
		"secretTemplate": secretTemplate(),
	})
	return []*unstructured.Unstructured{selfSigned, ca, caIssuer, serving}
}

// ExternalSecrets asks External Secrets Operator to sync each externally stored
// credential of va into a Secret that it owns, under the key the pod mounts.
func ExternalSecrets(va *v1alpha1.VoiceAgent, creds []Credential) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, c := range creds {
		if c.Source.ExternalSecret == nil || c.AuditSink != "" {
			continue
		}
		meta := metaMap(va, c.SecretName)
		out = append(out, newUnstructured(ExternalSecretGVK, meta, ExternalSecretSpec(c)))
	}
	return out
}

// ExternalSecretSpec is the spec of the ExternalSecret that syncs one credential.
func ExternalSecretSpec(c Credential) map[string]any {
	es := c.Source.ExternalSecret
	kind := string(es.StoreRef.Kind)
	if kind == "" {
		kind = string(v1alpha1.SecretStoreKindNamespaced)
	}
	remote := map[string]any{"key": es.RemoteRef.Key}
	if es.RemoteRef.Property != "" {
		remote["property"] = es.RemoteRef.Property
	}
	if es.RemoteRef.Version != "" {
		remote["version"] = es.RemoteRef.Version
	}
	return map[string]any{
		"refreshInterval": durationString(durationOr(es.RefreshInterval, time.Hour).Duration),
		"secretStoreRef":  map[string]any{"name": es.StoreRef.Name, "kind": kind},
		"target": map[string]any{
			"name":           c.SecretName,
			"creationPolicy": "Owner",
			"deletionPolicy": "Retain",
		},
		"data": []any{map[string]any{"secretKey": gw.CredentialFile, "remoteRef": remote}},
	}
}
