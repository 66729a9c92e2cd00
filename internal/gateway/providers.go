package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
)

// Headers an agent might use to send a key of its own. They are always removed: the
// agent holds no key, and one it sends must not reach an upstream.
var credentialHeaders = []string{"Authorization", "X-Api-Key", "X-Goog-Api-Key", "Api-Key", "Proxy-Authorization", "Cookie"}

// Hop-by-hop headers are not forwarded.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func stripRequestHeaders(h http.Header) {
	for _, k := range credentialHeaders {
		h.Del(k)
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	// The gateway reads token usage from the answer, so it takes it uncompressed: an
	// agent's SDK asking for gzip would otherwise get spend that is never counted.
	h.Del("Accept-Encoding")
}

// injectModelAuth sets the provider's own authentication header.
func injectModelAuth(provider string, h http.Header, key string) {
	switch provider {
	case "gemini":
		h.Set("X-Goog-Api-Key", key)
	case "anthropic":
		h.Set("X-Api-Key", key)
		if h.Get("Anthropic-Version") == "" {
			h.Set("Anthropic-Version", "2023-06-01")
		}
	default: // openai, openai-compatible
		h.Set("Authorization", "Bearer "+key)
	}
}

// wireFamily groups providers that share one request format, so that failover only
// sends a request to an upstream that understands it.
func wireFamily(provider string) string {
	if provider == "openai-compatible" {
		return "openai"
	}
	return provider
}

// usage is the token count of one call.
type usage struct {
	Input, Output int64
}

// usageFromJSON reads token usage from a non-streamed response body or from one
// streamed event; ok is false when the body carries no usage.
func usageFromJSON(provider string, body []byte) (u usage, ok bool) {
	switch provider {
	case "gemini":
		var r struct {
			UsageMetadata *struct {
				PromptTokenCount     int64 `json:"promptTokenCount"`
				CandidatesTokenCount int64 `json:"candidatesTokenCount"`
				ThoughtsTokenCount   int64 `json:"thoughtsTokenCount"`
			} `json:"usageMetadata"`
		}
		if json.Unmarshal(body, &r) != nil || r.UsageMetadata == nil {
			return u, false
		}
		m := r.UsageMetadata
		return usage{Input: m.PromptTokenCount, Output: m.CandidatesTokenCount + m.ThoughtsTokenCount}, true
	case "anthropic":
		var r struct {
			Type  string `json:"type"`
			Usage *struct {
				InputTokens  int64 `json:"input_tokens"`
				OutputTokens int64 `json:"output_tokens"`
			} `json:"usage"`
			Message *struct {
				Usage *struct {
					InputTokens  int64 `json:"input_tokens"`
					OutputTokens int64 `json:"output_tokens"`
				} `json:"usage"`
			} `json:"message"`
		}
		if json.Unmarshal(body, &r) != nil {
			return u, false
		}
		if r.Message != nil && r.Message.Usage != nil { // stream: message_start
			return usage{Input: r.Message.Usage.InputTokens, Output: r.Message.Usage.OutputTokens}, true
		}
		if r.Usage != nil {
			return usage{Input: r.Usage.InputTokens, Output: r.Usage.OutputTokens}, true
		}
		return u, false
	default:
		var r struct {
			Usage *struct {
				PromptTokens     int64 `json:"prompt_tokens"`
				CompletionTokens int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(body, &r) != nil || r.Usage == nil {
			return u, false
		}
		return usage{Input: r.Usage.PromptTokens, Output: r.Usage.CompletionTokens}, true
	}
}

// mergeStreamUsage folds one streamed event's usage into the running total. Gemini and
// OpenAI report cumulative totals; Anthropic reports input in message_start and the
// cumulative output in message_delta.
func mergeStreamUsage(provider string, total *usage, event usage) {
	switch provider {
	case "anthropic":
		if event.Input > 0 {
			total.Input = event.Input
		}
		if event.Output > total.Output {
			total.Output = event.Output
		}
	default:
		*total = event
	}
}

// sseScanner extracts `data:` payloads from a Server-Sent Events stream as it passes
// through, without holding more than one line.
type sseScanner struct {
	line    bytes.Buffer
	onEvent func(data []byte)
}

func (s *sseScanner) Write(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if s.line.Len() < 1<<20 { // a runaway line is not usage data
				s.line.Write(p)
			}
			return
		}
		s.line.Write(p[:i])
		line := bytes.TrimRight(s.line.Bytes(), "\r")
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = bytes.TrimSpace(data)
			if len(data) > 0 && !bytes.Equal(data, []byte("[DONE]")) {
				s.onEvent(data)
			}
		}
		s.line.Reset()
		p = p[i+1:]
	}
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
}

// errorBody is the JSON error the gateway returns, shaped so that the official SDKs of
// every provider parse it: they all read error.message, and Gemini's error.code/status.
func errorBody(status int, kind, message, requestID string) []byte {
	b, _ := json.Marshal(map[string]any{
		"type": "error",
		"error": map[string]any{
			"code": status, "status": http.StatusText(status), "type": kind,
			"message": message, "request_id": requestID,
		},
	})
	return b
}
