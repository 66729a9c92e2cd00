package gateway

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeProviderUpstream is a hand-written stand-in for the Gemini, OpenAI and Anthropic
// APIs, which cannot be reached from here. It speaks each provider's wire format
// (plain JSON and Server-Sent Events), reports fixed token usage, and records the
// credentials it receives so that tests can assert the gateway injected the mounted
// key and nothing the agent sent.
type fakeProviderUpstream struct {
	*httptest.Server
	wantKey string

	mu       sync.Mutex
	keysSeen []string
	// requests are the head of every request received (target and every header), for
	// tests asserting that something never reached an upstream.
	requests []string
	bodies   []string // request bodies that passed the key check
	paths    []string // and their paths

	cutStreams bool // Anthropic streams end before message_stop
	calls      atomic.Int64
	// failNext makes the next N calls answer with failStatus.
	failNext   atomic.Int64
	failStatus int
	retryAfter string
}

const (
	fakeInputTokens  = 1000
	fakeOutputTokens = 500
)

func newFakeProviderUpstream(t *testing.T, wantKey string) *fakeProviderUpstream {
	f := &fakeProviderUpstream{wantKey: wantKey, failStatus: http.StatusServiceUnavailable}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// requestHead is a request's target and headers as received, for searching.
func requestHead(r *http.Request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", r.Method, r.URL.String())
	for k, vs := range r.Header {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(vs, ", "))
	}
	return b.String()
}

func (f *fakeProviderUpstream) heads() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeProviderUpstream) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.keysSeen...)
}

func (f *fakeProviderUpstream) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	f.mu.Lock()
	f.requests = append(f.requests, requestHead(r))
	f.mu.Unlock()
	// As the providers do, JSON answers are compressed for a client that asks.
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		gz := &gzipJSONWriter{ResponseWriter: w}
		defer gz.Close()
		w = gz
	}
	var key string
	switch {
	case strings.HasPrefix(r.URL.Path, "/v1beta/"):
		key = r.Header.Get("X-Goog-Api-Key")
	case r.URL.Path == "/v1/messages", strings.HasPrefix(r.URL.Path, "/crm"):
		key = r.Header.Get("X-Api-Key")
	default:
		key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	f.mu.Lock()
	f.keysSeen = append(f.keysSeen, key)
	f.mu.Unlock()
	if key != f.wantKey || r.URL.Query().Get("key") != "" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"code":401,"message":"API key '%s' not valid at internal-host-7.corp:8443","status":"UNAUTHENTICATED"}}`, key)
		return
	}
	if f.failNext.Load() > 0 {
		f.failNext.Add(-1)
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		w.WriteHeader(f.failStatus)
		_, _ = io.WriteString(w, `{"error":{"message":"overloaded at 10.3.4.5 goroutine 12 [running]: panic","type":"overloaded_error"}}`)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, string(body))
	f.paths = append(f.paths, r.URL.Path)
	f.mu.Unlock()
	var req struct {
		Stream        bool `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	_ = json.Unmarshal(body, &req)
	// As OpenAI documents it: a chat stream carries usage only when the request asks
	// for it with stream_options.include_usage (the official SDKs do not set it).
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	switch {
	case strings.HasSuffix(r.URL.Path, ":generateContent"):
		writeJSON(w, `{"candidates":[{"content":{"role":"model","parts":[{"text":"hello from gemini"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":500,"totalTokenCount":1500}}`)
	case strings.HasSuffix(r.URL.Path, ":streamGenerateContent") && r.URL.Query().Get("alt") != "sse":
		// Without alt=sse, Gemini streams one JSON array of chunks.
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		for i, chunk := range []string{
			`[{"candidates":[{"content":{"role":"model","parts":[{"text":"hello "}]}}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":200}}`,
			`,` + "\r\n" + `{"candidates":[{"content":{"role":"model","parts":[{"text":"from \"usage\": gemini"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":500,"totalTokenCount":1500}}`,
			`]`,
		} {
			_, _ = io.WriteString(w, chunk)
			if i < 2 {
				w.(http.Flusher).Flush()
			}
		}
	case strings.HasSuffix(r.URL.Path, ":streamGenerateContent"):
		sse(w, "", []string{
			`{"candidates":[{"content":{"role":"model","parts":[{"text":"hello "}]}}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":200}}`,
			`{"candidates":[{"content":{"role":"model","parts":[{"text":"from gemini"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":500,"totalTokenCount":1500}}`,
		})
	case r.URL.Path == "/v1/chat/completions" && !req.Stream:
		writeJSON(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello from openai"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}`)
	case r.URL.Path == "/v1/chat/completions":
		chunks := []string{
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"hello "}}]}`,
			`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"from openai"},"finish_reason":"stop"}]}`,
		}
		if includeUsage {
			chunks = append(chunks, `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}`)
		}
		sse(w, "", append(chunks, `[DONE]`))
	case r.URL.Path == "/v1/responses" && !req.Stream:
		writeJSON(w, `{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"gpt-4o-mini","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"hello from responses","annotations":[]}]}],"usage":{"input_tokens":1000,"input_tokens_details":{"cached_tokens":0},"output_tokens":500,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1500}}`)
	case r.URL.Path == "/v1/responses":
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range []struct{ name, data string }{
			{"response.created", `{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-4o-mini","output":[],"usage":null}}`},
			{"response.output_text.delta", `{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"hello"}`},
			{"response.completed", `{"type":"response.completed","sequence_number":2,"response":{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"gpt-4o-mini","output":[],"usage":{"input_tokens":1000,"input_tokens_details":{"cached_tokens":0},"output_tokens":500,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1500}}}`},
		} {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.name, e.data)
			w.(http.Flusher).Flush()
		}
	case r.URL.Path == "/v1/messages" && !req.Stream:
		writeJSON(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"hello from anthropic"}],"stop_reason":"end_turn","usage":{"input_tokens":1000,"output_tokens":500}}`)
	case r.URL.Path == "/v1/messages":
		w.Header().Set("Content-Type", "text/event-stream")
		events := []struct{ name, data string }{
			{"message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"usage":{"input_tokens":1000,"output_tokens":1}}}`},
			{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello from anthropic"}}`},
			{"content_block_stop", `{"type":"content_block_stop","index":0}`},
			{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":500}}`},
			{"message_stop", `{"type":"message_stop"}`},
		}
		if f.cutStreams {
			events = events[:3] // the stream breaks off before its end
		}
		for _, e := range events {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.name, e.data)
			w.(http.Flusher).Flush()
		}
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":{"message":"no route","type":"not_found"}}`)
	}
}

func writeJSON(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, body)
}

func sse(w http.ResponseWriter, _ string, datas []string) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, d := range datas {
		fmt.Fprintf(w, "data: %s\n\n", d)
		w.(http.Flusher).Flush()
	}
}

// gzipJSONWriter compresses a JSON answer; other answers (event streams) pass as they are.
type gzipJSONWriter struct {
	http.ResponseWriter
	gz      *gzip.Writer
	decided bool
}

func (g *gzipJSONWriter) decide() {
	if g.decided {
		return
	}
	g.decided = true
	if strings.HasPrefix(g.Header().Get("Content-Type"), "application/json") {
		g.Header().Set("Content-Encoding", "gzip")
		g.Header().Del("Content-Length")
		g.gz = gzip.NewWriter(g.ResponseWriter)
	}
}

func (g *gzipJSONWriter) WriteHeader(code int) {
	g.decide()
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipJSONWriter) Write(p []byte) (int, error) {
	g.decide()
	if g.gz != nil {
		return g.gz.Write(p)
	}
	return g.ResponseWriter.Write(p)
}

func (g *gzipJSONWriter) Flush() {
	if g.gz != nil {
		_ = g.gz.Flush()
	}
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (g *gzipJSONWriter) Close() {
	if g.gz != nil {
		_ = g.gz.Close()
	}
}
