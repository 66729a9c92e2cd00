package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// VoiceAgentSpec declares one LLM voice agent and the controls around it.
type VoiceAgentSpec struct {
	// Image is the agent's container image. Pin it by digest (…@sha256:…) in production
	// so that what runs is what was reviewed.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^\S+$`
	Image string `json:"image"`

	// Replicas is the number of agent pods: 1 when not set. Leave it unset with
	// spec.autoscaling, which then owns the count. (Limits and budgets are for the whole
	// VoiceAgent and are shared out between the gateway replicas, spec.gateway.)
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Port is the agent container's own port. With spec.encryption.inTransit, clients
	// reach it through the Service's TLS port, terminated in the agent's pod by a
	// process that holds no credential.
	// +kubebuilder:default=8080
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`

	// Resources of the agent container. Defaults: requests 100m CPU and 128Mi memory,
	// limit 512Mi memory.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Env holds plain settings for the agent container. Credentials do not belong here:
	// a literal value for a credential-like name and valueFrom.secretKeyRef are rejected;
	// use spec.model.credentials or spec.integrations[].credentials, which only the
	// gateway sees.
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	// +optional
	Env []EnvVar `json:"env,omitempty"`

	// Model is the primary LLM and the fallbacks tried, in order, when it fails.
	Model ModelSpec `json:"model"`

	// Integrations are the external systems the agent calls. HTTP integrations are
	// reached through the gateway at <its gateway URL>/integrations/<name>/ (env
	// VOICEAGENT_INTEGRATION_<NAME>_URL) with credentials injected by the gateway.
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	// +optional
	Integrations []Integration `json:"integrations,omitempty"`

	// RateLimits for the whole VoiceAgent, across all replicas.
	// +optional
	RateLimits *RateLimits `json:"rateLimits,omitempty"`

	// CostLimits caps model spend in US dollars.
	// +optional
	CostLimits *CostLimits `json:"costLimits,omitempty"`

	// Voice limits the realtime sessions (Gemini Live, OpenAI Realtime) the agent holds
	// through its gateway, for the whole VoiceAgent.
	// +optional
	Voice *VoiceSpec `json:"voice,omitempty"`

	// CircuitBreaker stops calls to an upstream that keeps failing, and fails over.
	// +kubebuilder:default={failureThreshold: 5, openDuration: "30s"}
	// +optional
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`

	// Encryption in transit (TLS for the Service) and at rest (the agent's session key).
	// +optional
	Encryption *Encryption `json:"encryption,omitempty"`

	// Network adds to the default-deny NetworkPolicy.
	// +optional
	Network *NetworkSpec `json:"network,omitempty"`

	// Autoscaling scales the agent pods on the calls they carry: with KEDA installed, on
	// the realtime sessions in progress (the gateways' voiceagent_gateway_active_sessions,
	// read from Prometheus); without it, on CPU (an autoscaling/v2
	// HorizontalPodAutoscaler), and the Autoscaling condition says so. While it is set,
	// the operator does not own the agent Deployment's replicas.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// LimitStore, when set, makes the gateways enforce the whole VoiceAgent's limits
	// exactly, in a shared Redis (spec.rateLimits, spec.voice's session limits and
	// spec.costLimits' budgets), instead of each gateway replica its share. The shares
	// stay the fallback while the store cannot be reached (failurePolicy FailOpen).
	// +optional
	LimitStore *LimitStore `json:"limitStore,omitempty"`

	// Gateway is the gateway workload: the VoiceAgent's only pods that hold provider and
	// integration credentials and may reach anything outside the cluster. The agent
	// pods reach it over the pod network with the agent token as their API key.
	// +kubebuilder:default={replicas: 2}
	// +optional
	Gateway *GatewaySpec `json:"gateway,omitempty"`

	// Audit configures the audit trail of every model and integration call.
	// +kubebuilder:default={redactPII: true, failurePolicy: FailClosed}
	// +optional
	Audit *AuditSpec `json:"audit,omitempty"`
}

// EnvVar is a plain setting of the agent container: the subset of a core EnvVar that
// cannot carry a credential.
// +kubebuilder:validation:XValidation:rule="!has(self.value) || size(self.value) == 0 || !self.name.matches('(?i)(key|token|secret|password|passwd|credentials?)$')",message="spec.env: a literal value for a credential-like name (ending in KEY, TOKEN, SECRET, PASSWORD, CREDENTIALS) is not allowed; move it to credentials (secretRef or externalSecret) so that only the gateway holds it"
// +kubebuilder:validation:XValidation:rule="!(has(self.value) && has(self.valueFrom))",message="spec.env: set value or valueFrom, not both"
type EnvVar struct {
	// Name of the variable.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z][-._a-zA-Z0-9]*$`
	Name string `json:"name"`

	// Value of the variable.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Value string `json:"value,omitempty"`

	// ValueFrom reads the value from a ConfigMap or the pod's own fields.
	// +optional
	ValueFrom *EnvVarSource `json:"valueFrom,omitempty"`
}

// EnvVarSource is where an EnvVar's value comes from. Secrets are not a source: they
// would put a credential into the agent's environment.
// +kubebuilder:validation:XValidation:rule="!has(self.secretKeyRef)",message="spec.env: valueFrom.secretKeyRef would put a Secret into the agent's environment; use credentials (secretRef or externalSecret) so that only the gateway holds it"
type EnvVarSource struct {
	// ConfigMapKeyRef selects a key of a ConfigMap.
	// +optional
	ConfigMapKeyRef *corev1.ConfigMapKeySelector `json:"configMapKeyRef,omitempty"`

	// FieldRef selects a field of the pod.
	// +optional
	FieldRef *corev1.ObjectFieldSelector `json:"fieldRef,omitempty"`

	// ResourceFieldRef selects a resource of the container.
	// +optional
	ResourceFieldRef *corev1.ResourceFieldSelector `json:"resourceFieldRef,omitempty"`

	// SecretKeyRef is always rejected; it exists so that the error can say why.
	// +optional
	SecretKeyRef *corev1.SecretKeySelector `json:"secretKeyRef,omitempty"`
}

// ModelProvider names an LLM API.
// +kubebuilder:validation:Enum=gemini;openai;anthropic;openai-compatible
type ModelProvider string

const (
	ProviderGemini           ModelProvider = "gemini"
	ProviderOpenAI           ModelProvider = "openai"
	ProviderAnthropic        ModelProvider = "anthropic"
	ProviderOpenAICompatible ModelProvider = "openai-compatible"
)

// VoiceSpec limits realtime sessions. A session over a limit is refused at its
// handshake with 429 and Retry-After; one that reaches its maximum duration or spends
// past a Block budget is closed with code 1008 and a reason the agent can log.
type VoiceSpec struct {
	// MaxSessionDuration closes a session at this age.
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('24h')",message="maxSessionDuration must be at most 24h"
	// +optional
	MaxSessionDuration *metav1.Duration `json:"maxSessionDuration,omitempty"`

	// MaxConcurrentSessions open at once for the whole VoiceAgent.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxConcurrentSessions *int32 `json:"maxConcurrentSessions,omitempty"`

	// SessionsPerMinute that may start, for the whole VoiceAgent.
	// +kubebuilder:validation:Minimum=1
	// +optional
	SessionsPerMinute *int32 `json:"sessionsPerMinute,omitempty"`

	// DrainTimeout is how long a gateway that is told to stop (a rollout, a scale-down,
	// a node drain) keeps serving the sessions in progress before it closes them with
	// 1001 "going away"; it turns not-ready at once, so no new call is routed to it.
	// The pods' terminationGracePeriodSeconds is this plus 30s. Default 10m.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('4h')",message="spec.voice.drainTimeout: at most 4h; longer calls reconnect after their gateway goes away"
	// +optional
	DrainTimeout *metav1.Duration `json:"drainTimeout,omitempty"`
}

// ModelSpec is the primary model with its fallbacks.
// +kubebuilder:validation:XValidation:rule="!has(self.fallbacks) || self.fallbacks.all(f, f.provider == self.provider || (self.provider in ['openai', 'openai-compatible'] && f.provider in ['openai', 'openai-compatible', 'anthropic']) || (self.provider == 'gemini' && f.provider in ['openai', 'openai-compatible']))",message="spec.model.fallbacks: each fallback must be the same provider as the primary, or one the gateway translates to: behind openai or openai-compatible, openai, openai-compatible or anthropic; behind gemini, openai or openai-compatible; an anthropic primary falls back to anthropic only"
type ModelSpec struct {
	ModelTarget `json:",inline"`

	// Fallbacks are tried in order when the primary fails or its circuit is open. The
	// agent speaks the primary's format; a fallback of another provider is reached by
	// translation, for text conversations: openai or openai-compatible to anthropic, and
	// gemini to openai or openai-compatible. Calls with tools, media, audio, several
	// choices or structured output skip a fallback that needs translation.
	// +kubebuilder:validation:MaxItems=5
	// +optional
	Fallbacks []ModelTarget `json:"fallbacks,omitempty"`

	// ExtraOperations open provider operations beyond the inference operations the
	// gateway allows by default (chat completions, responses, embeddings, audio and
	// realtime for OpenAI; generateContent, streamGenerateContent, countTokens,
	// embedContent and the Live API for Gemini; messages and count_tokens for
	// Anthropic). Every other use of the key (files, batches, fine-tuning, deletes) is
	// refused unless named here. Calls of an extra operation are charged from their
	// usage, or an estimate.
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	// +optional
	ExtraOperations []ModelOperation `json:"extraOperations,omitempty"`
}

// ModelOperation is one provider operation: a method and a path pattern relative to
// the model endpoint, where * stands for one path segment or part of one.
type ModelOperation struct {
	// Method of the operation.
	// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;PATCH;DELETE;OPTIONS
	Method string `json:"method"`

	// Path pattern, e.g. /models or /v1beta/models/*:countTokens.
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^(/[A-Za-z0-9._~*:@!$&'()+,=-]+)+$`
	// +kubebuilder:validation:XValidation:rule="!self.split('/').exists(s, s == '.' || s == '..')",message="path must not hold . or .. segments"
	Path string `json:"path"`
}

// ModelTarget is one provider and model with its credentials and pricing.
// +kubebuilder:validation:XValidation:rule="self.provider != 'openai-compatible' || has(self.endpoint)",message="endpoint is required when provider is openai-compatible"
type ModelTarget struct {
	// Provider of the model API.
	Provider ModelProvider `json:"provider"`

	// Name of the model, e.g. gemini-2.5-flash.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`

	// Endpoint is the provider's base URL, https only. Defaults per provider.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https://([^\s/?#:\[\]@]+|\[[0-9a-fA-F:.]+\])(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[^\s]*)?$`
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Timeout of one call to the provider.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('24h')",message="timeout must be at most 24h"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="timeout must be positive"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// Credentials hold the provider API key; only the gateway container sees it.
	Credentials CredentialSource `json:"credentials"`

	// Pricing of the model, used to count spend against spec.costLimits.
	// +optional
	Pricing *Pricing `json:"pricing,omitempty"`
}

// Pricing is the model's price in US dollars per million tokens, as decimal strings.
type Pricing struct {
	// InputPerMillionTokens, e.g. "0.30".
	// +kubebuilder:validation:Pattern=`^[0-9]{1,9}(\.[0-9]{1,9})?$`
	InputPerMillionTokens string `json:"inputPerMillionTokens"`

	// OutputPerMillionTokens, e.g. "2.50".
	// +kubebuilder:validation:Pattern=`^[0-9]{1,9}(\.[0-9]{1,9})?$`
	OutputPerMillionTokens string `json:"outputPerMillionTokens"`

	// CachedInputPerMillionTokens prices input read from a prompt cache (OpenAI
	// cached_tokens, Gemini cachedContentTokenCount, Anthropic cache_read_input_tokens),
	// e.g. "0.075". Unset: the input price. Anthropic cache writes are charged at 1.25
	// times the input price.
	// +kubebuilder:validation:Pattern=`^[0-9]{1,9}(\.[0-9]{1,9})?$`
	// +optional
	CachedInputPerMillionTokens string `json:"cachedInputPerMillionTokens,omitempty"`

	// AudioInputPerMillionTokens prices audio input tokens, e.g. "3.00". Unset: the
	// input price.
	// +kubebuilder:validation:Pattern=`^[0-9]{1,9}(\.[0-9]{1,9})?$`
	// +optional
	AudioInputPerMillionTokens string `json:"audioInputPerMillionTokens,omitempty"`

	// AudioOutputPerMillionTokens prices audio output tokens, e.g. "12.00". Unset: the
	// output price.
	// +kubebuilder:validation:Pattern=`^[0-9]{1,9}(\.[0-9]{1,9})?$`
	// +optional
	AudioOutputPerMillionTokens string `json:"audioOutputPerMillionTokens,omitempty"`
}

// IntegrationType is the kind of system an integration reaches.
// +kubebuilder:validation:Enum=rest;graphql;slack;whatsapp;email;database
type IntegrationType string

const (
	IntegrationREST     IntegrationType = "rest"
	IntegrationGraphQL  IntegrationType = "graphql"
	IntegrationSlack    IntegrationType = "slack"
	IntegrationWhatsApp IntegrationType = "whatsapp"
	IntegrationEmail    IntegrationType = "email"
	IntegrationDatabase IntegrationType = "database"
)

// Integration is one external system the agent calls.
// +kubebuilder:validation:XValidation:rule="self.type == 'database' || has(self.endpoint)",message="endpoint is required for HTTP integrations (every type but database)"
// +kubebuilder:validation:XValidation:rule="self.type != 'database' || (has(self.host) && has(self.port))",message="host and port are required for database integrations"
// +kubebuilder:validation:XValidation:rule="self.type != 'database' || !has(self.endpoint)",message="endpoint is for HTTP integrations; a database integration takes host and port"
// +kubebuilder:validation:XValidation:rule="self.type == 'database' || (!has(self.host) && !has(self.port))",message="host and port are for database integrations; an HTTP integration takes endpoint"
// +kubebuilder:validation:XValidation:rule="!has(self.host) || (isIP(self.host) && ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7'].exists(c, cidr(c).containsIP(self.host)) && !['100.100.100.200/32', 'fd00:ec2::/112'].exists(c, cidr(c).containsIP(self.host))) || self.host.lowerAscii().matches('^[^.]+[.][^.]+[.]svc([.].+)?[.]?$')",message="host: the agent pods reach a database directly, and only inside the cluster: give an in-cluster Service name (<service>.<namespace>.svc) or a private IP address (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7); a public host name or address would open a way to the internet to the agent"
type Integration struct {
	// Name is a DNS label, unique in the VoiceAgent; the agent reaches an HTTP
	// integration at /integrations/<name>/ on the gateway.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// Type of the integration. database is plain TCP: the gateway does not proxy it,
	// its credentials are mounted as files into the agent container.
	Type IntegrationType `json:"type"`

	// Endpoint is the base URL of an HTTP integration, https only.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https://([^\s/?#:\[\]@]+|\[[0-9a-fA-F:.]+\])(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[^\s]*)?$`
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Host of a database integration: an in-cluster Service name
	// (<service>.<namespace>.svc[.<cluster domain>]) or a private IP address. The agent
	// pods connect to it directly, so nothing public: a public host name would open its
	// port on every public address to them.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9]([-.a-zA-Z0-9]*[a-zA-Z0-9])?$|^[0-9a-fA-F:]+$`
	// +optional
	Host string `json:"host,omitempty"`

	// Port of a database integration.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port *int32 `json:"port,omitempty"`

	// Auth is how the gateway presents the credentials to an HTTP integration.
	// +optional
	Auth *IntegrationAuth `json:"auth,omitempty"`

	// Credentials for the integration.
	// +optional
	Credentials *CredentialSource `json:"credentials,omitempty"`

	// RateLimit for calls to this integration, for the whole VoiceAgent.
	// +optional
	RateLimit *IntegrationRateLimit `json:"rateLimit,omitempty"`

	// AllowedMethods, when set, are the only HTTP methods the agent may use on an HTTP
	// integration (for example [GET] for a read-only CRM); others are refused with 405.
	// +kubebuilder:validation:MaxItems=7
	// +listType=set
	// +optional
	AllowedMethods []HTTPMethod `json:"allowedMethods,omitempty"`

	// Pricing of a streaming integration (a WebSocket speech-to-text or text-to-speech
	// service the agent reaches at /integrations/<name>/): charged to
	// spec.costLimits as its sessions run.
	// +optional
	Pricing *IntegrationPricing `json:"pricing,omitempty"`
}

// IntegrationPricing prices an integration's sessions.
type IntegrationPricing struct {
	// PerMinute is the price in US dollars of one minute of a session, e.g. "0.0043".
	// +kubebuilder:validation:Pattern=`^[0-9]{1,9}(\.[0-9]{1,9})?$`
	PerMinute string `json:"perMinute"`
}

// HTTPMethod is a method the gateway may pass to an integration.
// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;PATCH;DELETE;OPTIONS
type HTTPMethod string

// AuthType is how a credential is presented to an HTTP integration.
// +kubebuilder:validation:Enum=bearer;header;basic
type AuthType string

const (
	AuthBearer AuthType = "bearer"
	AuthHeader AuthType = "header"
	AuthBasic  AuthType = "basic"
)

// IntegrationAuth says how the gateway authenticates to an integration.
// +kubebuilder:validation:XValidation:rule="self.type != 'header' || has(self.headerName)",message="auth.headerName is required when auth.type is header"
type IntegrationAuth struct {
	// Type: bearer (Authorization: Bearer), header (a custom header), or basic (the
	// credential holds "user:password").
	Type AuthType `json:"type"`

	// HeaderName for type header, e.g. X-Api-Key.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9-]+$`
	// +optional
	HeaderName string `json:"headerName,omitempty"`
}

// IntegrationRateLimit limits calls to one integration.
type IntegrationRateLimit struct {
	// RequestsPerMinute sustained.
	// +kubebuilder:validation:Minimum=1
	RequestsPerMinute int32 `json:"requestsPerMinute"`

	// Burst is how many requests may go at once above the sustained rate.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:default=1
	// +optional
	Burst int32 `json:"burst,omitempty"`
}

// RateLimits for the whole VoiceAgent; each replica's gateway enforces its share.
type RateLimits struct {
	// RequestsPerSecond sustained, across replicas.
	// +kubebuilder:validation:Minimum=1
	// +optional
	RequestsPerSecond *int32 `json:"requestsPerSecond,omitempty"`

	// Burst above the sustained rate, across replicas.
	// +kubebuilder:validation:Minimum=1
	// +optional
	Burst *int32 `json:"burst,omitempty"`

	// MaxConcurrentCalls to the model, across replicas.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxConcurrentCalls *int32 `json:"maxConcurrentCalls,omitempty"`

	// TokensPerMinute of model input plus output, across replicas.
	// +kubebuilder:validation:Minimum=1
	// +optional
	TokensPerMinute *int64 `json:"tokensPerMinute,omitempty"`
}

// BudgetAction is what happens when a budget is spent.
// +kubebuilder:validation:Enum=Block;AlertOnly
type BudgetAction string

const (
	BudgetBlock     BudgetAction = "Block"
	BudgetAlertOnly BudgetAction = "AlertOnly"
)

// CostLimits caps model spend, in US dollars as decimal strings.
// +kubebuilder:validation:XValidation:rule="has(self.dailyBudget) || has(self.monthlyBudget)",message="costLimits needs dailyBudget or monthlyBudget"
type CostLimits struct {
	// DailyBudget per UTC day, e.g. "50.00". Must be greater than zero.
	// +kubebuilder:validation:Pattern=`^[0-9]{1,9}(\.[0-9]{1,6})?$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^0*([.]0*)?$')",message="costLimits.dailyBudget must be greater than zero"
	// +optional
	DailyBudget string `json:"dailyBudget,omitempty"`

	// MonthlyBudget per UTC calendar month, e.g. "1000.00". Must be greater than zero.
	// +kubebuilder:validation:Pattern=`^[0-9]{1,9}(\.[0-9]{1,6})?$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^0*([.]0*)?$')",message="costLimits.monthlyBudget must be greater than zero"
	// +optional
	MonthlyBudget string `json:"monthlyBudget,omitempty"`

	// OnExceeded: Block refuses model calls once a budget is spent; AlertOnly allows
	// them and raises an alert.
	// +kubebuilder:default=Block
	// +optional
	OnExceeded BudgetAction `json:"onExceeded,omitempty"`

	// AlertAtPercent of a budget raises an alert before it is spent.
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	AlertAtPercent int32 `json:"alertAtPercent,omitempty"`
}

// CircuitBreaker settings, per upstream.
type CircuitBreaker struct {
	// FailureThreshold consecutive failures open the circuit.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	FailureThreshold int32 `json:"failureThreshold,omitempty"`

	// OpenDuration before a half-open probe is let through.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('24h')",message="openDuration must be at most 24h"
	// +optional
	OpenDuration *metav1.Duration `json:"openDuration,omitempty"`
}

// Encryption settings.
type Encryption struct {
	// InTransit asks cert-manager for a certificate; the gateway terminates TLS with it
	// on the Service's only port. Without it the Service serves plain HTTP.
	// +optional
	InTransit *InTransitEncryption `json:"inTransit,omitempty"`

	// AtRest is the AES-256-GCM key for the agent's session store, mounted read-only
	// into the agent container. Omitted: the operator generates a random key once.
	// +optional
	AtRest *AtRestEncryption `json:"atRest,omitempty"`
}

// IssuerKind is the kind of a cert-manager issuer.
// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
type IssuerKind string

// IssuerReference names a cert-manager issuer.
type IssuerReference struct {
	// Kind: Issuer (same namespace) or ClusterIssuer.
	// +kubebuilder:default=Issuer
	// +optional
	Kind IssuerKind `json:"kind,omitempty"`

	// Name of the issuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Group of the issuer.
	// +kubebuilder:default="cert-manager.io"
	// +optional
	Group string `json:"group,omitempty"`
}

// InTransitEncryption configures the Service's certificate.
type InTransitEncryption struct {
	// IssuerRef is the cert-manager issuer that signs the certificate.
	IssuerRef IssuerReference `json:"issuerRef"`

	// DNSNames of the certificate. Default: <name>.<namespace>.svc and
	// <name>.<namespace>.svc.cluster.local.
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MaxLength=253
	// +optional
	DNSNames []string `json:"dnsNames,omitempty"`

	// Duration of the certificate.
	// +kubebuilder:default="2160h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('87600h')",message="duration must be at most 87600h (10 years)"
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`

	// RenewBefore expiry.
	// +kubebuilder:default="360h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('87600h')",message="renewBefore must be at most 87600h (10 years)"
	// +optional
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`
}

// AtRestEncryption names the session-store key.
type AtRestEncryption struct {
	// KeyFrom is a 32-byte key. Omitted: the operator generates one.
	// +optional
	KeyFrom *CredentialSource `json:"keyFrom,omitempty"`
}

// NetworkSpec adds to the default-deny NetworkPolicy.
type NetworkSpec struct {
	// AllowIngressFrom are the only peers that may connect to the Service port.
	// Empty: nothing may connect.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	AllowIngressFrom []networkingv1.NetworkPolicyPeer `json:"allowIngressFrom,omitempty"`

	// AllowEgressTo are extra egress rules for the agent pods, beyond DNS, their
	// gateway and their database integrations, in the shape of a NetworkPolicy's egress
	// rules: in-cluster destinations only (pod and namespace selectors, private address
	// blocks). A rule without destinations, or an address block outside the private
	// ranges, would open the internet to the agent and is refused: declare an
	// integration instead, which the gateway reaches for it.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	AllowEgressTo []EgressRule `json:"allowEgressTo,omitempty"`
}

// EgressRule is a NetworkPolicy egress rule (networking.k8s.io/v1, the same fields)
// for the agent pods, bounded and checked at admission so that it cannot reach past the
// cluster.
// +kubebuilder:validation:XValidation:rule="has(self.to) && size(self.to) > 0",message="spec.network.allowEgressTo: a rule without 'to' allows every destination, the public internet included; name the in-cluster peers (podSelector, namespaceSelector or a private ipBlock), or declare an integration, which the gateway reaches for the agent"
type EgressRule struct {
	// Ports the rule opens; empty: every port of its destinations.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Ports []EgressPort `json:"ports,omitempty"`

	// To are the destinations, in the cluster.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	To []EgressPeer `json:"to,omitempty"`
}

// EgressPort is a NetworkPolicy port (the same fields), checked at admission.
// +kubebuilder:validation:XValidation:rule="!has(self.port) || type(self.port) == string || (self.port >= 1 && self.port <= 65535)",message="spec.network.allowEgressTo[].ports[].port: a port number must be 1 to 65535"
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || (has(self.port) && type(self.port) == int && self.endPort >= self.port)",message="spec.network.allowEgressTo[].ports[].endPort: needs a numeric port, and must not be below it"
type EgressPort struct {
	// Protocol: TCP (the default), UDP or SCTP.
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	// +optional
	Protocol *corev1.Protocol `json:"protocol,omitempty"`

	// Port number or named port; empty: every port.
	// +kubebuilder:validation:XIntOrString
	// +optional
	Port *intstr.IntOrString `json:"port,omitempty"`

	// EndPort makes Port the first of a range.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	EndPort *int32 `json:"endPort,omitempty"`
}

// EgressPeer is one in-cluster destination of an EgressRule.
// +kubebuilder:validation:XValidation:rule="has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)",message="spec.network.allowEgressTo[].to[]: set podSelector, namespaceSelector or ipBlock"
// +kubebuilder:validation:XValidation:rule="!has(self.ipBlock) || (!has(self.podSelector) && !has(self.namespaceSelector))",message="spec.network.allowEgressTo[].to[]: ipBlock cannot be combined with podSelector or namespaceSelector in one peer"
type EgressPeer struct {
	// PodSelector selects pods, in the agent's namespace unless namespaceSelector is set.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// NamespaceSelector selects namespaces.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// IPBlock is a private address range.
	// +optional
	IPBlock *EgressIPBlock `json:"ipBlock,omitempty"`
}

// EgressIPBlock is a private address range the agent pods may reach.
// +kubebuilder:validation:XValidation:rule="isCIDR(self.cidr) && ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7'].exists(c, cidr(c).containsCIDR(cidr(self.cidr)))",message="spec.network.allowEgressTo[].to[].ipBlock.cidr: only a CIDR inside the private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7) is allowed: anything wider would let the agent reach the internet or the cloud metadata address; declare an integration instead, which the gateway reaches for the agent"
// +kubebuilder:validation:XValidation:rule="!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, isCIDR(e) && cidr(self.cidr).containsCIDR(cidr(e)) && cidr(e).prefixLength() > cidr(self.cidr).prefixLength())",message="spec.network.allowEgressTo[].to[].ipBlock.except: each entry must be a CIDR strictly inside cidr"
type EgressIPBlock struct {
	// CIDR of the range, for example 10.20.0.0/16.
	// +kubebuilder:validation:MaxLength=64
	CIDR string `json:"cidr"`

	// Except are ranges inside CIDR left out.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=64
	// +optional
	Except []string `json:"except,omitempty"`
}

// AutoscalingSpec bounds and aims the agent pods' autoscaler.
// +kubebuilder:validation:XValidation:rule="self.minReplicas <= self.maxReplicas",message="spec.autoscaling: minReplicas must not exceed maxReplicas"
type AutoscalingSpec struct {
	// MinReplicas never scaled below; at least 1, so that a call can always land.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	MinReplicas int32 `json:"minReplicas,omitempty"`

	// MaxReplicas never scaled above.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxReplicas int32 `json:"maxReplicas"`

	// TargetActiveSessionsPerReplica is the number of realtime sessions in progress one
	// agent pod is meant to carry (KEDA scales to the VoiceAgent's sessions divided by
	// it). Default 10.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	TargetActiveSessionsPerReplica int32 `json:"targetActiveSessionsPerReplica,omitempty"`

	// TargetCPUUtilizationPercentage adds a CPU trigger with KEDA, and is the HPA's only
	// target without it (default 70 there).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	TargetCPUUtilizationPercentage *int32 `json:"targetCPUUtilizationPercentage,omitempty"`
}

// LimitStoreFailurePolicy decides what the gateways do while the limit store cannot be
// reached.
// +kubebuilder:validation:Enum=FailOpen;FailClosed
type LimitStoreFailurePolicy string

const (
	LimitStoreFailOpen   LimitStoreFailurePolicy = "FailOpen"
	LimitStoreFailClosed LimitStoreFailurePolicy = "FailClosed"
)

// LimitStore is the shared store the gateways keep the VoiceAgent-wide counters in.
type LimitStore struct {
	// Redis that holds the counters: requests (sustained and burst), tokens per minute,
	// concurrent calls and sessions (leases that expire), sessions per minute, and the
	// daily and monthly spend.
	Redis RedisLimitStore `json:"redis"`

	// FailurePolicy while the store cannot be reached: FailOpen falls back to each
	// gateway replica's share of the limits (the LimitStoreReady condition says so);
	// FailClosed refuses calls and sessions with 503 until the store is back.
	// +kubebuilder:default=FailOpen
	// +optional
	FailurePolicy LimitStoreFailurePolicy `json:"failurePolicy,omitempty"`
}

// RedisLimitStore is how the gateways reach the Redis that holds the limits.
// +kubebuilder:validation:XValidation:rule="!has(self.username) || has(self.credentials)",message="spec.limitStore.redis.username: an ACL user needs its password: set spec.limitStore.redis.credentials too"
type RedisLimitStore struct {
	// Address is host:port, e.g. redis.limits.svc:6379 or [fd00::10]:6379: the host an
	// in-cluster Service name (<service>.<namespace>.svc[.<cluster domain>]) or a private
	// IP address, never a cloud metadata address; no scheme (TLS is spec.limitStore.redis.tls)
	// and no user name or password (they are credentials). The gateways' NetworkPolicy
	// opens egress to it and nothing else.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=262
	// +kubebuilder:validation:XValidation:rule="!self.contains('://')",message="spec.limitStore.redis.address: give host:port without a scheme (no redis:// or rediss://): TLS is on by default, and spec.limitStore.redis.tls configures it"
	// +kubebuilder:validation:XValidation:rule="!self.contains('@')",message="spec.limitStore.redis.address: no user name or password in the address: put the ACL user in spec.limitStore.redis.username and the password in spec.limitStore.redis.credentials (secretRef or externalSecret)"
	// +kubebuilder:validation:XValidation:rule="self.contains('://') || self.contains('@') || self.matches('^([a-zA-Z0-9]([-.a-zA-Z0-9]*[a-zA-Z0-9])?|\\\\[[0-9a-fA-F:]+\\\\]):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$')",message="spec.limitStore.redis.address: must be host:port with a port from 1 to 65535, e.g. redis.limits.svc:6379, 10.0.0.5:6379 or [fd00::10]:6379"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([a-zA-Z0-9]([-.a-zA-Z0-9]*[a-zA-Z0-9])?|\\\\[[0-9a-fA-F:]+\\\\]):[0-9]+$') || (isIP(self.startsWith('[') ? self.substring(1, self.lastIndexOf(']')) : self.substring(0, self.lastIndexOf(':'))) && ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7'].exists(c, cidr(c).containsIP(self.startsWith('[') ? self.substring(1, self.lastIndexOf(']')) : self.substring(0, self.lastIndexOf(':')))) && !['100.100.100.200/32', 'fd00:ec2::/112'].exists(c, cidr(c).containsIP(self.startsWith('[') ? self.substring(1, self.lastIndexOf(']')) : self.substring(0, self.lastIndexOf(':'))))) || self.substring(0, self.lastIndexOf(':')).lowerAscii().matches('^[^.]+[.][^.]+[.]svc([.].+)?[.]?$')",message="spec.limitStore.redis.address: the limit store must be inside the cluster: give an in-cluster Service name (<service>.<namespace>.svc) or a private IP address (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), not a cloud metadata address; a public host name would open the gateways' egress to its port on every public address"
	Address string `json:"address"`

	// Username is the Redis ACL user (Redis 6+), when not the default user.
	// +optional
	Username *CredentialSource `json:"username,omitempty"`

	// Credentials hold the password (of Username, or of the default user); omitted for
	// a Redis without AUTH.
	// +optional
	Credentials *CredentialSource `json:"credentials,omitempty"`

	// TLS to Redis, on unless disabled: the server certificate is verified against the
	// system roots, or CA when set.
	// +optional
	TLS *RedisTLS `json:"tls,omitempty"`
}

// RedisTLS configures TLS to the limit store.
// +kubebuilder:validation:XValidation:rule="!has(self.disabled) || !self.disabled || (!has(self.serverName) && !has(self.ca))",message="spec.limitStore.redis.tls: serverName and ca configure TLS, which disabled: true turns off; remove them, or remove disabled"
type RedisTLS struct {
	// Disabled turns TLS off: the counters and the password then cross the pod network
	// in the clear. Only for a Redis that cannot serve TLS.
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// ServerName the server certificate must be valid for; the address' host when empty.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-zA-Z0-9]([-.a-zA-Z0-9]*[a-zA-Z0-9])?$|^[0-9a-fA-F:]+$')",message="spec.limitStore.redis.tls.serverName: a DNS name or an IP address the Redis certificate is valid for, e.g. redis.limits.svc"
	// +optional
	ServerName string `json:"serverName,omitempty"`

	// CA is a PEM bundle of the certificate authorities that sign the Redis server
	// certificate (for example the store's own CA), instead of the system roots.
	// +optional
	CA *CredentialSource `json:"ca,omitempty"`
}

// GatewaySpec sizes the gateway workload.
type GatewaySpec struct {
	// Replicas of the gateway pods. Every call and session of the agent crosses them, so
	// the default is 2: one gateway pod can be drained, evicted or rolled while the
	// other serves. Limits and budgets are shared out between the gateway replicas.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Resources of the gateway container. Defaults: requests 50m CPU and 64Mi memory,
	// limit 256Mi memory (its body buffers are bounded to fit).
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
}

// AuditFailurePolicy decides what happens when the audit trail cannot be kept.
// +kubebuilder:validation:Enum=FailClosed;FailOpen
type AuditFailurePolicy string

const (
	AuditFailClosed AuditFailurePolicy = "FailClosed"
	AuditFailOpen   AuditFailurePolicy = "FailOpen"
)

// AuditDurability decides when a call's record counts as kept.
// +kubebuilder:validation:Enum=Write;Fsync
type AuditDurability string

const (
	AuditDurabilityWrite AuditDurability = "Write"
	AuditDurabilityFsync AuditDurability = "Fsync"
)

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// AuditSpec configures the audit trail.
type AuditSpec struct {
	// SinkRefs are AuditSink objects in the same namespace that receive every record.
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=name
	// +optional
	SinkRefs []LocalObjectReference `json:"sinkRefs,omitempty"`

	// RedactPII removes e-mail addresses, phone and card numbers from recorded content.
	// +kubebuilder:default=true
	// +optional
	RedactPII *bool `json:"redactPII,omitempty"`

	// FailurePolicy: FailClosed denies calls when the audit trail cannot be kept;
	// FailOpen serves them and counts the lost records.
	// +kubebuilder:default=FailClosed
	// +optional
	FailurePolicy AuditFailurePolicy `json:"failurePolicy,omitempty"`

	// Durability: Write answers a call once its record is in the gateway's queue file,
	// which survives a crash of the gateway process, and fsyncs the queue every 10 ms;
	// Fsync answers only once the record is fsynced, which survives a crash of the node
	// too, at about 0.7 ms more per call on a typical disk.
	// +kubebuilder:default=Write
	// +optional
	Durability AuditDurability `json:"durability,omitempty"`

	// RecordContent stores redacted prompts and responses in the records too.
	// +kubebuilder:default=false
	// +optional
	RecordContent bool `json:"recordContent,omitempty"`
}

// VoiceAgentStatus is what the operator observed and enforces; auditors read it.
type VoiceAgentStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, CredentialsReady, CertificateReady, NetworkIsolated,
	// AuditReady, Available; and BudgetExceeded, AgentTrafficEncrypted, Autoscaling and
	// (with spec.limitStore) LimitStoreReady, which do not make the VoiceAgent not Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Replicas of the agent Deployment.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// ReadyReplicas of the agent Deployment.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// GatewayReplicas of the gateway Deployment.
	// +optional
	GatewayReplicas int32 `json:"gatewayReplicas,omitempty"`

	// GatewayReadyReplicas of the gateway Deployment.
	// +optional
	GatewayReadyReplicas int32 `json:"gatewayReadyReplicas,omitempty"`

	// Endpoint is the URL clients use.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Security is the evidence of what is enforced.
	// +optional
	Security *SecurityStatus `json:"security,omitempty"`

	// Spend of the whole VoiceAgent in the current UTC day and month, summed over its
	// running gateways, against its budgets. Written at most every 30s while it
	// changes, and not at all at rest.
	// +optional
	Spend *SpendStatus `json:"spend,omitempty"`
}

// SpendStatus is what the VoiceAgent's gateways have spent, as they report it.
type SpendStatus struct {
	// Today is the spend of the current UTC day in US dollars, e.g. "12.400000".
	Today string `json:"today"`
	// Month is the spend of the current UTC month in US dollars.
	Month string `json:"month"`
	// TodayTokens are the model tokens of the current UTC day counted by the gateways
	// now running (a replaced pod's tokens are not carried over; its spend is).
	TodayTokens int64 `json:"todayTokens"`
	// MonthTokens are the model tokens of the current UTC month, counted likewise.
	MonthTokens int64 `json:"monthTokens"`
	// DailyBudget is spec.costLimits.dailyBudget, when set.
	// +optional
	DailyBudget string `json:"dailyBudget,omitempty"`
	// MonthlyBudget is spec.costLimits.monthlyBudget, when set.
	// +optional
	MonthlyBudget string `json:"monthlyBudget,omitempty"`
	// Day is the UTC day Today counts, e.g. 2026-12-01.
	Day string `json:"day"`
	// ReportingGateways is how many gateway pods answered.
	ReportingGateways int32 `json:"reportingGateways"`
	// UpdatedAt is when these figures were read.
	UpdatedAt metav1.Time `json:"updatedAt"`
	// Pods are the last figures read from each gateway pod; a pod that is gone has its
	// last figures carried into CarriedTodayMicros and CarriedMonthMicros, so that a
	// rollout does not make the spend fall back.
	// +listType=map
	// +listMapKey=pod
	// +optional
	Pods []PodSpend `json:"pods,omitempty"`
	// CarriedTodayMicros is today's spend of gateway pods that are gone, in
	// micro-dollars.
	// +optional
	CarriedTodayMicros int64 `json:"carriedTodayMicros,omitempty"`
	// CarriedMonthMicros is this month's spend of gateway pods that are gone.
	// +optional
	CarriedMonthMicros int64 `json:"carriedMonthMicros,omitempty"`
}

// PodSpend is one gateway pod's spend in micro-dollars, as last read.
type PodSpend struct {
	// Pod is the gateway pod's name.
	Pod string `json:"pod"`
	// TodayMicros is its spend of the current UTC day.
	TodayMicros int64 `json:"todayMicros"`
	// MonthMicros is its spend of the current UTC month.
	MonthMicros int64 `json:"monthMicros"`
}

// SecurityStatus is evidence of the controls in force, for auditors.
type SecurityStatus struct {
	// PodSecurityLevel the rendered pods meet.
	PodSecurityLevel string `json:"podSecurityLevel"`

	// CredentialsInAgentContainer is true only when a database integration's
	// credentials are mounted into the agent (plain TCP cannot be proxied). Provider and
	// HTTP integration credentials are only ever in the gateway pods.
	CredentialsInAgentContainer bool `json:"credentialsInAgentContainer"`

	// AgentEgress is where the agent pods may connect: gatewayOnly (DNS and their
	// gateway), or gatewayAndInCluster (also the in-cluster destinations the spec
	// declares: database integrations, spec.network.allowEgressTo). Never the internet:
	// only the gateway pods have egress beyond the cluster.
	// +optional
	AgentEgress string `json:"agentEgress,omitempty"`

	// AgentToGateway says whether the agent's calls to its gateway are encrypted: tls
	// (a cert-manager certificate, the CA mounted into the agent pods) or plaintext
	// (cert-manager is not installed).
	// +optional
	AgentToGateway string `json:"agentToGateway,omitempty"`

	// AgentTokenSecretName holds the token the gateway requires of the agent.
	// +optional
	AgentTokenSecretName string `json:"agentTokenSecretName,omitempty"`

	// EgressEnforcement: cidr (NetworkPolicy) or fqdn (CiliumNetworkPolicy too).
	EgressEnforcement string `json:"egressEnforcement"`

	// EgressAllowed lists the destinations the gateway pods may reach.
	// +optional
	EgressAllowed []string `json:"egressAllowed,omitempty"`

	// TLSSecretName holds the Service's certificate.
	// +optional
	TLSSecretName string `json:"tlsSecretName,omitempty"`

	// CertificateNotAfter is when the current certificate expires.
	// +optional
	CertificateNotAfter *metav1.Time `json:"certificateNotAfter,omitempty"`

	// AuditSinks the gateway writes to.
	// +optional
	AuditSinks []string `json:"auditSinks,omitempty"`
}

// VoiceAgent runs one LLM voice agent with its gateway pods, network isolation,
// TLS, external credentials and audit trail.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=va,categories=voice
// +kubebuilder:validation:XValidation:rule="!has(self.spec.encryption) || !has(self.spec.encryption.inTransit) || !has(self.spec.port) || (self.spec.port != 8443 && self.spec.port != 15020)",message="spec.port: 8443 and 15020 are the ports of the inbound TLS role in the agent's pod when spec.encryption.inTransit is set; choose another"
// +kubebuilder:validation:XValidation:rule="!['-gateway', '-gateway-ca', '-gateway-selfsigned', '-gateway-tls', '-agent-token'].exists(s, self.metadata.name.endsWith(s))",message="metadata.name must not end in -gateway, -gateway-ca, -gateway-selfsigned, -gateway-tls or -agent-token: those name another VoiceAgent's gateway children"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.autoscaling) || !has(self.spec.replicas)",message="spec.replicas and spec.autoscaling: set one, not both: while autoscaling is on, the autoscaler owns the agent pods' replica count (remove spec.replicas)"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 40 characters starting with a letter: it names the Service and the other children"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.model.name`
// +kubebuilder:printcolumn:name="Replicas",type=string,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Spent",type=string,JSONPath=`.status.spend.today`
// +kubebuilder:printcolumn:name="Budget",type=string,JSONPath=`.spec.costLimits.dailyBudget`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VoiceAgent struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VoiceAgentSpec   `json:"spec,omitempty"`
	Status VoiceAgentStatus `json:"status,omitempty"`
}

// VoiceAgentList is a list of VoiceAgents.
// +kubebuilder:object:root=true
type VoiceAgentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VoiceAgent `json:"items"`
}
