package gateway

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// Headers an agent might use to send a key of its own. They are always removed: the
// agent holds no key, and one it sends must not reach an upstream.
// The account headers go too: with them an agent could bill the mounted key's calls to
// another organisation or project the key can reach (one without the spend limits
// the platform team set there).
var credentialHeaders = []string{"Authorization", "X-Api-Key", "X-Goog-Api-Key", "Api-Key", "Proxy-Authorization", "Cookie",
	"Openai-Organization", "Openai-Project", "X-Goog-User-Project"}

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
	for _, k := range overrideHeaders {
		h.Del(k)
	}
}

// overrideHeaders change what an upstream does with a request behind the gateway's
// checks: the method (Google's and many frameworks' method overrides), the fields of
// the answer (Google's field mask can leave usageMetadata out), provider beta features
// (Anthropic's MCP connector reaches hosts the NetworkPolicy never allowed).
var overrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Goog-Fieldmask", "Anthropic-Beta"}

// modelQuery keeps of an agent's query only the parameters the family's allowed
// operations need: Gemini's alt=sse (any other alt, such as proto, would hide the
// usage), Azure's api-version on openai-format endpoints, Anthropic's beta flag.
// Google's system parameters (fields, $alt, prettyPrint, ...) and anything else are
// dropped.
func modelQuery(family, rawQuery string) string {
	in, _ := url.ParseQuery(rawQuery)
	out := url.Values{}
	switch family {
	case "gemini":
		if in.Get("alt") == "sse" {
			out.Set("alt", "sse")
		}
	case "openai":
		if v := in.Get("api-version"); v != "" && len(v) <= 32 {
			out.Set("api-version", v)
		}
	case "anthropic":
		if in.Get("beta") == "true" {
			out.Set("beta", "true")
		}
	}
	return out.Encode()
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
