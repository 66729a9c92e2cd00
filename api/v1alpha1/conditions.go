package v1alpha1

// Condition types of a VoiceAgent.
const (
	ConditionReady            = "Ready"
	ConditionCredentialsReady = "CredentialsReady"
	ConditionCertificateReady = "CertificateReady"
	ConditionNetworkIsolated  = "NetworkIsolated"
	ConditionAuditReady       = "AuditReady"
	ConditionAvailable        = "Available"
	// ConditionBudgetExceeded is True while a daily or monthly budget is spent; it
	// does not make the VoiceAgent not Ready (with onExceeded Block the gateways refuse
	// model calls until the budget resets).
	ConditionBudgetExceeded = "BudgetExceeded"
	// ConditionAgentTrafficEncrypted says whether the agent's calls to its gateway
	// cross the pod network encrypted. It does not make the VoiceAgent not Ready: without
	// cert-manager they are plain HTTP, still authenticated by the agent token.
	ConditionAgentTrafficEncrypted = "AgentTrafficEncrypted"
	// ConditionAutoscaling says how the agent pods are scaled: on sessions (KEDA), on
	// CPU only (no KEDA), or not at all. It does not make the VoiceAgent not Ready.
	ConditionAutoscaling = "Autoscaling"
	// ConditionLimitStoreReady, with spec.limitStore only, says whether every gateway
	// that reports reaches the limit store. It does not make the VoiceAgent not Ready:
	// its message says which failure policy is in force meanwhile.
	ConditionLimitStoreReady = "LimitStoreReady"
)

// ConditionTypes lists every condition a VoiceAgent reports, Ready first.
var ConditionTypes = []string{
	ConditionReady, ConditionCredentialsReady, ConditionCertificateReady,
	ConditionNetworkIsolated, ConditionAuditReady, ConditionAvailable,
	ConditionBudgetExceeded, ConditionAgentTrafficEncrypted, ConditionAutoscaling,
	ConditionLimitStoreReady,
}

// Condition reasons. Each says what was observed; the message says what to do. The
// values are the API: tools, alerts and Argo CD health checks match on them. Each
// constant is named Reason followed by its value (conditions_test.go checks it).
const (
	ReasonAllConditionsMet            = "AllConditionsMet"
	ReasonDeliveryFailing             = "DeliveryFailing"
	ReasonSinkDeliveryFailing         = "SinkDeliveryFailing"
	ReasonConditionsNotMet            = "ConditionsNotMet"
	ReasonCredentialsSynced           = "CredentialsSynced"
	ReasonSecretNotFound              = "SecretNotFound"
	ReasonExternalSecretNotSynced     = "ExternalSecretNotSynced"
	ReasonExternalSecretsNotInstalled = "ExternalSecretsNotInstalled"
	ReasonCertificateIssued           = "CertificateIssued"
	ReasonCertificateNotReady         = "CertificateNotReady"
	ReasonCertManagerNotInstalled     = "CertManagerNotInstalled"
	ReasonTLSNotRequested             = "TLSNotRequested"
	ReasonNetworkPolicyApplied        = "NetworkPolicyApplied"
	ReasonSinksReady                  = "SinksReady"
	ReasonNoSinksConfigured           = "NoSinksConfigured"
	ReasonSinkNotFound                = "SinkNotFound"
	ReasonSinkNotReady                = "SinkNotReady"
	ReasonDeploymentAvailable         = "DeploymentAvailable"
	ReasonDeploymentUnavailable       = "DeploymentUnavailable"
	ReasonInvalidSpec                 = "InvalidSpec"
	ReasonApplyFailed                 = "ApplyFailed"
	ReasonSinkConfigured              = "SinkConfigured"
	ReasonDailyBudgetSpent            = "DailyBudgetSpent"
	ReasonMonthlyBudgetSpent          = "MonthlyBudgetSpent"
	ReasonWithinBudget                = "WithinBudget"
	ReasonGatewayCertificateIssued    = "GatewayCertificateIssued"
	ReasonGatewayCertificateNotReady  = "GatewayCertificateNotReady"
	ReasonScalingOnSessions           = "ScalingOnSessions"
	ReasonScalingOnCPU                = "ScalingOnCPU"
	ReasonAutoscalingNotRequested     = "AutoscalingNotRequested"
	// LimitStoreReady: the gateways' own reasons for their limit store.
	ReasonConnected            = "Connected"
	ReasonUnreachable          = "Unreachable"
	ReasonAuthenticationFailed = "AuthenticationFailed"
	ReasonTLSFailed            = "TLSFailed"
	ReasonError                = "Error"
)
