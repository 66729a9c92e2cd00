package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// CredentialSource says where a credential comes from. The operator never reads the
// value: it mounts the Secret as a read-only file into the gateway container, or asks
// External Secrets Operator to sync it from an external store first.
// +kubebuilder:validation:XValidation:rule="has(self.secretRef) != has(self.externalSecret)",message="set exactly one of credentials.secretRef or credentials.externalSecret"
type CredentialSource struct {
	// SecretRef names a key of an existing Secret in the VoiceAgent's namespace.
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`

	// ExternalSecret makes the operator create an external-secrets.io/v1 ExternalSecret
	// that syncs the value from an external store (Vault, a cloud secret manager) into a
	// Secret owned by the VoiceAgent. Needs External Secrets Operator in the cluster.
	// +optional
	ExternalSecret *ExternalSecretSource `json:"externalSecret,omitempty"`
}

// SecretKeyReference names one key of a Secret in the same namespace.
type SecretKeyReference struct {
	// Name of the Secret: a DNS subdomain (lower case letters, digits, '-' and '.').
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key within the Secret's data (letters, digits, '-', '_' and '.'; not "." or "..").
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..'",message="key: '.' and '..' are not Secret keys; name the key that holds the value"
	Key string `json:"key"`
}

// SecretStoreKind is the kind of an External Secrets store.
// +kubebuilder:validation:Enum=SecretStore;ClusterSecretStore
type SecretStoreKind string

const (
	SecretStoreKindNamespaced SecretStoreKind = "SecretStore"
	SecretStoreKindCluster    SecretStoreKind = "ClusterSecretStore"
)

// SecretStoreReference names an External Secrets store.
type SecretStoreReference struct {
	// Kind of the store: SecretStore (same namespace) or ClusterSecretStore.
	// +kubebuilder:default=SecretStore
	// +optional
	Kind SecretStoreKind `json:"kind,omitempty"`

	// Name of the store.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// RemoteReference names a value in the external store.
type RemoteReference struct {
	// Key of the secret in the external store, e.g. "prod/gemini".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Key string `json:"key"`

	// Property within the secret, e.g. "api_key", when the secret holds several values.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Property string `json:"property,omitempty"`

	// Version of the secret in the external store; the latest when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Version string `json:"version,omitempty"`
}

// ExternalSecretSource describes a credential synced by External Secrets Operator.
type ExternalSecretSource struct {
	// StoreRef is the SecretStore or ClusterSecretStore to read from.
	StoreRef SecretStoreReference `json:"storeRef"`

	// RemoteRef is the value to read.
	RemoteRef RemoteReference `json:"remoteRef"`

	// RefreshInterval is how often the value is re-read from the store, so that a
	// rotated credential reaches the gateway without a redeploy.
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('8760h')",message="refreshInterval must be at most 8760h (a year)"
	// +optional
	RefreshInterval *metav1.Duration `json:"refreshInterval,omitempty"`
}
