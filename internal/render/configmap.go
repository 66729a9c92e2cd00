package render

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// DefaultEndpoints are the providers' public API base URLs.
var DefaultEndpoints = map[v1alpha1.ModelProvider]string{
	v1alpha1.ProviderGemini:    "https://generativelanguage.googleapis.com",
	v1alpha1.ProviderOpenAI:    "https://api.openai.com/v1",
	v1alpha1.ProviderAnthropic: "https://api.anthropic.com",
}

// ModelEndpoint is the model's endpoint, defaulted per provider.
func ModelEndpoint(m v1alpha1.ModelTarget) string {
	if m.Endpoint != "" {
		return m.Endpoint
	}
	return DefaultEndpoints[m.Provider]
}

func durationOr(d *metav1.Duration, def time.Duration) gw.Duration {
	if d == nil {
		return gw.Duration{Duration: def}
	}
	return gw.Duration{Duration: d.Duration}
}

// GatewayConfig renders va's gateway configuration, giving each gateway replica its
// share of the VoiceAgent-wide limits and budgets (with spec.limitStore, the whole
// VoiceAgent's limits go to the store, and the shares are the FailOpen fallback). tls:
// the proxy port serves the certificate cert-manager issues for the gateway Service.
func GatewayConfig(va *v1alpha1.VoiceAgent, sinks []v1alpha1.AuditSink, creds []Credential, tls bool) (*gw.Config, error) {
	replicas := GatewayReplicas(va)
	files := map[string]string{}
	for _, c := range creds {
		files[c.Slot] = c.File()
	}
	cfg := gatewayBase(va, replicas, tls)
	models, err := gatewayModels(va, files)
	if err != nil {
		return nil, err
	}
	cfg.Models = models
	cfg.Integrations = gatewayIntegrations(va, files, replicas)
	cfg.Limits = limitShares(va.Spec.RateLimits, replicas)
	cfg.Voice = voiceShares(va, replicas)
	if cfg.Budget, err = budgetShares(va.Spec.CostLimits, replicas); err != nil {
		return nil, err
	}
	cfg.LimitStore = limitStoreConfig(va, files)
	cfg.Breaker = gatewayBreaker(va.Spec.CircuitBreaker)
	cfg.Audit = gatewayAudit(va.Spec.Audit, sinks, files)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// gatewayBase is the configuration's identity, listeners and agent authentication.
func gatewayBase(va *v1alpha1.VoiceAgent, replicas int32, tls bool) *gw.Config {
	cfg := &gw.Config{
		Version:    gw.ContentsVersion,
		VoiceAgent: va.Name,
		Namespace:  va.Namespace,
		Replicas:   replicas,
		Generation: va.Generation,
		// Sorted by name, not by time: the file changes only when the set of spec
		// owners does, not each time one of them touches a label.
		SpecManagers: sortedCopy(SpecManagers(va.ManagedFields)),
		// The agent pods call over the pod network: the proxy listens on every address,
		// and only a call with the agent token is served.
		Listen: gw.Listen{
			Proxy: net.JoinHostPort("", strconv.Itoa(gw.ProxyPort)),
			Admin: net.JoinHostPort("", strconv.Itoa(gw.AdminPort)),
		},
		// The previous token stays accepted while the agent pods that hold it drain.
		AgentAuth: &gw.AgentAuth{TokenFile: gw.AgentTokenFile, NextTokenFile: gw.AgentNextToken,
			PreviousTokenGrace: gw.Duration{Duration: DrainTimeout(va) + time.Minute}},
		StateDir: gw.StateDir,
	}
	if tls {
		cfg.Listen.ProxyTLS = &gw.TLSFiles{CertFile: gw.ProxyTLSDir + "/tls.crt", KeyFile: gw.ProxyTLSDir + "/tls.key"}
	}
	return cfg
}

// gatewayModels are the primary model (with the operations the VoiceAgent opens) and
// its fallbacks, in order.
func gatewayModels(va *v1alpha1.VoiceAgent, files map[string]string) ([]gw.Model, error) {
	model := func(m v1alpha1.ModelTarget, slot string) gw.Model {
		out := gw.Model{
			Provider: string(m.Provider), Name: m.Name, Endpoint: ModelEndpoint(m),
			Timeout: durationOr(m.Timeout, 30*time.Second), CredentialFile: files[slot],
		}
		if p := m.Pricing; p != nil {
			out.Pricing = &gw.Pricing{InputPerMillionTokens: p.InputPerMillionTokens, OutputPerMillionTokens: p.OutputPerMillionTokens,
				CachedInputPerMillionTokens: p.CachedInputPerMillionTokens, AudioInputPerMillionTokens: p.AudioInputPerMillionTokens,
				AudioOutputPerMillionTokens: p.AudioOutputPerMillionTokens}
		}
		return out
	}
	// The CRD's duration pattern admits "0s", which the gateway refuses.
	for i, m := range append([]v1alpha1.ModelTarget{va.Spec.Model.ModelTarget}, va.Spec.Model.Fallbacks...) {
		if m.Timeout != nil && m.Timeout.Duration <= 0 {
			field := "spec.model.timeout"
			if i > 0 {
				field = fmt.Sprintf("spec.model.fallbacks[%d].timeout", i-1)
			}
			return nil, fmt.Errorf("%s: %s must be positive", field, m.Timeout.Duration)
		}
	}
	primary := model(va.Spec.Model.ModelTarget, "model")
	for _, op := range va.Spec.Model.ExtraOperations {
		primary.ExtraOperations = append(primary.ExtraOperations, gw.Operation{Method: op.Method, Path: op.Path})
	}
	models := []gw.Model{primary}
	for i, fb := range va.Spec.Model.Fallbacks {
		models = append(models, model(fb, fallbackSlot(i)))
	}
	return models, nil
}

// gatewayIntegrations are the HTTP and streaming integrations the gateway proxies
// (databases are reached directly), with each replica's share of their rate limits.
func gatewayIntegrations(va *v1alpha1.VoiceAgent, files map[string]string, replicas int32) []gw.HTTPIntegration {
	var out []gw.HTTPIntegration
	for _, in := range va.Spec.Integrations {
		if in.Type == v1alpha1.IntegrationDatabase {
			continue
		}
		hi := gw.HTTPIntegration{Name: in.Name, Type: string(in.Type), Endpoint: in.Endpoint, CredentialFile: files[integrationSlot(in)]}
		if in.Auth != nil {
			hi.AuthType, hi.HeaderName = string(in.Auth.Type), in.Auth.HeaderName
		}
		if in.Pricing != nil {
			hi.PerMinute = in.Pricing.PerMinute
		}
		for _, m := range in.AllowedMethods {
			hi.AllowedMethods = append(hi.AllowedMethods, string(m))
		}
		if rl := in.RateLimit; rl != nil {
			hi.RequestsPerMinute = float64(rl.RequestsPerMinute) / float64(replicas)
			hi.Burst = shareInt(rl.Burst, replicas)
		}
		out = append(out, hi)
	}
	return out
}

// limitShares is one replica's share of spec.rateLimits.
func limitShares(rl *v1alpha1.RateLimits, replicas int32) gw.Limits {
	var l gw.Limits
	if rl == nil {
		return l
	}
	if rl.RequestsPerSecond != nil {
		l.RequestsPerSecond = float64(*rl.RequestsPerSecond) / float64(replicas)
	}
	if rl.Burst != nil {
		l.Burst = shareInt(*rl.Burst, replicas)
	}
	if rl.MaxConcurrentCalls != nil {
		l.MaxConcurrentCalls = shareInt(*rl.MaxConcurrentCalls, replicas)
	}
	if rl.TokensPerMinute != nil {
		l.TokensPerMinute = float64(*rl.TokensPerMinute) / float64(replicas)
	}
	return l
}

// voiceShares is one replica's share of spec.voice's session limits, with the
// session caps and the drain timeout as they are.
func voiceShares(va *v1alpha1.VoiceAgent, replicas int32) gw.Voice {
	out := gw.Voice{DrainTimeout: gw.Duration{Duration: DrainTimeout(va)}}
	v := va.Spec.Voice
	if v == nil {
		return out
	}
	if v.MaxSessionDuration != nil {
		out.MaxSessionDuration = gw.Duration{Duration: v.MaxSessionDuration.Duration}
	}
	if v.MaxConcurrentSessions != nil {
		out.MaxConcurrentSessions = shareInt(*v.MaxConcurrentSessions, replicas)
	}
	if v.SessionsPerMinute != nil {
		out.SessionsPerMinute = float64(*v.SessionsPerMinute) / float64(replicas)
	}
	return out
}

// budgetShares is one replica's share of spec.costLimits, nil without it.
func budgetShares(cl *v1alpha1.CostLimits, replicas int32) (*gw.Budget, error) {
	if cl == nil {
		return nil, nil
	}
	b := &gw.Budget{OnExceeded: string(cl.OnExceeded), AlertAtPercent: int(cl.AlertAtPercent)}
	if b.OnExceeded == "" {
		b.OnExceeded = string(v1alpha1.BudgetBlock)
	}
	if b.AlertAtPercent == 0 {
		b.AlertAtPercent = 80
	}
	var err error
	if cl.DailyBudget != "" {
		if b.Daily, err = shareBudget(cl.DailyBudget, replicas); err != nil {
			return nil, fmt.Errorf("spec.costLimits.dailyBudget: %w", err)
		}
	}
	if cl.MonthlyBudget != "" {
		if b.Monthly, err = shareBudget(cl.MonthlyBudget, replicas); err != nil {
			return nil, fmt.Errorf("spec.costLimits.monthlyBudget: %w", err)
		}
	}
	return b, nil
}

// gatewayBreaker is spec.circuitBreaker with its defaults.
func gatewayBreaker(cb *v1alpha1.CircuitBreaker) gw.Breaker {
	out := gw.Breaker{FailureThreshold: 5, OpenDuration: gw.Duration{Duration: 30 * time.Second}}
	if cb != nil {
		if cb.FailureThreshold > 0 {
			out.FailureThreshold = int(cb.FailureThreshold)
		}
		out.OpenDuration = durationOr(cb.OpenDuration, 30*time.Second)
	}
	return out
}

// gatewayAudit is spec.audit with its defaults and the sinks' delivery settings.
func gatewayAudit(a *v1alpha1.AuditSpec, sinks []v1alpha1.AuditSink, files map[string]string) gw.Audit {
	out := gw.Audit{RedactPII: true, FailurePolicy: string(v1alpha1.AuditFailClosed), QueueDir: gw.StateDir + "/audit"}
	if a != nil {
		if a.RedactPII != nil {
			out.RedactPII = *a.RedactPII
		}
		if a.FailurePolicy != "" {
			out.FailurePolicy = string(a.FailurePolicy)
		}
		if a.Durability != "" {
			out.Durability = string(a.Durability)
		}
		out.RecordContent = a.RecordContent
	}
	for _, s := range sinks {
		sink := gw.Sink{Name: s.Name, Type: string(s.Spec.Type)}
		if s.Spec.Webhook != nil {
			sink.URL = s.Spec.Webhook.URL
			sink.BearerTokenFile = files["sink-"+s.Name+"-bearer-token"]
			sink.SigningKeyFile = files["sink-"+s.Name+"-signing-key"]
		}
		if s.Spec.Syslog != nil {
			sink.Address = s.Spec.Syslog.Address
		}
		out.Sinks = append(out.Sinks, sink)
		// The chain's checkpoints are signed with the first sink's HMAC key, so that
		// whoever holds that sink's key can tell a rewritten stream from the real one
		// (voiceagent-operator audit verify --hmac-key-file).
		if out.CheckpointKeyFile == "" && sink.SigningKeyFile != "" {
			out.CheckpointKeyFile = sink.SigningKeyFile
			out.CheckpointKeyType = "HMAC-SHA256"
		}
	}
	return out
}

// shareBudget is one replica's share of a budget. A budget too small to give each
// replica a micro-dollar is refused, naming the field, rather than rendered as a zero
// budget the gateway would refuse to load.
func shareBudget(total string, replicas int32) (string, error) {
	share, err := gw.Share(total, replicas)
	if err != nil {
		return "", err
	}
	if m, err := budget.ParseMicros(share); err != nil || m <= 0 {
		return "", fmt.Errorf("%q shared between %d gateway replicas is less than 0.000001 each, the smallest amount a gateway counts: raise it or lower spec.gateway.replicas", total, replicas)
	}
	return share, nil
}

// shareInt is one replica's share of a whole-VoiceAgent count, rounded down so that
// the shares never exceed the total, but at least 1 so that a replica can serve.
func shareInt(total, replicas int32) int {
	n := int(total / replicas)
	if n < 1 {
		return 1
	}
	return n
}

// ConfigMap holds the gateway configuration. It carries no secret: credentials are
// named by file path only.
func ConfigMap(va *v1alpha1.VoiceAgent, cfg *gw.Config) (*corev1.ConfigMap, error) {
	data, err := cfg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(va, ConfigMapName(va)),
		Data:       map[string]string{gw.FileName: string(data)},
	}, nil
}

func sortedCopy(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}
