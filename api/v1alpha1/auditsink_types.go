package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AuditSinkType is where audit records go.
// +kubebuilder:validation:Enum=webhook;syslog;stdout
type AuditSinkType string

const (
	AuditSinkWebhook AuditSinkType = "webhook"
	AuditSinkSyslog  AuditSinkType = "syslog"
	AuditSinkStdout  AuditSinkType = "stdout"
)

// AuditSinkSpec describes one destination of audit records.
// +kubebuilder:validation:XValidation:rule="(self.type == 'webhook') == has(self.webhook)",message="spec.webhook is required when type is webhook, and only then"
// +kubebuilder:validation:XValidation:rule="(self.type == 'syslog') == has(self.syslog)",message="spec.syslog is required when type is syslog, and only then"
type AuditSinkSpec struct {
	// Type of the sink: webhook (HTTPS POST of record batches), syslog (RFC 5424 over
	// TLS) or stdout (JSON lines in the gateway's log).
	Type AuditSinkType `json:"type"`

	// Webhook settings, for type webhook.
	// +optional
	Webhook *WebhookSink `json:"webhook,omitempty"`

	// Syslog settings, for type syslog.
	// +optional
	Syslog *SyslogSink `json:"syslog,omitempty"`
}

// WebhookSink posts record batches over HTTPS.
type WebhookSink struct {
	// URL of the receiver, https only.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https://([^\s/?#:\[\]@]+|\[[0-9a-fA-F:.]+\])(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[^\s]*)?$`
	URL string `json:"url"`

	// Credentials for the receiver.
	// +optional
	Credentials *WebhookCredentials `json:"credentials,omitempty"`
}

// WebhookCredentials are a bearer token and/or an HMAC-SHA256 signing key.
// +kubebuilder:validation:XValidation:rule="has(self.bearerToken) || has(self.signingKey)",message="webhook.credentials needs bearerToken or signingKey"
type WebhookCredentials struct {
	// BearerToken sent as Authorization: Bearer.
	// +optional
	BearerToken *CredentialSource `json:"bearerToken,omitempty"`

	// SigningKey for an HMAC-SHA256 signature header over each batch.
	// +optional
	SigningKey *CredentialSource `json:"signingKey,omitempty"`
}

// SyslogSink sends RFC 5424 records over TLS.
type SyslogSink struct {
	// Address as host:port, the port 1 to 65535.
	// +kubebuilder:validation:MaxLength=260
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9]([-.a-zA-Z0-9]*[a-zA-Z0-9])?:[0-9]{1,5}$`
	// +kubebuilder:validation:XValidation:rule="int(self.split(':')[self.split(':').size() - 1]) >= 1 && int(self.split(':')[self.split(':').size() - 1]) <= 65535",message="spec.syslog.address: the port must be 1 to 65535"
	Address string `json:"address"`
}

// AuditSinkStatus reports whether the sink can receive records.
type AuditSinkStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// UsedBy lists the VoiceAgents that write to this sink.
	// +optional
	UsedBy []string `json:"usedBy,omitempty"`

	// Delivery sums what the gateways of the VoiceAgents in usedBy report about their
	// deliveries to this sink, read from each running gateway's admin port.
	// +optional
	Delivery *AuditDeliveryStatus `json:"delivery,omitempty"`
}

// AuditDeliveryStatus is the evidence an auditor reads that records reach the sink.
type AuditDeliveryStatus struct {
	// LastSuccessfulDelivery is the latest time any gateway delivered a batch.
	// +optional
	LastSuccessfulDelivery *metav1.Time `json:"lastSuccessfulDelivery,omitempty"`

	// RecordsDelivered since each gateway started, summed over the reporting gateways.
	RecordsDelivered int64 `json:"recordsDelivered"`

	// Backlog is the number of records queued on disk and not yet delivered.
	Backlog int64 `json:"backlog"`

	// Dropped is the number of records that could not be kept (FailOpen with a full
	// queue), summed over the reporting gateways.
	Dropped int64 `json:"dropped"`

	// ReportingGateways is how many running gateway pods answered.
	ReportingGateways int32 `json:"reportingGateways"`

	// RecordsLostOnShutdown counts the records gateway pods still held undelivered for
	// this sink when they exited (rollouts, evictions, scale-down), as each reported in
	// its termination message and the operator saw it; they went with their pod.
	// +optional
	RecordsLostOnShutdown int64 `json:"recordsLostOnShutdown,omitempty"`
}

// AuditSink is a destination for VoiceAgent audit records.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=voice
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuditSink struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AuditSinkSpec   `json:"spec,omitempty"`
	Status AuditSinkStatus `json:"status,omitempty"`
}

// AuditSinkList is a list of AuditSinks.
// +kubebuilder:object:root=true
type AuditSinkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuditSink `json:"items"`
}
