package gateway

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// auditRecord is one call, allowed or refused. It never holds a credential; content is
// recorded only when the VoiceAgent asks for it, and then PII-redacted.
type auditRecord struct {
	Time        time.Time `json:"time"`
	VoiceAgent  string    `json:"voiceAgent"`
	Namespace   string    `json:"namespace"`
	Pod         string    `json:"pod,omitempty"`
	RequestID   string    `json:"requestId"`
	Route       string    `json:"route"`              // model | integration
	Target      string    `json:"target"`             // provider/model or integration name
	Upstream    string    `json:"upstream,omitempty"` // the upstream that answered, after failover
	Decision    string    `json:"decision"`           // allowed | denied | failed
	Reason      string    `json:"reason,omitempty"`
	Status      int       `json:"status"`
	LatencyMs   float64   `json:"latencyMs"`
	Attempts    int       `json:"attempts,omitempty"`
	InputTokens int64     `json:"inputTokens,omitempty"`
	OutputToks  int64     `json:"outputTokens,omitempty"`
	CostUSD     string    `json:"costUSD,omitempty"`
	BudgetAlert bool      `json:"budgetAlert,omitempty"`
	Content     string    `json:"content,omitempty"`
}

// auditLog writes records as JSON lines. Delivery to AuditSinks, with its queue and
// hash chain, builds on this writer.
type auditLog struct {
	mu  sync.Mutex
	out io.Writer
	enc *json.Encoder
}

func newAuditLog(w io.Writer) *auditLog {
	return &auditLog{out: w, enc: json.NewEncoder(w)}
}

func (a *auditLog) write(rec *auditRecord) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enc.Encode(rec)
}
