package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/limitstore"
	"github.com/voiceagent-dev/voiceagent-operator/internal/neterr"
	"github.com/voiceagent-dev/voiceagent-operator/internal/pii"
	"github.com/voiceagent-dev/voiceagent-operator/internal/translate"
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
	now := g.opts.Now()
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
	c.rec.LatencyMs = float64(c.g.opts.Now().Sub(c.start).Microseconds()) / 1000
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
	g := c.g
	if !c.admitCommon(w) {
		return false
	}
	if ok, wait := g.tokens.AllowN(0); !ok {
		c.deny(w, http.StatusTooManyRequests, "tokens_per_minute", "the VoiceAgent's tokens-per-minute limit is reached; retry later", wait)
		return false
	}
	if !g.concurrency.TryAcquire() {
		c.deny(w, http.StatusTooManyRequests, "concurrency", "too many model calls in flight for this VoiceAgent; retry shortly", time.Second)
		return false
	}
	c.release = g.concurrency.Release
	d := g.budget.Check()
	g.setBudgetGauges(d)
	if !d.Allowed {
		c.deny(w, http.StatusTooManyRequests, "budget", d.Reason, d.ResetAt.Sub(g.opts.Now()))
		return false
	} else if d.Alert || d.Exceeded {
		c.rec.BudgetAlert = true
	}
	return true
}

// admitCommon applies this replica's share of the VoiceAgent-wide request bucket.
func (c *call) admitCommon(w http.ResponseWriter) bool {
	if ok, wait := c.g.requests.Allow(); !ok {
		c.deny(w, http.StatusTooManyRequests, "rate_limit", "the VoiceAgent's request rate limit is reached; retry later", wait)
		return false
	}
	return true
}

func (g *Gateway) serveModel(w http.ResponseWriter, r *http.Request) {
	cfg := g.cfg.Load()
	primary := cfg.Models[0]
	c := g.newCall(r, "model", primary.Provider+"/"+primary.Name)
	defer c.finish()
	suffix := strings.TrimPrefix(r.URL.Path, "/model")
	family := wireFamily(primary.Provider)
	op, ok := findOperation(family, primary.ExtraOperations, r.Method, suffix)
	if !ok {
		c.deny(w, http.StatusForbidden, "operation_not_allowed", fmt.Sprintf("%s %s is not an inference operation of provider %s; "+
			"the VoiceAgent can open it in spec.model.extraOperations", r.Method, clip(suffix), primary.Provider), 0)
		return
	}
	c.rec.Operation = op.Name
	if op.Name == "realtime" || op.Name == "live" {
		if !isWebSocketUpgrade(r) {
			c.deny(w, http.StatusBadRequest, "websocket_required", op.Name+" is a WebSocket session: send an Upgrade: websocket handshake", 0)
			return
		}
		g.serveRealtime(w, r, c, op, suffix)
		return
	}
	if !c.admitAudit(w) || !c.admitModelCall(w) {
		return
	}
	body, releaseBody, status := g.readBody(r.Body, maxRequestBody)
	if status != 0 {
		c.denyBody(w, status)
		return
	}
	defer releaseBody()
	// Reading the model and setting stream options decode and re-encode the body: that
	// memory comes from the same budget.
	work := 2 * int64(len(body))
	if !g.bodyMemory.TryAcquire(work) {
		c.denyBody(w, http.StatusServiceUnavailable)
		return
	}
	defer g.bodyMemory.Release(work)
	rb := readRequestBody(body)
	if why := rb.refusal(family, op); why != "" {
		c.deny(w, http.StatusForbidden, "feature_not_allowed", why, 0)
		return
	}
	c.requestBytes = int64(len(body))
	c.recordContent(body)
	if op.ModelIn != "" {
		if asked := rb.requestModel(op, suffix); asked != primary.Name {
			c.deny(w, http.StatusForbidden, "model_not_allowed", fmt.Sprintf("model %s is not this VoiceAgent's model %q (spec.model.name)", clip(asked), primary.Name), 0)
			return
		}
	}
	// An OpenAI chat stream carries usage only when asked: the gateway always asks,
	// and keeps the usage-only chunk from an agent that did not.
	sameFormatBody, hideUsageChunk := body, false
	if family == "openai" && op.Name == "chat.completions" {
		sameFormatBody, hideUsageChunk = rb.withIncludeUsage()
	}
	var lastErr string
	query := modelQuery(family, r.URL.RawQuery)
	for i, m := range cfg.Models {
		path, query, upBody := suffix, query, sameFormatBody
		var tr *translate.Translation
		switch {
		case wireFamily(m.Provider) != family:
			// Another wire format: translated both ways where a translation exists (the
			// operator refuses other pairs at admission).
			t, err := translate.Plan(family, suffix, r.URL.RawQuery, body, m.Provider, m.Name)
			if err != nil {
				lastErr = host(m.Endpoint) + ": " + err.Error()
				continue
			}
			tr, path, query, upBody = t, t.Path, "", t.Body
		case i > 0:
			// The model the agent asked for means nothing to a fallback: it gets its own.
			path, upBody = withModel(family, path, upBody, m.Name)
		}
		done, msg := c.tryModel(w, r, m, path, query, upBody, tr, hideUsageChunk && tr == nil, op.Priced)
		if done {
			return
		}
		lastErr = msg
	}
	c.rec.Decision, c.rec.Reason = "failed", lastErr
	c.rec.Status = http.StatusBadGateway
	writeError(w, http.StatusBadGateway, "upstream_unavailable", "no model upstream could serve the call: "+lastErr, c.rec.RequestID)
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

// withIncludeUsage sets stream_options.include_usage on a streamed OpenAI chat
// request. hide is true when the gateway set it (the agent did not ask): the agent
// then must not get the usage-only chunk, which some clients do not expect.
func withIncludeUsage(body []byte) (out []byte, hide bool) {
	return readRequestBody(body).withIncludeUsage()
}

func (rb requestBody) withIncludeUsage() (out []byte, hide bool) {
	body := rb.raw
	if rb.fields == nil {
		return body, false
	}
	fields := maps.Clone(rb.fields)
	var stream bool
	if json.Unmarshal(fields["stream"], &stream) != nil || !stream {
		return body, false
	}
	var opts map[string]json.RawMessage
	if raw, ok := fields["stream_options"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &opts) != nil {
			return body, false // the provider refuses it as it is
		}
	}
	if opts == nil {
		opts = map[string]json.RawMessage{}
	}
	var asked bool
	_ = json.Unmarshal(opts["include_usage"], &asked)
	if asked {
		return body, false
	}
	opts["include_usage"] = json.RawMessage("true")
	raw, err := json.Marshal(opts)
	if err != nil {
		return body, false
	}
	fields["stream_options"] = raw
	if out, err = json.Marshal(fields); err != nil {
		return body, false
	}
	return out, true
}

// tryModel calls one model upstream. It returns done once a response was written to
// the client; otherwise the caller fails over to the next upstream.
func (c *call) tryModel(w http.ResponseWriter, r *http.Request, m gw.Model, suffix, rawQuery string, body []byte, tr *translate.Translation, hideUsageChunk, priced bool) (bool, string) {
	br := c.g.breaker(m.Endpoint)
	ticket, ok := br.Allow()
	if !ok {
		c.g.metrics.breakerState.WithLabelValues(host(m.Endpoint)).Set(1)
		return false, host(m.Endpoint) + ": circuit open"
	}
	key, err := c.g.credential(m.CredentialFile).Value()
	if err != nil {
		c.g.log.Error("model credential unreadable", "upstream", host(m.Endpoint), "error", err.Error())
		br.Failure(ticket)
		return false, host(m.Endpoint) + ": credential unavailable"
	}
	// The provider bills a call the agent hangs up on: the gateway's call to it is not
	// cancelled with the agent's, only bounded by the model's timeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), m.Timeout.Duration)
	defer cancel()
	target, ok := upstreamURL(m.Endpoint, suffix, rawQuery)
	if !ok {
		return false, "bad upstream URL"
	}
	c.rec.Path = target.Path
	resp, attempts, errMsg := c.g.doWithRetries(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, r.Method, target.String(), bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = r.Header.Clone()
		stripRequestHeaders(req.Header)
		injectModelAuth(m.Provider, req.Header, key)
		req.Header.Set("X-Request-ID", c.rec.RequestID)
		return req, nil
	}, m.Endpoint, false)
	c.rec.Attempts += attempts
	if resp == nil || retryable(resp.StatusCode) {
		br.Failure(ticket)
		c.g.metrics.breakerState.WithLabelValues(host(m.Endpoint)).Set(float64(br.State()))
		if resp != nil {
			drain(resp)
			errMsg = fmt.Sprintf("%s: status %d", host(m.Endpoint), resp.StatusCode)
		}
		return false, errMsg
	}
	defer func() { _ = resp.Body.Close() }()
	br.Success(ticket)
	c.g.metrics.breakerState.WithLabelValues(host(m.Endpoint)).Set(0)
	c.rec.Upstream = m.Provider + "/" + m.Name
	c.relay(w, resp, m, tr, newScrubber(key), hideUsageChunk, priced)
	return true, ""
}

// smallAnswer: answers up to this size are read whole before they are relayed.
const smallAnswer = 1 << 20

// maxReadAfterHangUp bounds what the gateway reads of an answer after the agent hung
// up, looking for its usage; past it, the call is charged an estimate.
const maxReadAfterHangUp = 8 << 20

// agentWriter writes to the agent through the scrubber, flushing each write so that a
// stream streams. Once a write fails (the agent hung up) it discards the rest, so that
// the gateway can read on to the usage.
type agentWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	scrub   *scrubber
	failed  bool
	written int64
}

func (a *agentWriter) Write(p []byte) error {
	a.written += int64(len(p))
	if a.failed {
		return nil
	}
	out := a.scrub.Apply(p)
	if len(out) == 0 {
		return nil
	}
	if _, err := a.w.Write(out); err != nil {
		a.failed = true
		return nil
	}
	if a.flusher != nil {
		a.flusher.Flush()
	}
	return nil
}

func (a *agentWriter) close() {
	if rest := a.scrub.Flush(); len(rest) > 0 && !a.failed {
		_, _ = a.w.Write(rest)
	}
}

// relay copies the upstream response to the agent, reading usage as it passes and
// scrubbing the injected key from what passes. With tr the answer comes from a
// fallback of another format: it is translated back into the agent's format, usage is
// read from the fallback's own answer, and no upstream header is passed on. Error
// bodies are replaced: upstream detail goes nowhere near the agent.
func (c *call) relay(w http.ResponseWriter, resp *http.Response, m gw.Model, tr *translate.Translation, scrub *scrubber, hideUsageChunk, priced bool) {
	c.rec.Decision, c.rec.Status = "allowed", resp.StatusCode
	if tr == nil {
		copyResponseHeaders(w.Header(), resp.Header)
		scrub.Header(w.Header())
	} else {
		c.rec.Reason = "served by a fallback in another format: " + tr.Direction
	}
	w.Header().Set("X-Request-ID", c.rec.RequestID)
	if resp.StatusCode >= 400 {
		kind := upstreamErrorKind(resp)
		c.rec.Reason = "upstream status " + strconv.Itoa(resp.StatusCode)
		w.Header().Del("Content-Length")
		writeError(w, resp.StatusCode, kind, "the model provider refused the call ("+kind+")", c.rec.RequestID)
		return
	}
	now := c.g.opts.Now()
	flusher, _ := w.(http.Flusher)
	aw := &agentWriter{w: w, flusher: flusher, scrub: scrub}
	var total usage
	if tr != nil && !(isEventStream(resp.Header) && tr.Stream != nil) {
		c.relayTranslatedAnswer(w, resp, m, tr, scrub, now, priced)
		return
	}
	// Scrubbing can change the length: the answer goes chunked.
	w.Header().Del("Content-Length")
	var feed func([]byte) error
	var ended func() bool
	var closeFeed func()
	switch {
	case isEventStream(resp.Header):
		var stream translate.StreamTranslator
		if tr != nil {
			stream = tr.Stream(now)
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
		}
		sse := &sseRelay{hold: hideUsageChunk, out: aw.Write}
		if stream != nil {
			sse.out = func([]byte) error { return nil }
		}
		sse.onData = func(data []byte) bool {
			if u, ok := usageFromJSON(data); ok {
				total.maxMerge(u)
			}
			if stream != nil {
				if out := stream.Event(data); len(out) > 0 {
					_ = aw.Write(out)
				}
			}
			return hideUsageChunk && isUsageOnlyChunk(data)
		}
		feed = func(p []byte) error { _, err := sse.Write(p); return err }
		closeFeed = func() { _ = sse.Close() }
		ended = func() bool { return stream == nil || stream.Ended() }
	default:
		// A small answer is read whole, charged and recorded before the agent has it, so
		// that calls one after another never spend past the budget; a bigger one streams.
		head, complete, release, status := c.g.readPrefix(resp.Body, smallAnswer)
		defer release()
		if status == 0 && complete {
			scan := &usageScanner{}
			_, _ = scan.Write(head)
			total = scan.total
			c.account(total, m, int64(len(head)), priced)
			c.finish()
			out := append(scrub.Apply(head), scrub.Flush()...)
			w.Header().Set("Content-Length", strconv.Itoa(len(out)))
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(out) // one write, no flush: net/http sends head and body together
			return
		}
		scan := &usageScanner{}
		if len(head) > 0 {
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
		}
		feed = func(p []byte) error {
			_, _ = scan.Write(p)
			return aw.Write(p)
		}
		closeFeed = func() { total.maxMerge(scan.total) }
		ended = func() bool { return true }
	}
	w.WriteHeader(resp.StatusCode)
	buf := make([]byte, 32<<10)
	var readErr error
	var afterHangUp int64
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if aw.failed {
				afterHangUp += int64(n)
			}
			if ferr := feed(buf[:n]); ferr != nil {
				readErr = ferr
				break
			}
		}
		if err != nil {
			readErr = err
			break
		}
		if afterHangUp > maxReadAfterHangUp {
			readErr = errors.New("agent hung up; answer not read to its end")
			break
		}
	}
	closeFeed()
	aw.close()
	c.account(total, m, aw.written, priced)
	if aw.failed {
		c.rec.Reason = "the agent hung up before the end of the answer"
		return
	}
	c.abortIfCutShort(readErr, ended())
}

// relayTranslatedAnswer reads a fallback's whole answer (within the memory budget),
// charges it, and translates it into the agent's format.
func (c *call) relayTranslatedAnswer(w http.ResponseWriter, resp *http.Response, m gw.Model, tr *translate.Translation, scrub *scrubber, now time.Time, priced bool) {
	data, release, status := c.g.readBody(resp.Body, maxResponseBody)
	defer release()
	if status != 0 {
		c.rec.Reason = "upstream answer too large or unreadable"
	}
	total, _ := usageFromJSON(data)
	c.account(total, m, int64(len(data)), priced)
	out, err := tr.Answer(data, now)
	if err != nil || status != 0 {
		c.rec.Status, c.rec.Reason = http.StatusBadGateway, "fallback answer not translatable"
		writeError(w, http.StatusBadGateway, "upstream_error", "the fallback provider's answer could not be read", c.rec.RequestID)
		return
	}
	out = append(scrub.Apply(out), scrub.Flush()...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}

// abortIfCutShort ends the agent's connection without the end of the answer when the
// upstream stream broke off (a read error other than its end, or no end event): a
// cleanly ended answer would pass a partial stream off as the whole one. The record
// says so and is kept first.
func (c *call) abortIfCutShort(readErr error, ended bool) {
	if (readErr == nil || errors.Is(readErr, io.EOF)) && ended {
		return
	}
	c.rec.Reason = "upstream stream cut short"
	c.finish()
	panic(http.ErrAbortHandler)
}

// withModel names model in a request of the given family: in the path for Gemini
// (/v1beta/models/<model>:<method>), in the body's "model" field otherwise. A body that
// is not a JSON object is left as it is.
func withModel(family, path string, body []byte, model string) (string, []byte) {
	if family == "gemini" {
		// The path is unescaped here (joinURL escapes it once); a name that would change
		// the path's shape is not put in it.
		if i := strings.Index(path, "/models/"); i >= 0 && !strings.ContainsAny(model, "/?#: ") {
			rest := path[i+len("/models/"):]
			if j := strings.IndexByte(rest, ':'); j >= 0 {
				return path[:i] + "/models/" + model + rest[j:], body
			}
		}
		return path, body
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil || fields == nil {
		return path, body
	}
	name, _ := json.Marshal(model)
	fields["model"] = name
	out, err := json.Marshal(fields)
	if err != nil {
		return path, body
	}
	return path, out
}

// account charges tokens and spend after the call. An answer of a priced operation
// whose usage could not be read is charged an estimate, flagged in the record and in
// a metric: never free.
func (c *call) account(u usage, m gw.Model, answerBytes int64, priced bool) {
	if !u.Seen {
		if !priced {
			return
		}
		u = estimateUsage(c.requestBytes, answerBytes)
		c.rec.UsageEstimated = true
		c.g.metrics.usageEstimated.Inc()
	}
	c.rec.InputTokens, c.rec.OutputToks = u.Input, u.Output
	c.rec.CachedInputTokens = u.CachedInput + u.CacheWrite
	if u.total() > 0 {
		c.g.tokenCount.add(c.g.opts.Now(), u.total())
		c.g.tokens.Charge(float64(u.total()))
		c.g.chargeShared(u.total(), 0)
		c.g.metrics.tokens.WithLabelValues("input").Add(float64(u.Input))
		c.g.metrics.tokens.WithLabelValues("output").Add(float64(u.Output))
	}
	if m.Pricing == nil {
		return
	}
	cost := usageCost(u, m.Pricing)
	c.rec.CostUSD = cost.String()
	c.g.chargeShared(0, cost)
	if err := c.g.budget.Add(cost); err != nil {
		c.g.log.Error("spend not persisted", "error", err.Error())
	}
	c.g.metrics.spendUSD.Add(float64(cost) / 1e6)
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
func (g *Gateway) readBody(body io.Reader, limit int64) (data []byte, release func(), status int) {
	data, complete, release, status := g.readPrefix(body, limit)
	if status == 0 && !complete {
		release()
		return nil, func() {}, http.StatusRequestEntityTooLarge
	}
	return data, release, status
}

// readPrefix reads at most limit bytes of body (and one more, to know whether that was
// all) within the memory budget; complete says the body ended. On an error other than
// the budget, what was read so far is returned as not complete.
func (g *Gateway) readPrefix(body io.Reader, limit int64) (data []byte, complete bool, release func(), status int) {
	var taken int64
	release = func() { g.bodyMemory.Release(taken); taken = 0 }
	const step = 64 << 10
	buf := make([]byte, 0, 4<<10)
	for {
		if int64(cap(buf)-len(buf)) < 512 {
			grow := min(max(int64(cap(buf)), step), 4<<20)
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

func (g *Gateway) serveIntegration(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/integrations/")
	name, suffix, _ := strings.Cut(rest, "/")
	cfg := g.cfg.Load()
	var in *gw.HTTPIntegration
	for i := range cfg.Integrations {
		if cfg.Integrations[i].Name == name {
			in = &cfg.Integrations[i]
		}
	}
	c := g.newCall(r, "integration", name)
	defer c.finish()
	if in == nil {
		c.deny(w, http.StatusNotFound, "unknown_integration", "no HTTP integration named "+clip(name), 0)
		return
	}
	if len(in.AllowedMethods) > 0 && !slices.Contains(in.AllowedMethods, r.Method) {
		c.deny(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("integration %s allows only %s (spec.integrations[].allowedMethods)",
			name, strings.Join(in.AllowedMethods, ", ")), 0)
		return
	}
	target, ok := upstreamURL(in.Endpoint, "/"+suffix, r.URL.RawQuery)
	if !ok {
		c.deny(w, http.StatusBadRequest, "bad_path", "the path leaves the integration's endpoint", 0)
		return
	}
	c.rec.Path = target.Path
	if isWebSocketUpgrade(r) {
		c.rec.Operation = "session"
		g.serveIntegrationSession(w, r, c, in, target)
		return
	}
	if !c.admitAudit(w) || !c.admitRequest(w) {
		return
	}
	g.mu.Lock()
	bucket := g.integBuckets[name]
	g.mu.Unlock()
	if ok, wait := bucket.Allow(); !ok {
		c.deny(w, http.StatusTooManyRequests, "integration_rate_limit", "the rate limit of integration "+name+" is reached", wait)
		return
	}
	if !g.integrationSlots.TryAcquire(1) {
		c.deny(w, http.StatusTooManyRequests, "integration_concurrency", "too many integration calls in flight; retry shortly", time.Second)
		return
	}
	defer g.integrationSlots.Release(1)
	br := g.breaker(in.Endpoint)
	ticket, ok := br.Allow()
	if !ok {
		c.deny(w, http.StatusServiceUnavailable, "circuit_open", "integration "+name+" is failing; its circuit is open", time.Second)
		return
	}
	secret, err := g.credential(in.CredentialFile).Value()
	if err != nil {
		g.log.Error("integration credential unreadable", "integration", name, "error", err.Error())
		c.deny(w, http.StatusServiceUnavailable, "credential_unavailable", "the integration's credential is not available", time.Second)
		return
	}
	// The body streams to the integration: it is not held in memory. Only a call
	// without a body can then be sent twice.
	var reqBody io.Reader = http.NoBody
	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	if hasBody {
		var sample []byte
		if c.cfg.Audit.RecordContent {
			sample = make([]byte, 0, 4*contentSample)
		}
		reqBody = &sampledBody{r: io.LimitReader(r.Body, maxRequestBody+1), sample: sample, limit: maxRequestBody}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	resp, attempts, errMsg := g.doWithRetries(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, r.Method, target.String(), reqBody)
		if err != nil {
			return nil, err
		}
		req.ContentLength = r.ContentLength
		if !hasBody {
			req.ContentLength = 0
		}
		req.Header = r.Header.Clone()
		stripRequestHeaders(req.Header)
		injectIntegrationAuth(in, req.Header, secret)
		req.Header.Set("X-Request-ID", c.rec.RequestID)
		return req, nil
	}, in.Endpoint, !hasBody && idempotent(r.Method))
	c.rec.Attempts = attempts
	if sb, ok := reqBody.(*sampledBody); ok {
		c.requestBytes = sb.n
		c.recordContent(sb.sample)
		if sb.tooLarge {
			br.Report(ticket, true)
			c.denyBody(w, http.StatusRequestEntityTooLarge)
			if resp != nil {
				_ = resp.Body.Close()
			}
			return
		}
	}
	if resp == nil {
		br.Failure(ticket)
		c.rec.Decision, c.rec.Reason, c.rec.Status = "failed", errMsg, http.StatusBadGateway
		writeError(w, http.StatusBadGateway, "upstream_unavailable", "integration "+name+" could not be reached", c.rec.RequestID)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	br.Report(ticket, !retryable(resp.StatusCode))
	c.rec.Decision, c.rec.Status, c.rec.Upstream = "allowed", resp.StatusCode, name
	scrub := newScrubber(secret)
	copyResponseHeaders(w.Header(), resp.Header)
	scrub.Header(w.Header())
	w.Header().Set("X-Request-ID", c.rec.RequestID)
	// 5xx bodies carry upstream internals; 401 and 403 bodies are where an upstream
	// echoes the credential it refused. None of them reach the agent.
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		w.Header().Del("Content-Length")
		w.Header().Del("Content-Type")
		kind := "upstream_error"
		if resp.StatusCode < 500 {
			kind = "upstream_refused"
		}
		writeError(w, resp.StatusCode, kind, "integration "+name+" answered "+strconv.Itoa(resp.StatusCode), c.rec.RequestID)
		return
	}
	w.Header().Del("Content-Length") // scrubbing can change it
	w.WriteHeader(resp.StatusCode)
	flusher, _ := w.(http.Flusher)
	aw := &agentWriter{w: w, flusher: flusher, scrub: scrub}
	buf := make([]byte, 32<<10)
	var left int64 = maxResponseBody
	for left > 0 && !aw.failed {
		n, err := resp.Body.Read(buf[:min(int64(len(buf)), left)])
		left -= int64(n)
		_ = aw.Write(buf[:n])
		if err != nil {
			break
		}
	}
	aw.close()
}

// sampledBody streams a request body through, counting it, keeping the start of it
// for the audit record and noting a body over the limit.
type sampledBody struct {
	r        io.Reader
	sample   []byte
	n, limit int64
	tooLarge bool
}

func (b *sampledBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.limit {
		b.tooLarge = true
		return 0, errors.New("request body too large")
	}
	if room := cap(b.sample) - len(b.sample); room > 0 {
		b.sample = append(b.sample, p[:min(n, room)]...)
	}
	return n, err
}

func injectIntegrationAuth(in *gw.HTTPIntegration, h http.Header, secret string) {
	if secret == "" {
		return
	}
	switch in.AuthType {
	case "header":
		h.Set(in.HeaderName, secret)
	case "basic":
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(secret)))
	default:
		h.Set("Authorization", "Bearer "+secret)
	}
}

// maxInformational is how many 1xx answers an upstream may send before its final one.
const maxInformational = 5

var errTooManyInformational = errors.New("too many informational (1xx) answers")

// doWithRetries sends a request and retries only where the upstream cannot have acted
// on it (a provider must never bill twice): a transport error before any of the
// request was written, or 429/503 with a Retry-After the upstream set, honoured. Calls that are
// safe to repeat (idempotent and bodiless) are retried on any transport error and on
// 429 or 5xx too. Backoff is exponential with full jitter, within ctx's deadline. The
// last response, if any, is returned open.
func (g *Gateway) doWithRetries(ctx context.Context, build func() (*http.Request, error), upstream string, safe bool) (*http.Response, int, string) {
	var lastMsg string
	for attempt := 0; ; attempt++ {
		req, err := build()
		if err != nil {
			return nil, attempt, "bad request"
		}
		var written atomic.Bool
		informational := 0
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteHeaders: func() { written.Store(true) },
			// net/http bounds the bytes of 1xx heads, not their number: an upstream may
			// send a few (100 Continue, 103 Early Hints), not a stream of them.
			Got1xxResponse: func(int, textproto.MIMEHeader) error {
				if informational++; informational > maxInformational {
					return errTooManyInformational
				}
				return nil
			},
		}))
		start := time.Now()
		resp, err := g.client.Do(req)
		g.metrics.upstreamLatency.WithLabelValues(host(upstream)).Observe(time.Since(start).Seconds())
		last := attempt >= g.opts.MaxRetries
		if err != nil {
			lastMsg = host(upstream) + ": " + neterr.Kind(err)
			if last || ctx.Err() != nil || (written.Load() && !safe) {
				return nil, attempt + 1, lastMsg
			}
			if !g.backoff(ctx, attempt, 0) {
				return nil, attempt + 1, lastMsg
			}
			continue
		}
		ra := resp.Header.Get("Retry-After")
		again := safe && retryable(resp.StatusCode) ||
			ra != "" && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable)
		if !again || last {
			return resp, attempt + 1, ""
		}
		wait := retryAfter(ra, g.opts.Now())
		drain(resp)
		lastMsg = fmt.Sprintf("%s: status %d", host(upstream), resp.StatusCode)
		if !g.backoff(ctx, attempt, wait) {
			return nil, attempt + 1, lastMsg
		}
	}
}

// backoff waits before the next attempt; false when ctx would end first.
func (g *Gateway) backoff(ctx context.Context, attempt int, floor time.Duration) bool {
	d := g.opts.BackoffBase << attempt
	d = time.Duration(rand.Int64N(int64(d) + 1)) // full jitter
	if floor > d {
		d = floor
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d < 0 {
		d = 0
	}
	if d > maxRetryAfter {
		d = maxRetryAfter
	}
	return d
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// upstreamErrorKind extracts the provider's error type (a short identifier such as
// "rate_limit_exceeded" or "RESOURCE_EXHAUSTED") and nothing else.
func upstreamErrorKind(resp *http.Response) string {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Code   any    `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &e)
	for _, k := range []string{e.Error.Type, e.Error.Status, fmt.Sprint(e.Error.Code)} {
		if k != "<nil>" && neterr.SafeKind(k) {
			return k
		}
	}
	return "upstream_error"
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

func host(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "upstream"
	}
	return u.Host
}
