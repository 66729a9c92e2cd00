package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
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
}

func (g *Gateway) newCall(r *http.Request, route, target string) *call {
	cfg := g.cfg.Load()
	now := g.opts.Now()
	return &call{g: g, cfg: cfg, start: now, rec: auditRecord{
		Time: now.UTC(), VoiceAgent: cfg.VoiceAgent, Namespace: cfg.Namespace, Pod: g.opts.PodName,
		RequestID: requestID(r), Route: route, Target: target,
	}}
}

// deny answers 429 (or another status) without calling upstream, with Retry-After so
// that a well-behaved client backs off instead of hanging.
func (c *call) deny(w http.ResponseWriter, status int, limit, message string, retryAfter time.Duration) {
	c.g.metrics.rejections.WithLabelValues(limit).Inc()
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter.Seconds()+0.999)))
	}
	writeError(w, status, limit, message, c.rec.RequestID)
	c.rec.Decision, c.rec.Reason, c.rec.Status = "denied", limit+": "+message, status
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
	c.writeAudit()
}

// admitCommon applies the VoiceAgent-wide request bucket.
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
	if !c.admitAudit(w) || !c.admitCommon(w) {
		return
	}
	if ok, wait := g.tokens.AllowN(0); !ok {
		c.deny(w, http.StatusTooManyRequests, "tokens_per_minute", "the VoiceAgent's tokens-per-minute limit is reached; retry later", wait)
		return
	}
	if !g.concurrency.TryAcquire() {
		c.deny(w, http.StatusTooManyRequests, "concurrency", "too many model calls in flight for this VoiceAgent; retry shortly", time.Second)
		return
	}
	c.release = g.concurrency.Release
	if d := g.budget.Check(); !d.Allowed {
		g.metrics.budgetExceeded.Set(1)
		c.deny(w, http.StatusTooManyRequests, "budget", d.Reason, d.ResetAt.Sub(g.opts.Now()))
		return
	} else if d.Alert || d.Exceeded {
		c.rec.BudgetAlert = true
		g.metrics.budgetAlert.Set(1)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil || len(body) > maxRequestBody {
		c.deny(w, http.StatusRequestEntityTooLarge, "request_too_large", "request body too large or unreadable", 0)
		return
	}
	c.recordContent(body)
	suffix := strings.TrimPrefix(r.URL.Path, "/model")
	family := wireFamily(primary.Provider)
	var lastErr string
	for i, m := range cfg.Models {
		path, query, upBody := suffix, r.URL.RawQuery, body
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
		done, msg := c.tryModel(w, r, m, path, query, upBody, tr)
		if done {
			return
		}
		lastErr = msg
	}
	c.rec.Decision, c.rec.Reason = "failed", lastErr
	c.rec.Status = http.StatusBadGateway
	writeError(w, http.StatusBadGateway, "upstream_unavailable", "no model upstream could serve the call: "+lastErr, c.rec.RequestID)
}

// tryModel calls one model upstream with retries. It returns done once a response was
// written to the client; otherwise the caller fails over to the next upstream.
func (c *call) tryModel(w http.ResponseWriter, r *http.Request, m gw.Model, suffix, rawQuery string, body []byte, tr *translate.Translation) (bool, string) {
	br := c.g.breaker(m.Endpoint)
	if !br.Allow() {
		c.g.metrics.breakerState.WithLabelValues(host(m.Endpoint)).Set(1)
		return false, host(m.Endpoint) + ": circuit open"
	}
	key, err := c.g.credential(m.CredentialFile).Value()
	if err != nil {
		c.g.log.Error("model credential unreadable", "upstream", host(m.Endpoint), "error", err.Error())
		br.Failure()
		return false, host(m.Endpoint) + ": credential unavailable"
	}
	ctx, cancel := context.WithTimeout(r.Context(), m.Timeout.Duration)
	defer cancel()
	target, err := joinURL(m.Endpoint, suffix, rawQuery)
	if err != nil {
		return false, "bad upstream URL"
	}
	resp, attempts, errMsg := c.g.doWithRetries(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, r.Method, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = r.Header.Clone()
		stripRequestHeaders(req.Header)
		injectModelAuth(m.Provider, req.Header, key)
		req.Header.Set("X-Request-ID", c.rec.RequestID)
		return req, nil
	}, true, m.Endpoint)
	c.rec.Attempts += attempts
	if resp == nil || retryable(resp.StatusCode) {
		br.Failure()
		c.g.metrics.breakerState.WithLabelValues(host(m.Endpoint)).Set(float64(br.State()))
		if resp != nil {
			drain(resp)
			errMsg = fmt.Sprintf("%s: status %d", host(m.Endpoint), resp.StatusCode)
		}
		return false, errMsg
	}
	defer resp.Body.Close()
	br.Success()
	c.g.metrics.breakerState.WithLabelValues(host(m.Endpoint)).Set(0)
	c.rec.Upstream = m.Provider + "/" + m.Name
	c.relay(w, resp, m, tr)
	return true, ""
}

// relay copies the upstream response to the agent, counting tokens and spend as it
// passes. With tr the answer comes from a fallback of another format: it is translated
// back into the agent's format, usage is read from the fallback's own answer, and no
// upstream header is passed on. Error bodies are replaced: upstream detail goes nowhere
// near the agent.
func (c *call) relay(w http.ResponseWriter, resp *http.Response, m gw.Model, tr *translate.Translation) {
	c.rec.Decision, c.rec.Status = "allowed", resp.StatusCode
	if tr == nil {
		copyResponseHeaders(w.Header(), resp.Header)
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
	var total usage
	if isEventStream(resp.Header) && (tr == nil || tr.Stream != nil) {
		var stream translate.StreamTranslator
		if tr != nil {
			stream = tr.Stream(now)
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(resp.StatusCode)
		flusher, _ := w.(http.Flusher)
		failed := false
		send := func(p []byte) {
			if _, err := w.Write(p); err != nil {
				failed = true
			} else if flusher != nil {
				flusher.Flush()
			}
		}
		sc := &sseScanner{onEvent: func(data []byte) {
			if u, ok := usageFromJSON(m.Provider, data); ok {
				mergeStreamUsage(m.Provider, &total, u)
			}
			if stream != nil && !failed {
				if out := stream.Event(data); len(out) > 0 {
					send(out)
				}
			}
		}}
		buf := make([]byte, 32<<10)
		var readErr error
		for !failed {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				sc.Write(buf[:n])
				if stream == nil {
					send(buf[:n])
				}
			}
			if err != nil {
				readErr = err
				break
			}
		}
		// A stream's usage is known only at its end: its record follows it.
		c.account(total, m)
		c.abortIfCutShort(readErr, stream == nil || stream.Ended())
		return
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		c.rec.Reason = "upstream body cut short"
	}
	total, _ = usageFromJSON(m.Provider, data)
	c.account(total, m)
	if tr != nil {
		if data, err = tr.Answer(data, now); err != nil {
			c.rec.Status, c.rec.Reason = http.StatusBadGateway, "fallback answer not translatable"
			writeError(w, http.StatusBadGateway, "upstream_error", "the fallback provider's answer could not be read", c.rec.RequestID)
			return
		}
		w.Header().Set("Content-Type", "application/json")
	}
	c.finish()
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(data)
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

// account charges tokens and spend after the call.
func (c *call) account(u usage, m gw.Model) {
	c.rec.InputTokens, c.rec.OutputToks = u.Input, u.Output
	if u.Input+u.Output > 0 {
		c.g.tokens.Charge(float64(u.Input + u.Output))
		c.g.metrics.tokens.WithLabelValues("input").Add(float64(u.Input))
		c.g.metrics.tokens.WithLabelValues("output").Add(float64(u.Output))
	}
	if m.Pricing == nil {
		return
	}
	in, _ := budget.ParseMicros(m.Pricing.InputPerMillionTokens)
	out, _ := budget.ParseMicros(m.Pricing.OutputPerMillionTokens)
	cost := budget.Cost(u.Input, u.Output, in, out)
	c.rec.CostUSD = cost.String()
	if err := c.g.budget.Add(cost); err != nil {
		c.g.log.Error("spend not persisted", "error", err.Error())
	}
	c.g.metrics.spendUSD.Add(float64(cost) / 1e6)
}

func (c *call) recordContent(body []byte) {
	if !c.cfg.Audit.RecordContent {
		return
	}
	if len(body) > contentSample {
		body = body[:contentSample]
	}
	s := string(body)
	if c.cfg.Audit.RedactPII {
		s = pii.Redact(s)
	}
	c.rec.Content = s
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
	if !c.admitAudit(w) {
		return
	}
	if in == nil {
		c.deny(w, http.StatusNotFound, "unknown_integration", "no HTTP integration named "+strconv.Quote(name), 0)
		return
	}
	if !c.admitCommon(w) {
		return
	}
	g.mu.Lock()
	bucket := g.integBuckets[name]
	g.mu.Unlock()
	if ok, wait := bucket.Allow(); !ok {
		c.deny(w, http.StatusTooManyRequests, "integration_rate_limit", "the rate limit of integration "+name+" is reached", wait)
		return
	}
	br := g.breaker(in.Endpoint)
	if !br.Allow() {
		c.deny(w, http.StatusServiceUnavailable, "circuit_open", "integration "+name+" is failing; its circuit is open", time.Second)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil || len(body) > maxRequestBody {
		c.deny(w, http.StatusRequestEntityTooLarge, "request_too_large", "request body too large or unreadable", 0)
		return
	}
	c.recordContent(body)
	secret, err := g.credential(in.CredentialFile).Value()
	if err != nil {
		g.log.Error("integration credential unreadable", "integration", name, "error", err.Error())
		c.deny(w, http.StatusServiceUnavailable, "credential_unavailable", "the integration's credential is not available", time.Second)
		return
	}
	target, err := joinURL(in.Endpoint, "/"+suffix, r.URL.RawQuery)
	if err != nil {
		c.deny(w, http.StatusBadRequest, "bad_path", "bad path", 0)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	resp, attempts, errMsg := g.doWithRetries(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, r.Method, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = r.Header.Clone()
		stripRequestHeaders(req.Header)
		injectIntegrationAuth(in, req.Header, secret)
		req.Header.Set("X-Request-ID", c.rec.RequestID)
		return req, nil
	}, idempotent(r.Method), in.Endpoint)
	c.rec.Attempts = attempts
	if resp == nil {
		br.Failure()
		c.rec.Decision, c.rec.Reason, c.rec.Status = "failed", errMsg, http.StatusBadGateway
		writeError(w, http.StatusBadGateway, "upstream_unavailable", "integration "+name+" could not be reached", c.rec.RequestID)
		return
	}
	defer resp.Body.Close()
	if retryable(resp.StatusCode) {
		br.Failure()
	} else {
		br.Success()
	}
	c.rec.Decision, c.rec.Status, c.rec.Upstream = "allowed", resp.StatusCode, name
	copyResponseHeaders(w.Header(), resp.Header)
	w.Header().Set("X-Request-ID", c.rec.RequestID)
	if resp.StatusCode >= 500 {
		w.Header().Del("Content-Length")
		writeError(w, resp.StatusCode, "upstream_error", "integration "+name+" failed", c.rec.RequestID)
		return
	}
	c.finish() // the record is complete: on disk before the answer
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, maxResponseBody))
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

// doWithRetries sends a request, retrying connection errors, 429 and 5xx with
// exponential backoff and full jitter, honouring the upstream's Retry-After, within
// ctx's deadline. The last response, if any, is returned open.
func (g *Gateway) doWithRetries(ctx context.Context, build func() (*http.Request, error), mayRetry bool, upstream string) (*http.Response, int, string) {
	var lastMsg string
	for attempt := 0; ; attempt++ {
		req, err := build()
		if err != nil {
			return nil, attempt, "bad request"
		}
		start := time.Now()
		resp, err := g.client.Do(req)
		g.metrics.upstreamLatency.WithLabelValues(host(upstream)).Observe(time.Since(start).Seconds())
		last := !mayRetry || attempt >= g.opts.MaxRetries
		if err != nil {
			lastMsg = host(upstream) + ": " + neterr.Kind(err)
			if last || ctx.Err() != nil {
				return nil, attempt + 1, lastMsg
			}
			if !g.backoff(ctx, attempt, 0) {
				return nil, attempt + 1, lastMsg
			}
			continue
		}
		if !retryable(resp.StatusCode) || last {
			return resp, attempt + 1, ""
		}
		wait := retryAfter(resp.Header.Get("Retry-After"), g.opts.Now())
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

var droppedResponseHeaders = []string{"Set-Cookie", "Server", "Via", "Alt-Svc", "X-Powered-By"}

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

// joinURL appends the agent's path to the upstream base URL, dropping any "key" query
// parameter (Gemini's way of passing a key in the URL).
func joinURL(base, suffix, rawQuery string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/" + strings.TrimLeft(suffix, "/")
	q, _ := url.ParseQuery(rawQuery)
	q.Del("key")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func host(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "upstream"
	}
	return u.Host
}
