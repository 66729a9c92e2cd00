package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

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
	if refusedKey(resp.StatusCode) {
		g.credential(in.CredentialFile).invalidate()
	}
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
