package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// auditRecord is one call, allowed or refused: the payload of one record of the audit
// chain. It never holds a credential; content is recorded only when the VoiceAgent asks
// for it, and then PII-redacted.
type auditRecord struct {
	Time       time.Time `json:"time"`
	VoiceAgent string    `json:"voiceAgent"`
	Namespace  string    `json:"namespace"`
	Pod        string    `json:"pod,omitempty"`
	RequestID  string    `json:"requestId"`
	Route      string    `json:"route"`  // model | integration
	Target     string    `json:"target"` // provider/model or integration name
	Method     string    `json:"method,omitempty"`
	// Path is the normalised upstream path the call went to (no query: it can hold
	// personal data); Operation the allowed operation it matched.
	Path        string  `json:"path,omitempty"`
	Operation   string  `json:"operation,omitempty"`
	Upstream    string  `json:"upstream,omitempty"` // the upstream that answered, after failover
	Decision    string  `json:"decision"`           // allowed | denied | failed
	Reason      string  `json:"reason,omitempty"`
	Status      int     `json:"status"`
	LatencyMs   float64 `json:"latencyMs"`
	Attempts    int     `json:"attempts,omitempty"`
	InputTokens int64   `json:"inputTokens,omitempty"`
	OutputToks  int64   `json:"outputTokens,omitempty"`
	// CachedInputTokens of InputTokens were read from or written to a prompt cache.
	CachedInputTokens int64 `json:"cachedInputTokens,omitempty"`
	// UsageEstimated: the answer's usage could not be read, and the call was charged
	// an estimate from the sizes of request and answer.
	UsageEstimated bool `json:"usageEstimated,omitempty"`
	// Session holds a realtime session's figures (route "model", operation realtime
	// or live).
	Session *sessionRecord `json:"session,omitempty"`
	// Count of refusals a summary record stands for (route "refusals").
	Count       int64  `json:"count,omitempty"`
	CostUSD     string `json:"costUSD,omitempty"`
	BudgetAlert bool   `json:"budgetAlert,omitempty"`
	Content     string `json:"content,omitempty"`
	// For route "config": the VoiceAgent generation put in force and its spec owners.
	Generation   int64    `json:"generation,omitempty"`
	SpecManagers []string `json:"specManagers,omitempty"`
	// Changed names the sections of the gateway's controls that differ from the
	// configuration before (models, integrations, limits, budget, circuitBreaker,
	// audit, inbound, agentAuth, replicas).
	Changed []string `json:"changed,omitempty"`
}

// openAudit opens this replica's chain and queue under <queueDir>/<pod>, so that
// replicas sharing a volume never share a chain, and starts delivery to the sinks.
func (g *Gateway) openAudit(cfg *gw.Config) (*audit.Log, error) {
	pod := g.opts.PodName
	if pod == "" {
		pod, _ = os.Hostname()
	}
	dir := cfg.Audit.QueueDir
	if dir == "" {
		dir = filepath.Join(cfg.StateDir, "audit")
	}
	signer, err := audit.NewSigner(cfg.Audit.CheckpointKeyType, cfg.Audit.CheckpointKeyFile)
	if err != nil {
		return nil, fmt.Errorf("audit checkpoint key: %w", err)
	}
	sinks, err := g.auditSinks(cfg)
	if err != nil {
		return nil, err
	}
	return audit.Open(audit.Options{
		Dir: filepath.Join(dir, strings.ReplaceAll(pod, "/", "-")), Pod: pod, Signer: signer,
		MaxBytes: cfg.Audit.MaxQueueBytes, MaxRecords: cfg.Audit.MaxQueueRecords,
		CheckpointEvery: cfg.Audit.CheckpointEvery, CheckpointInterval: cfg.Audit.CheckpointInterval.Duration,
		SyncInterval: auditSyncInterval(cfg.Audit.Durability),
		BackoffBase:  g.opts.AuditBackoffBase, BackoffMax: g.opts.AuditBackoffMax,
		Clock: g.opts.Clock, Logger: g.log, Metrics: g.metrics.audit,
	}, sinks)
}

// auditSinks builds the configured sinks; with none configured, records go to stdout
// (Options.AuditOut), where the container log keeps them.
func (g *Gateway) auditSinks(cfg *gw.Config) ([]audit.NamedSink, error) {
	sinks := cfg.Audit.Sinks
	if len(sinks) == 0 {
		sinks = []gw.Sink{{Name: "stdout", Type: audit.SinkStdout}}
	}
	out := make([]audit.NamedSink, 0, len(sinks))
	for _, s := range sinks {
		sink, err := audit.NewSink(audit.SinkConfig{
			Name: s.Name, Type: s.Type, URL: s.URL, Address: s.Address, BearerTokenFile: s.BearerTokenFile,
			SigningKeyFile: s.SigningKeyFile, CAFile: s.CAFile, Stdout: g.opts.AuditOut, Hostname: g.opts.PodName,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, audit.NamedSink{Name: s.Name, Sink: sink})
	}
	return out, nil
}

// reloadAuditSinks puts changed sinks and a changed durability in force; queue bounds
// and the checkpoint key take effect at the next start.
func (g *Gateway) reloadAuditSinks(old, cfg *gw.Config) error {
	if old.Audit.Durability != cfg.Audit.Durability {
		if err := g.trail.SetSyncInterval(auditSyncInterval(cfg.Audit.Durability)); err != nil {
			return fmt.Errorf("audit durability: %w", err)
		}
	}
	if reflect.DeepEqual(old.Audit.Sinks, cfg.Audit.Sinks) {
		return nil
	}
	sinks, err := g.auditSinks(cfg)
	if err != nil {
		return err
	}
	g.trail.SetSinks(sinks)
	return nil
}

// admitAudit applies the failure policy before anything else happens to a call. With
// FailClosed a call is served only if room for its record is reserved; otherwise it is
// refused, and the refusal is recorded if the queue can still take it.
func (c *call) admitAudit(w http.ResponseWriter) bool {
	if c.cfg.Audit.FailurePolicy == "FailOpen" {
		return true
	}
	if err := c.g.trail.Reserve(); err != nil {
		c.deny(w, http.StatusServiceUnavailable, "audit_unavailable",
			"the audit trail cannot keep a record of this call, and the VoiceAgent's audit policy is FailClosed; retry later", time.Second)
		return false
	}
	c.reserved = true
	return true
}

// writeAudit chains and queues the call's record before the handler returns.
func (c *call) writeAudit() {
	_, err := c.g.trail.AppendValue(&c.rec, c.reserved)
	if err != nil {
		c.g.log.Error("audit record not kept", "requestId", c.rec.RequestID, "decision", c.rec.Decision, "error", err.Error())
	}
}

func (g *Gateway) serveAuditStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(g.trail.Status())
}

// auditWriteSyncInterval bounds what a machine crash can take from the queue in the
// default durability mode; a killed or crashed gateway process loses nothing.
const auditWriteSyncInterval = 10 * time.Millisecond

func auditSyncInterval(durability string) time.Duration {
	if durability == gw.AuditDurabilityFsync {
		return 0
	}
	return auditWriteSyncInterval
}

// recordConfig puts a configuration change into the audit trail: the controls in force
// changed (a new VoiceAgent generation), and whoever changed the spec is named. The
// operator cannot deliver to the sinks itself (it never reads their credentials), so
// the gateway, which holds them, records what it was told to enforce.
func (g *Gateway) recordConfig(old, cfg *gw.Config, reason string) {
	rec := auditRecord{
		Time: g.opts.Clock.Now().UTC(), VoiceAgent: cfg.VoiceAgent, Namespace: cfg.Namespace, Pod: g.opts.PodName,
		RequestID: newRequestID(), Route: "config", Target: cfg.VoiceAgent, Decision: "applied", Reason: reason,
		Generation: cfg.Generation, SpecManagers: cfg.SpecManagers, Changed: changedSections(old, cfg),
	}
	_, err := g.trail.AppendValue(&rec, false)
	if err != nil {
		g.log.Error("audit record of a configuration change not kept", "generation", cfg.Generation, "error", err.Error())
	}
}

// changedSections lists the parts of the controls that differ between two
// configurations; nil old (the start) lists none.
func changedSections(old, cfg *gw.Config) []string {
	if old == nil {
		return nil
	}
	var out []string
	for _, s := range []struct {
		name     string
		old, new any
	}{
		{"replicas", old.Replicas, cfg.Replicas},
		{"inbound", old.Inbound, cfg.Inbound},
		{"agentAuth", old.AgentAuth, cfg.AgentAuth},
		{"models", old.Models, cfg.Models},
		{"integrations", old.Integrations, cfg.Integrations},
		{"limits", old.Limits, cfg.Limits},
		{"budget", old.Budget, cfg.Budget},
		{"circuitBreaker", old.Breaker, cfg.Breaker},
		{"audit", old.Audit, cfg.Audit},
	} {
		if !reflect.DeepEqual(s.old, s.new) {
			out = append(out, s.name)
		}
	}
	return out
}
