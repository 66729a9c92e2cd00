package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/translate"
)

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
	body, releaseBody, status := g.readBody(r.Body, maxRequestBody, r.ContentLength)
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
	if refusedKey(resp.StatusCode) {
		c.g.credential(m.CredentialFile).invalidate()
	}
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
	now := c.g.opts.Clock.Now()
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
		head, complete, release, status := c.g.readPrefix(resp.Body, smallAnswer, resp.ContentLength)
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
	data, release, status := c.g.readBody(resp.Body, maxResponseBody, resp.ContentLength)
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
		c.g.tokenCount.add(c.g.opts.Clock.Now(), u.total())
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
