// Package gatewayconfig is the contract between the operator, which renders a
// VoiceAgent's gateway configuration into a ConfigMap, and the gateway, which reads it
// from the mounted file and reloads it when it changes. It holds no secret: credentials
// (and the agent token) are referred to by file path only.
package gatewayconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"path"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
)

// FileName is the key of the gateway configuration in its ConfigMap and the file name
// under MountDir.
const FileName = "gateway.json"

// Well-known ports and paths shared by the rendered pod and the gateway.
const (
	MountDir        = "/etc/voiceagent/gateway"
	CredentialsDir  = "/var/run/voiceagent/credentials"
	TLSDir          = "/var/run/voiceagent/tls"
	StateDir        = "/var/lib/voiceagent"
	ProxyPort       = 15001 // the agent's way out: loopback, or the pod network behind agentAuth
	TLSPort         = 8443  // the Service's only port when TLS is on
	AdminPort       = 15020 // health, readiness and metrics
	CredentialFile  = "value"
	ContentsVersion = 1

	AgentTokenDir  = "/var/run/voiceagent/agent-token"
	AgentTokenFile = AgentTokenDir + "/token"         // file the agent and the gateway both mount
	AgentNextToken = AgentTokenDir + "/next"          // in the gateway pods only: a rotation's announced token
	ProxyTLSDir    = "/var/run/voiceagent/proxy-tls"  // gateway's serving cert for the proxy port (tls.crt, tls.key)
	GatewayCADir   = "/var/run/voiceagent/gateway-ca" // in the agent pods: ca.crt that signs the gateway's cert
	GatewayCAFile  = GatewayCADir + "/ca.crt"
)

// Config is one gateway's configuration. Limits and budgets are already this replica's
// share of the VoiceAgent's totals.
type Config struct {
	Version    int    `json:"version"`
	VoiceAgent string `json:"voiceAgent"`
	Namespace  string `json:"namespace"`
	Replicas   int32  `json:"replicas"`
	// Generation of the VoiceAgent this configuration was rendered from, and the field
	// managers that own its spec: the gateway records every configuration it puts in
	// force in the audit trail, so that changes to the controls reach the sinks too.
	Generation   int64    `json:"generation,omitempty"`
	SpecManagers []string `json:"specManagers,omitempty"`

	Listen       Listen            `json:"listen"`
	AgentAuth    *AgentAuth        `json:"agentAuth,omitempty"`
	Inbound      *Inbound          `json:"inbound,omitempty"`
	Models       []Model           `json:"models"`
	Integrations []HTTPIntegration `json:"integrations,omitempty"`
	Limits       Limits            `json:"limits"`
	Budget       *Budget           `json:"budget,omitempty"`
	Voice        Voice             `json:"voice,omitzero"`
	Breaker      Breaker           `json:"circuitBreaker"`
	Audit        Audit             `json:"audit"`
	StateDir     string            `json:"stateDir"`
	// LimitStore, when set, enforces the whole VoiceAgent's limits in a shared store;
	// Limits, Voice and Budget above stay this replica's share, in force only while the
	// store cannot be reached under FailurePolicy FailOpen.
	LimitStore *LimitStore `json:"limitStore,omitempty"`
}

// Failure policies of a limit store.
const (
	LimitStoreFailOpen   = "FailOpen"   // fall back to this replica's shares
	LimitStoreFailClosed = "FailClosed" // refuse calls with 503 until the store is back
)

// LimitStore is a shared store (Redis) that holds the VoiceAgent-wide counters, so
// that every gateway replica enforces the same limits exactly.
type LimitStore struct {
	Redis         RedisStore `json:"redis"`
	FailurePolicy string     `json:"failurePolicy"`
	// KeyPrefix scopes this VoiceAgent's keys; it carries a Redis Cluster hash tag so
	// that one script sees all of them.
	KeyPrefix string `json:"keyPrefix"`
	// Global are the whole VoiceAgent's limits, not a replica's share.
	Global GlobalLimits `json:"global"`
}

// RedisStore is how a gateway reaches the Redis that holds the limits.
type RedisStore struct {
	Address string `json:"address"` // host:port
	// UsernameFile and PasswordFile are mounted credential files (ACL user and
	// password, or the password alone); re-read on every new connection.
	UsernameFile string `json:"usernameFile,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
	// TLS is on unless Disabled; CAFile (PEM) replaces the system roots.
	TLS RedisTLS `json:"tls"`
	// Timeout bounds one round trip; zero means 250ms.
	Timeout Duration `json:"timeout,omitzero"`
}

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	Disabled   bool   `json:"disabled,omitempty"`
	ServerName string `json:"serverName,omitempty"`
	CAFile     string `json:"caFile,omitempty"`
}

// GlobalLimits are the VoiceAgent's totals, enforced in the store; zero means
// unlimited. Budgets are decimal US dollars like Budget's.
type GlobalLimits struct {
	RequestsPerSecond     float64 `json:"requestsPerSecond,omitempty"`
	Burst                 int     `json:"burst,omitempty"`
	TokensPerMinute       float64 `json:"tokensPerMinute,omitempty"`
	MaxConcurrentCalls    int     `json:"maxConcurrentCalls,omitempty"`
	MaxConcurrentSessions int     `json:"maxConcurrentSessions,omitempty"`
	SessionsPerMinute     float64 `json:"sessionsPerMinute,omitempty"`
	Daily                 string  `json:"daily,omitempty"`
	Monthly               string  `json:"monthly,omitempty"`
}

// Listen holds the gateway's listen addresses.
type Listen struct {
	Proxy string `json:"proxy"` // loopback, or any address when AgentAuth is set (e.g. ":15001")
	Admin string `json:"admin"`
	// ProxyTLS serves the proxy port over TLS with cert-manager's Secret (re-read when it changes).
	ProxyTLS *TLSFiles `json:"proxyTLS,omitempty"`
}

// TLSFiles are a mounted certificate and its key, PEM-encoded.
type TLSFiles struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
}

// AgentAuth makes the proxy accept only calls that carry the agent token: with it, the
// proxy may listen on the pod network.
type AgentAuth struct {
	TokenFile string `json:"tokenFile"`
	// NextTokenFile, when it exists and is not empty, holds a token announced by a
	// rotation in progress: accepted too, so that the gateways know it before any
	// agent pod uses it.
	NextTokenFile string `json:"nextTokenFile,omitempty"`
	// PreviousTokenGrace is how long a token that was replaced in the file stays accepted, for agent pods whose copy of the Secret the kubelet has not refreshed yet; zero means 2m.
	PreviousTokenGrace Duration `json:"previousTokenGrace,omitzero"`
}

// Inbound is TLS termination in front of the agent.
type Inbound struct {
	Listen   string `json:"listen"`
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	Upstream string `json:"upstream"` // the agent on loopback
}

// Model is one model upstream; the first is the primary, the rest fallbacks in order.
type Model struct {
	Provider       string   `json:"provider"`
	Name           string   `json:"name"`
	Endpoint       string   `json:"endpoint"`
	Timeout        Duration `json:"timeout"`
	CredentialFile string   `json:"credentialFile"`
	Pricing        *Pricing `json:"pricing,omitempty"`
	// ExtraOperations are provider operations the VoiceAgent opens beyond the
	// inference operations the gateway allows by default.
	ExtraOperations []Operation `json:"extraOperations,omitempty"`
}

// Operation is one method and path pattern (path.Match syntax, relative to the
// endpoint).
type Operation struct {
	Method string `json:"method"`
	Path   string `json:"path"`
}

// Pricing in US dollars per million tokens, as decimal strings. Cached input is priced
// at CachedInputPerMillionTokens when set, else at the input price; audio at its own
// prices when set, else at the text prices.
type Pricing struct {
	InputPerMillionTokens       string `json:"inputPerMillionTokens"`
	OutputPerMillionTokens      string `json:"outputPerMillionTokens"`
	CachedInputPerMillionTokens string `json:"cachedInputPerMillionTokens,omitempty"`
	AudioInputPerMillionTokens  string `json:"audioInputPerMillionTokens,omitempty"`
	AudioOutputPerMillionTokens string `json:"audioOutputPerMillionTokens,omitempty"`
}

// HTTPIntegration is one proxied integration.
type HTTPIntegration struct {
	Name              string  `json:"name"`
	Type              string  `json:"type"`
	Endpoint          string  `json:"endpoint"`
	AuthType          string  `json:"authType,omitempty"`
	HeaderName        string  `json:"headerName,omitempty"`
	CredentialFile    string  `json:"credentialFile,omitempty"`
	RequestsPerMinute float64 `json:"requestsPerMinute,omitempty"`
	Burst             int     `json:"burst,omitempty"`
	// AllowedMethods, when set, are the only HTTP methods the agent may use.
	AllowedMethods []string `json:"allowedMethods,omitempty"`
	// PerMinute is the price in US dollars of a minute of a WebSocket session (a
	// streaming speech service), charged to the budget while the session runs.
	PerMinute string `json:"perMinute,omitempty"`
}

// Limits are this replica's share; zero means unlimited.
type Limits struct {
	RequestsPerSecond  float64 `json:"requestsPerSecond,omitempty"`
	Burst              int     `json:"burst,omitempty"`
	MaxConcurrentCalls int     `json:"maxConcurrentCalls,omitempty"`
	TokensPerMinute    float64 `json:"tokensPerMinute,omitempty"`
}

// Voice limits realtime sessions; counts are this replica's share, zero means
// unlimited (MaxSessionDuration zero: one hour).
type Voice struct {
	MaxSessionDuration    Duration `json:"maxSessionDuration,omitzero"`
	MaxConcurrentSessions int      `json:"maxConcurrentSessions,omitempty"`
	SessionsPerMinute     float64  `json:"sessionsPerMinute,omitempty"`
	// DrainTimeout is how long sessions in progress may run on after SIGTERM.
	DrainTimeout Duration `json:"drainTimeout,omitzero"`
}

// Budget is this replica's share of spend, in US dollars as decimal strings.
type Budget struct {
	Daily          string `json:"daily,omitempty"`
	Monthly        string `json:"monthly,omitempty"`
	OnExceeded     string `json:"onExceeded"`
	AlertAtPercent int    `json:"alertAtPercent"`
	// Carried is this replica's share of what gateway pods that are gone spent in the
	// current UTC day and month (the operator reads it from the VoiceAgent's
	// status.spend): it counts against this replica's budgets as if spent here, so that
	// a replaced pod does not start the day's budget again from zero.
	Carried *CarriedSpend `json:"carried,omitempty"`
}

// CarriedSpend is spend carried over from gateway pods that are gone, in
// micro-dollars, for the UTC day and month it belongs to; it counts only in them.
type CarriedSpend struct {
	Day         string `json:"day,omitempty"` // 2006-01-02
	DailyMicros int64  `json:"dailyMicros,omitempty"`
	Month       string `json:"month,omitempty"` // 2006-01
	MonthMicros int64  `json:"monthlyMicros,omitempty"`
}

// Breaker is the per-upstream circuit breaker.
type Breaker struct {
	FailureThreshold int      `json:"failureThreshold"`
	OpenDuration     Duration `json:"openDuration"`
}

// Audit durability modes.
const (
	AuditDurabilityWrite = "Write"
	AuditDurabilityFsync = "Fsync"
)

// Audit configures the audit trail.
type Audit struct {
	RedactPII     bool   `json:"redactPII"`
	FailurePolicy string `json:"failurePolicy"`
	RecordContent bool   `json:"recordContent"`
	QueueDir      string `json:"queueDir"`
	Sinks         []Sink `json:"sinks,omitempty"`

	// CheckpointKeyFile signs the chain's checkpoints; CheckpointKeyType is
	// HMAC-SHA256 (the default) or Ed25519. Without a key, checkpoints are unsigned.
	CheckpointKeyFile string `json:"checkpointKeyFile,omitempty"`
	CheckpointKeyType string `json:"checkpointKeyType,omitempty"`
	// Durability: "Write" (the default) answers a call once its record is written to
	// the on-disk queue and fsyncs every 10ms in the background; "Fsync" answers only
	// after the record is fsynced. See internal/audit Options.SyncInterval.
	Durability string `json:"durability,omitempty"`
	// CheckpointEvery (records) and CheckpointInterval; zero means the defaults
	// (1000 records, 30s).
	CheckpointEvery    int      `json:"checkpointEvery,omitempty"`
	CheckpointInterval Duration `json:"checkpointInterval,omitzero"`
	// MaxQueueBytes and MaxQueueRecords bound the undelivered backlog; zero means the
	// defaults (256 MiB, 1,000,000 records).
	MaxQueueBytes   int64 `json:"maxQueueBytes,omitempty"`
	MaxQueueRecords int   `json:"maxQueueRecords,omitempty"`
}

// Sink is one audit destination.
type Sink struct {
	Name            string `json:"name"`
	Type            string `json:"type"`
	URL             string `json:"url,omitempty"`
	Address         string `json:"address,omitempty"`
	BearerTokenFile string `json:"bearerTokenFile,omitempty"`
	SigningKeyFile  string `json:"signingKeyFile,omitempty"`
	// CAFile is trusted in addition to the system roots (a private SIEM CA).
	CAFile string `json:"caFile,omitempty"`
}

// ShutdownReport is the gateway's termination message (the kubelet's
// terminationMessagePath): what it could not deliver before it exited. The operator
// reads it from the pod's status.
type ShutdownReport struct {
	// AuditRecordsLost counts, per sink, the records still undelivered at exit.
	AuditRecordsLost map[string]uint64 `json:"auditRecordsLost"`
}

// Duration is a time.Duration written as a Go duration string ("30s"): the API's own
// metav1.Duration, so that the configuration reads its durations as the CRD does.
type Duration = metav1.Duration

// Parse decodes and validates a configuration file's contents. Unknown fields are
// errors, so that a gateway older than its operator fails loudly rather than ignoring
// a control.
func Parse(data []byte) (*Config, error) {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Marshal encodes the configuration deterministically.
func (c *Config) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Validate checks what the gateway relies on; every error names the field.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Version != ContentsVersion {
		add("version: %d is not supported (want %d)", c.Version, ContentsVersion)
	}
	if host, _, err := net.SplitHostPort(c.Listen.Proxy); err != nil {
		add("listen.proxy: %q is not a host:port address", c.Listen.Proxy)
	} else if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && c.AgentAuth == nil {
		add("listen.proxy %s is not loopback: set agentAuth.tokenFile so that only the agent can call it", c.Listen.Proxy)
	}
	if a := c.AgentAuth; a != nil {
		if a.TokenFile == "" {
			add("agentAuth.tokenFile: required")
		}
		if a.PreviousTokenGrace.Duration < 0 {
			add("agentAuth.previousTokenGrace: must not be negative")
		}
	}
	if t := c.Listen.ProxyTLS; t != nil && (t.CertFile == "" || t.KeyFile == "") {
		add("listen.proxyTLS: certFile and keyFile are both required")
	}
	if len(c.Models) == 0 {
		add("models: at least one model is required")
	}
	for i, m := range c.Models {
		if err := httpsURL(m.Endpoint); err != nil {
			add("models[%d].endpoint: %v", i, err)
		}
		if m.CredentialFile == "" {
			add("models[%d].credentialFile: required", i)
		}
		if m.Timeout.Duration <= 0 {
			add("models[%d].timeout: must be positive", i)
		}
		if m.Pricing != nil {
			for name, v := range map[string]string{"inputPerMillionTokens": m.Pricing.InputPerMillionTokens, "outputPerMillionTokens": m.Pricing.OutputPerMillionTokens,
				"cachedInputPerMillionTokens": m.Pricing.CachedInputPerMillionTokens, "audioInputPerMillionTokens": m.Pricing.AudioInputPerMillionTokens,
				"audioOutputPerMillionTokens": m.Pricing.AudioOutputPerMillionTokens} {
				if v == "" && name != "inputPerMillionTokens" && name != "outputPerMillionTokens" {
					continue
				}
				if _, err := budget.ParseMicros(v); err != nil {
					add("models[%d].pricing.%s: %v", i, name, err)
				}
			}
		}
		for j, op := range m.ExtraOperations {
			if err := ValidateOperation(op); err != nil {
				add("models[%d].extraOperations[%d]: %v", i, j, err)
			}
		}
	}
	seen := map[string]bool{}
	for i, in := range c.Integrations {
		if seen[in.Name] {
			add("integrations[%d].name: %q is duplicated", i, in.Name)
		}
		seen[in.Name] = true
		if err := httpsURL(in.Endpoint); err != nil {
			add("integrations[%d].endpoint: %v", i, err)
		}
		if in.AuthType == "header" && in.HeaderName == "" {
			add("integrations[%d].headerName: required for authType header", i)
		}
		if in.PerMinute != "" {
			if _, err := budget.ParseMicros(in.PerMinute); err != nil {
				add("integrations[%d].perMinute: %v", i, err)
			}
		}
		for j, m := range in.AllowedMethods {
			if !validMethods[m] {
				add("integrations[%d].allowedMethods[%d]: %q must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", i, j, m)
			}
		}
	}
	if c.Voice.DrainTimeout.Duration < 0 || c.Voice.MaxSessionDuration.Duration < 0 || c.Voice.MaxConcurrentSessions < 0 || c.Voice.SessionsPerMinute < 0 {
		add("voice: values must not be negative")
	}
	if c.Limits.RequestsPerSecond < 0 || c.Limits.Burst < 0 || c.Limits.MaxConcurrentCalls < 0 || c.Limits.TokensPerMinute < 0 {
		add("limits: values must not be negative")
	}
	if c.Budget != nil {
		for name, v := range map[string]string{"daily": c.Budget.Daily, "monthly": c.Budget.Monthly} {
			if v == "" {
				continue
			}
			if m, err := budget.ParseMicros(v); err != nil || m <= 0 {
				add("budget.%s: %q must be a positive decimal with at most 6 decimals", name, v)
			}
		}
		if c.Budget.OnExceeded != "Block" && c.Budget.OnExceeded != "AlertOnly" {
			add("budget.onExceeded: %q must be Block or AlertOnly", c.Budget.OnExceeded)
		}
		if cs := c.Budget.Carried; cs != nil && (cs.DailyMicros < 0 || cs.MonthMicros < 0) {
			add("budget.carried: values must not be negative")
		}
	}
	if c.Breaker.FailureThreshold < 1 {
		add("circuitBreaker.failureThreshold: must be at least 1")
	}
	if c.Audit.FailurePolicy != "FailClosed" && c.Audit.FailurePolicy != "FailOpen" {
		add("audit.failurePolicy: %q must be FailClosed or FailOpen", c.Audit.FailurePolicy)
	}
	switch c.Audit.Durability {
	case "", AuditDurabilityWrite, AuditDurabilityFsync:
	default:
		add("audit.durability: %q must be Write or Fsync", c.Audit.Durability)
	}
	switch c.Audit.CheckpointKeyType {
	case "", "HMAC-SHA256", "Ed25519":
	default:
		add("audit.checkpointKeyType: %q must be HMAC-SHA256 or Ed25519", c.Audit.CheckpointKeyType)
	}
	if c.Audit.CheckpointEvery < 0 || c.Audit.CheckpointInterval.Duration < 0 || c.Audit.MaxQueueBytes < 0 || c.Audit.MaxQueueRecords < 0 {
		add("audit: checkpoint and queue bounds must not be negative")
	}
	if ls := c.LimitStore; ls != nil {
		errs = append(errs, ls.validate()...)
	}
	sinks := map[string]bool{}
	for i, s := range c.Audit.Sinks {
		if s.Name == "" || sinks[s.Name] {
			add("audit.sinks[%d].name: %q must be set and unique", i, s.Name)
		}
		sinks[s.Name] = true
		if s.Type != "webhook" && s.Type != "syslog" && s.Type != "stdout" {
			add("audit.sinks[%d].type: %q must be webhook, syslog or stdout", i, s.Type)
		}
	}
	return errors.Join(errs...)
}

func (ls *LimitStore) validate() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, port, err := net.SplitHostPort(ls.Redis.Address); err != nil || port == "" {
		add("limitStore.redis.address: %q is not a host:port address", ls.Redis.Address)
	}
	if ls.FailurePolicy != LimitStoreFailOpen && ls.FailurePolicy != LimitStoreFailClosed {
		add("limitStore.failurePolicy: %q must be FailOpen or FailClosed", ls.FailurePolicy)
	}
	if ls.KeyPrefix == "" {
		add("limitStore.keyPrefix: required")
	}
	if ls.Redis.Timeout.Duration < 0 {
		add("limitStore.redis.timeout: must not be negative")
	}
	g := ls.Global
	if g.RequestsPerSecond < 0 || g.Burst < 0 || g.TokensPerMinute < 0 || g.MaxConcurrentCalls < 0 || g.MaxConcurrentSessions < 0 || g.SessionsPerMinute < 0 {
		add("limitStore.global: limits must not be negative")
	}
	for name, v := range map[string]string{"daily": g.Daily, "monthly": g.Monthly} {
		if v == "" {
			continue
		}
		if _, err := budget.ParseMicros(v); err != nil {
			add("limitStore.global.%s: %v", name, err)
		}
	}
	return errs
}

var validMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

// ValidateOperation checks an extra operation: a method a proxy may pass and a path
// pattern without dot segments, encodings or query.
func ValidateOperation(op Operation) error {
	if !validMethods[op.Method] {
		return fmt.Errorf("method %q must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", op.Method)
	}
	if !strings.HasPrefix(op.Path, "/") || strings.ContainsAny(op.Path, "%?#\\;[") {
		return fmt.Errorf("path %q must start with / and hold no %%, ?, #, \\, ; or [", op.Path)
	}
	for _, seg := range strings.Split(op.Path[1:], "/") {
		if seg == "." || seg == ".." || seg == "" {
			return fmt.Errorf("path %q must not hold empty or dot segments", op.Path)
		}
	}
	if _, err := path.Match(op.Path, "/"); err != nil {
		return fmt.Errorf("path %q is not a valid pattern: %w", op.Path, err)
	}
	return nil
}

func httpsURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL", s)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q must be an https:// URL", s)
	}
	return nil
}

// Share divides a whole-VoiceAgent decimal amount between replicas, rounding down to
// the micro-dollar so that the shares never add up to more than the total.
func Share(total string, replicas int32) (string, error) {
	r, ok := new(big.Rat).SetString(total)
	if !ok {
		return "", fmt.Errorf("%q is not a decimal", total)
	}
	if replicas < 1 {
		replicas = 1
	}
	r.Quo(r, new(big.Rat).SetInt64(int64(replicas)))
	micros := new(big.Int).Quo(new(big.Int).Mul(r.Num(), big.NewInt(1_000_000)), r.Denom())
	return new(big.Rat).SetFrac(micros, big.NewInt(1_000_000)).FloatString(6), nil
}
