package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/limitstore"
	"github.com/voiceagent-dev/voiceagent-operator/internal/pii"
)

const (
	maxRequestBody  = 16 << 20
	maxResponseBody = 64 << 20
	maxRetryAfter   = 10 * time.Second
	contentSample   = 4 << 10
)

// call is the state of one proxied call, from admission to its audit record.
type call struct {
	g        *Gateway
	cfg      *gw.Config
	start    time.Time
	rec      auditRecord
	release  func()
	reserved bool // room for the record is reserved in the audit queue
	finished bool
	// requestBytes is the size of the agent's request, for a usage estimate.
	requestBytes int64
	denyKind     string
	// ctx is the agent's request's: a limit store round trip ends with it.
	ctx context.Context
}

func (g *Gateway) newCall(r *http.Request, route, target string) *call {
	cfg := g.cfg.Load()
	now := g.opts.Clock.Now()
	return &call{g: g, cfg: cfg, start: now, ctx: r.Context(), rec: auditRecord{
		Time: now.UTC(), VoiceAgent: cfg.VoiceAgent, Namespace: cfg.Namespace, Pod: g.opts.PodName,
		RequestID: requestID(r), Route: route, Target: target, Method: r.Method,
	}}
}

// deny answers 429 (or another status) without calling upstream, with Retry-After so
// that a well-behaved client backs off instead of hanging.
func (c *call) deny(w http.ResponseWriter, status int, limit, message string, retryAfter time.Duration) {
	if len(message) > maxRefusalMessage { // what the agent sent is in some messages
		message = strings.ToValidUTF8(message[:maxRefusalMessage], "") + "..."
	}
	c.g.metrics.rejections.WithLabelValues(limit).Inc()
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter.Seconds()+0.999)))
	}
	writeError(w, status, limit, message, c.rec.RequestID)
	c.rec.Decision, c.rec.Reason, c.rec.Status = "denied", limit+": "+message, status
	c.denyKind = limit
}

// finish releases the call's slot and writes its record. It runs before the body of a
// response whose record is complete is written, so that the record is on disk before
// the client can have the answer; the deferred call is then a no-op.
func (c *call) finish() {
	if c.finished {
		return
	}
	c.finished = true
	if c.release != nil {
		c.release()
	}
	c.rec.LatencyMs = float64(c.g.opts.Clock.Now().Sub(c.start).Microseconds()) / 1000
	outcome := c.rec.Decision
	if c.rec.Decision == "allowed" && c.rec.Status >= 400 {
		outcome = "upstream_error"
	}
	c.g.metrics.requests.WithLabelValues(c.rec.Route, outcome).Inc()
	if c.rec.Decision == "denied" && !c.g.refusals.admit(c.denyKind) {
		if c.reserved {
			c.g.trail.Release()
		}
		c.g.metrics.refusalsSummarized.Inc()
		return
	}
	c.writeAudit()
}

// admitRequest applies the VoiceAgent-wide request limit: in the limit store, or this
// replica's share of it.
func (c *call) admitRequest(w http.ResponseWriter) bool {
	if decided, ok := c.admitShared(w, limitstore.Request); decided {
		return ok
	}
	return c.admitCommon(w)
}

// admitModelCall applies the limits of a model call: requests, tokens per minute,
// concurrent calls and the budgets, in the limit store or on this replica's shares.
func (c *call) admitModelCall(w http.ResponseWriter) bool {
	if decided, ok := c.admitShared(w, limitstore.Call); decided {
		return ok
	}
	if !c.admitCommon(w) || !c.admitTokensShare(w) {
		return false
	}
	if !c.g.concurrency.TryAcquire() {
		c.deny(w, http.StatusTooManyRequests, "concurrency", msgConcurrency, time.Second)
		return false
	}
	c.release = c.g.concurrency.Release
	return c.admitBudgetShare(w)
}

// The refusals of a limit, the same whether the store or this replica's share decided.
const (
	msgRateLimit          = "the VoiceAgent's request rate limit is reached; retry later"
	msgTokensPerMinute    = "the VoiceAgent's tokens-per-minute limit is reached; retry later"
	msgConcurrency        = "too many model calls in flight for this VoiceAgent; retry shortly"
	msgSessionsPerMinute  = "the VoiceAgent's realtime sessions-per-minute limit is reached (spec.voice.sessionsPerMinute); retry later"
	msgConcurrentSessions = "the VoiceAgent's concurrent realtime sessions are all in use (spec.voice.maxConcurrentSessions); retry shortly"
)

// admitCommon applies this replica's share of the VoiceAgent-wide request bucket.
func (c *call) admitCommon(w http.ResponseWriter) bool {
	if ok, wait := c.g.requests.Allow(); !ok {
		c.deny(w, http.StatusTooManyRequests, "rate_limit", msgRateLimit, wait)
		return false
	}
	return true
}

// admitTokensShare applies this replica's share of the tokens-per-minute limit.
func (c *call) admitTokensShare(w http.ResponseWriter) bool {
	if ok, wait := c.g.tokens.AllowN(0); !ok {
		c.deny(w, http.StatusTooManyRequests, "tokens_per_minute", msgTokensPerMinute, wait)
		return false
	}
	return true
}

// admitBudgetShare applies this replica's share of the budgets, and flags the record
// once spend passed the alert threshold.
func (c *call) admitBudgetShare(w http.ResponseWriter) bool {
	g := c.g
	d := g.budget.Check()
	g.setBudgetGauges(d)
	if !d.Allowed {
		c.deny(w, http.StatusTooManyRequests, "budget", d.Reason, d.ResetAt.Sub(g.opts.Clock.Now()))
		return false
	}
	if d.Alert || d.Exceeded {
		c.rec.BudgetAlert = true
	}
	return true
}

// maxRefusalMessage bounds a refusal's message and so its audit record.
const maxRefusalMessage = 512

// clip quotes an agent-supplied value for a message, cut to a length that cannot make
// a refusal (and its audit record) large.
func clip(v string) string {
	const n = 64
	if len(v) > n {
		v = strings.ToValidUTF8(v[:n], "") + "..."
	}
	return strconv.Quote(v)
}

// setBudgetGauges follows the budget's state both ways: a gauge that only ever went
// to 1 would report a spent budget long after the next day reset it.
func (g *Gateway) setBudgetGauges(d budget.Decision) {
	exceeded, alert := 0.0, 0.0
	if d.Exceeded {
		exceeded = 1
	}
	if d.Alert || d.Exceeded {
		alert = 1
	}
	g.metrics.budgetExceeded.Set(exceeded)
	g.metrics.budgetAlert.Set(alert)
}

// recordContent keeps a sample of the request in the record when the VoiceAgent asks:
// redacted first, then cut, so that a cut never splits a card number into pieces the
// redaction no longer recognises.
func (c *call) recordContent(body []byte) {
	if !c.cfg.Audit.RecordContent {
		return
	}
	if len(body) > 4*contentSample { // what redaction reads is bounded too
		body = body[:4*contentSample]
	}
	s := string(body)
	if c.cfg.Audit.RedactPII {
		s = pii.Redact(s)
	}
	if len(s) > contentSample {
		s = strings.ToValidUTF8(s[:contentSample], "")
	}
	c.rec.Content = s
}

// denyBody refuses a call whose body could not be taken.
func (c *call) denyBody(w http.ResponseWriter, status int) {
	if status == http.StatusServiceUnavailable {
		c.deny(w, status, "gateway_busy", "the gateway's memory for request bodies is in use; retry shortly", time.Second)
		return
	}
	c.deny(w, status, "request_too_large", "request body too large or unreadable", 0)
}

// readBody reads a body of at most limit bytes into memory, each chunk taken from the
// gateway's memory budget for buffered bodies, so that no mix of concurrent calls
// takes the gateway past its container's memory limit. status is 413 for a body over
// limit or unreadable, 503 when the budget is used up; release gives the memory back.
func (g *Gateway) readBody(body io.Reader, limit, declared int64) (data []byte, release func(), status int) {
	data, complete, release, status := g.readPrefix(body, limit, declared)
	if status == 0 && !complete {
		release()
		return nil, func() {}, http.StatusRequestEntityTooLarge
	}
	return data, release, status
}

// readPrefix reads at most limit bytes of body (and one more, to know whether that was
// all) within the memory budget; complete says the body ended. On an error other than
// the budget, what was read so far is returned as not complete. declared is the
// body's Content-Length (-1 when unknown): a small body gets a small first buffer. It
// only ever shrinks that buffer, never grows it, since the sender chooses it.
func (g *Gateway) readPrefix(body io.Reader, limit, declared int64) (data []byte, complete bool, release func(), status int) {
	var taken int64
	release = func() { g.bodyMemory.Release(taken); taken = 0 }
	const first, minRoom = 4 << 10, 512
	size := int64(first)
	if declared >= 0 {
		// minRoom past the body, so that the read that finds its end does not grow it.
		size = min(size, declared+minRoom)
	}
	buf := make([]byte, 0, size)
	for {
		if int64(cap(buf)-len(buf)) < minRoom {
			grow := min(max(int64(cap(buf)), first), 4<<20) // doubles, 4 MiB a step at most
			if !g.bodyMemory.TryAcquire(grow) {
				release()
				return nil, false, func() {}, http.StatusServiceUnavailable
			}
			taken += grow
			buf = slices.Grow(buf, int(grow))
		}
		room := min(int64(cap(buf)-len(buf)), limit+1-int64(len(buf)))
		n, err := body.Read(buf[len(buf) : len(buf)+int(room)])
		buf = buf[:len(buf)+n]
		switch {
		case int64(len(buf)) > limit:
			return buf, false, release, 0
		case errors.Is(err, io.EOF):
			return buf, true, release, 0
		case err != nil:
			release()
			return nil, false, func() {}, http.StatusRequestEntityTooLarge
		}
	}
}

// droppedResponseHeaders: cookies and server details, and the account a key belongs to
// (OpenAI's organisation and project, Anthropic's organisation id).
var droppedResponseHeaders = []string{"Set-Cookie", "Server", "Via", "Alt-Svc", "X-Powered-By",
	"Openai-Organization", "Openai-Project", "Anthropic-Organization-Id"}

func copyResponseHeaders(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
	for _, k := range hopHeaders {
		dst.Del(k)
	}
	for _, k := range droppedResponseHeaders {
		dst.Del(k)
	}
}

// host is an endpoint's host, the label of its metrics and the name in messages. The
// endpoints come from the configuration, so the parsed hosts are kept: every call
// names its upstream several times.
func host(endpoint string) string {
	if h, ok := endpointHosts.Load(endpoint); ok {
		return h.(string)
	}
	h := "upstream"
	if u, err := url.Parse(endpoint); err == nil {
		h = u.Host
	}
	if endpointHostCount.Add(1) <= maxEndpointHosts { // a bound, whatever the configurations were
		endpointHosts.Store(endpoint, h)
	}
	return h
}

const maxEndpointHosts = 1024

var (
	endpointHosts     sync.Map // endpoint -> host
	endpointHostCount atomic.Int64
)
