package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// What the agent may do with the mounted key. The agent is on the wrong side of the
// boundary: a key that can list, upload, fine-tune, batch or delete would give a
// taken-over agent every power the key has, unmetered. Only inference operations pass,
// each named, for each provider family; anything else is refused with 403 naming the
// operation, unless the VoiceAgent opens it in spec.model.extraOperations.

// operation is one allowed method and path pattern (path.Match syntax, relative to the
// model endpoint: "*" is one path segment or part of one).
type operation struct {
	Name    string
	Method  string
	Pattern string
	// ModelIn says where the request names its model: "path" (Gemini's
	// models/<model>:<method>), "body" (a JSON "model" field), or "" (not pinned: the
	// request's model is not one the gateway prices, such as a multipart upload).
	ModelIn string
	// Priced operations are charged from their usage, or from an estimate.
	Priced bool
}

var geminiVersions = []string{"v1", "v1beta", "v1alpha"}

// inferenceOperations are the operations each wire family allows by default.
var inferenceOperations = map[string][]operation{
	"openai": {
		{Name: "chat.completions", Method: http.MethodPost, Pattern: "/chat/completions", ModelIn: "body", Priced: true},
		{Name: "responses", Method: http.MethodPost, Pattern: "/responses", ModelIn: "body", Priced: true},
		{Name: "embeddings", Method: http.MethodPost, Pattern: "/embeddings", ModelIn: "", Priced: true},
		{Name: "audio.transcriptions", Method: http.MethodPost, Pattern: "/audio/transcriptions", Priced: true},
		{Name: "audio.translations", Method: http.MethodPost, Pattern: "/audio/translations", Priced: true},
		{Name: "audio.speech", Method: http.MethodPost, Pattern: "/audio/speech", Priced: true},
		{Name: "realtime", Method: http.MethodGet, Pattern: "/realtime", Priced: true},
	},
	"gemini": geminiOperations(),
	"anthropic": {
		{Name: "messages", Method: http.MethodPost, Pattern: "/v1/messages", ModelIn: "body", Priced: true},
		{Name: "messages.count_tokens", Method: http.MethodPost, Pattern: "/v1/messages/count_tokens"},
	},
}

func geminiOperations() []operation {
	var ops []operation
	for _, v := range geminiVersions {
		ops = append(ops,
			operation{Name: "generateContent", Method: http.MethodPost, Pattern: "/" + v + "/models/*:generateContent", ModelIn: "path", Priced: true},
			operation{Name: "streamGenerateContent", Method: http.MethodPost, Pattern: "/" + v + "/models/*:streamGenerateContent", ModelIn: "path", Priced: true},
			operation{Name: "countTokens", Method: http.MethodPost, Pattern: "/" + v + "/models/*:countTokens"},
			operation{Name: "embedContent", Method: http.MethodPost, Pattern: "/" + v + "/models/*:embedContent", Priced: true},
			operation{Name: "batchEmbedContents", Method: http.MethodPost, Pattern: "/" + v + "/models/*:batchEmbedContents", Priced: true},
		)
	}
	for _, v := range []string{"v1beta", "v1alpha"} {
		ops = append(ops, operation{Name: "live", Method: http.MethodGet,
			Pattern: "/ws/google.ai.generativelanguage." + v + ".GenerativeService.BidiGenerateContent", Priced: true})
	}
	return ops
}

// findOperation returns the operation of family (and the VoiceAgent's extra ones) that
// method and p match.
func findOperation(family string, extra []gw.Operation, method, p string) (operation, bool) {
	for _, op := range inferenceOperations[family] {
		if op.Method == method && patternMatch(op.Pattern, p) {
			return op, true
		}
	}
	for _, e := range extra {
		if e.Method == method && patternMatch(e.Path, p) {
			return operation{Name: "extra " + e.Method + " " + e.Path, Method: e.Method, Pattern: e.Path, Priced: true}, true
		}
	}
	return operation{}, false
}

func patternMatch(pattern, p string) bool {
	ok, err := path.Match(pattern, p)
	return err == nil && ok
}

// requestBody is one reading of a model request's JSON body, shared by the checks that
// need it (provider-side features, the model, stream options) so that a call decodes
// its body once.
type requestBody struct {
	raw    []byte
	valid  bool // json.Valid: nothing after the object, no bad token anywhere
	object bool // a JSON object at the top
	// fields by their exact key; nil when a key occurs twice (the gateway and the
	// provider could read different ones).
	fields map[string]json.RawMessage
}

func readRequestBody(body []byte) requestBody {
	rb := requestBody{raw: body, valid: json.Valid(body)}
	if rb.valid {
		rb.fields, rb.object = topLevelFields(body)
	}
	return rb
}

// model is the body's "model" member, "" when there is none or when readers of the
// body could disagree on it: the key must be "model" exactly (decoding into a struct
// would also take "Model" or "MODEL", which the provider ignores) and named once
// (parsers differ on which of two they keep).
func (rb requestBody) model() string {
	var m string
	if rb.fields == nil || json.Unmarshal(rb.fields["model"], &m) != nil {
		return ""
	}
	return m
}

// requestModel is the model a request of op names, "" when it names none.
func requestModel(op operation, p string, body []byte) string {
	return readRequestBody(body).requestModel(op, p)
}

func (rb requestBody) requestModel(op operation, p string) string {
	switch op.ModelIn {
	case "path":
		i := strings.Index(p, "/models/")
		if i < 0 {
			return ""
		}
		rest := p[i+len("/models/"):]
		if j := strings.IndexByte(rest, ':'); j >= 0 {
			return rest[:j]
		}
		return rest
	case "body":
		return rb.model()
	}
	return ""
}

// bodyModel is the "model" member of a JSON object body (see requestBody.model).
func bodyModel(body []byte) string { return readRequestBody(body).model() }

// pathRefusal says why an agent's path is refused, "" when it is acceptable. The
// agent's path must mean one thing to every parser between the agent and the upstream:
// no dot segments (decoded or not), no encoded slash or backslash, no backslash, no
// empty segment, no control character, no percent sign left after one decoding (a
// double-encoded dot), and no ';' (path parameters some servers strip before routing).
func pathRefusal(escaped string) string {
	if escaped == "" || escaped[0] != '/' {
		return "the path must start with /"
	}
	lower := strings.ToLower(escaped)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		return "encoded slashes and backslashes are not allowed in the path"
	}
	decoded, err := url.PathUnescape(escaped)
	if err != nil {
		return "the path is not validly percent-encoded"
	}
	for _, c := range []byte(decoded) {
		switch {
		case c < 0x20 || c == 0x7f:
			return "control characters are not allowed in the path"
		case c == '\\':
			return "backslashes are not allowed in the path"
		case c == '%':
			return "the path is encoded more than once"
		case c == ';':
			return "path parameters (;) are not allowed"
		}
	}
	segs := strings.Split(decoded[1:], "/")
	for i, s := range segs {
		switch {
		case s == "." || s == "..":
			return "dot segments are not allowed in the path"
		case s == "" && i != len(segs)-1:
			return "empty path segments are not allowed"
		}
	}
	return ""
}

// requestRefusal applies the checks every route shares before any routing: methods a
// proxy must never pass (CONNECT tunnels, TRACE echoes headers) and request targets
// other than origin-form ("http://host/..." or "*").
func requestRefusal(r *http.Request) string {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		return "method " + r.Method + " is not allowed through the gateway"
	}
	if r.URL.IsAbs() || r.URL.Host != "" || !strings.HasPrefix(r.RequestURI, "/") {
		return "only origin-form request targets (a path) are allowed"
	}
	return pathRefusal(r.URL.EscapedPath())
}

// upstreamURL joins the endpoint and the agent's (already checked) decoded suffix and
// makes sure the result is still under the endpoint's path, whatever the suffix holds.
// Credential-carrying query parameters (Gemini's key=, access_token=) are dropped.
func upstreamURL(endpoint, suffix, rawQuery string) (*url.URL, bool) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, false
	}
	base := strings.TrimRight(u.Path, "/")
	joined := base + "/" + strings.TrimLeft(suffix, "/")
	if clean := path.Clean(joined); clean != strings.TrimRight(joined, "/") && clean != joined {
		return nil, false
	}
	if !strings.HasPrefix(joined, base+"/") {
		return nil, false
	}
	u.Path, u.RawPath = joined, ""
	q, _ := url.ParseQuery(rawQuery)
	q.Del("key")
	q.Del("access_token")
	u.RawQuery = q.Encode()
	return u, true
}

// refusal says why a model request's body is refused, "" when it may go. A body
// may ask the provider for things the gateway cannot meter or that leave the
// VoiceAgent's egress policy: tools the provider runs itself (web search, URL fetch,
// code execution, remote MCP servers), which reach hosts the NetworkPolicy never
// allowed; background runs, answered "queued" with no usage; priority tiers billed
// above the configured prices. A top-level field named twice is refused too: the
// gateway and the provider could read different ones.
func (rb requestBody) refusal(family string, op operation) string {
	if !op.Priced || op.ModelIn != "body" && op.ModelIn != "path" {
		return ""
	}
	fields := rb.fields
	if !rb.object {
		return "" // not a JSON object: the provider refuses it
	}
	if fields == nil {
		return "a top-level field of the request is named twice"
	}
	switch family {
	case "openai":
		var background bool
		if json.Unmarshal(fields["background"], &background) == nil && background {
			return "background runs are not allowed: their usage is not in the answer"
		}
		var tier string
		if json.Unmarshal(fields["service_tier"], &tier) == nil && tier != "" && tier != "auto" && tier != "default" {
			return fmt.Sprintf("service_tier %s is not allowed: it is billed above spec.model.pricing", clipQuoted(tier))
		}
		var tools []struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(fields["tools"], &tools)
		for _, t := range tools {
			if t.Type != "function" && t.Type != "custom" {
				return providerToolRefusal(t.Type)
			}
		}
	case "gemini":
		var tools []map[string]json.RawMessage
		_ = json.Unmarshal(fields["tools"], &tools)
		for _, t := range tools {
			for k := range t {
				if k != "functionDeclarations" && k != "function_declarations" {
					return providerToolRefusal(k)
				}
			}
		}
	case "anthropic":
		if _, ok := fields["mcp_servers"]; ok {
			return providerToolRefusal("mcp_servers")
		}
		if _, ok := fields["container"]; ok {
			return providerToolRefusal("container")
		}
		var tools []struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(fields["tools"], &tools)
		for _, t := range tools {
			for _, server := range []string{"web_search", "web_fetch", "code_execution", "mcp"} {
				if strings.HasPrefix(t.Type, server) {
					return providerToolRefusal(t.Type)
				}
			}
		}
	}
	return ""
}

func providerToolRefusal(kind string) string {
	return fmt.Sprintf("tool %s runs at the provider, outside the VoiceAgent's egress policy and metering; only function tools the agent runs are allowed", clipQuoted(kind))
}

func clipQuoted(v string) string {
	if len(v) > 64 {
		v = v[:64]
	}
	return strconv.Quote(v)
}

// topLevelFields are the members of a JSON object body by their exact key; ok is false
// when the body is not an object, fields nil when a key occurs twice.
func topLevelFields(body []byte) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, _ := k.(string)
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return nil, false
		}
		if _, dup := fields[key]; dup {
			return nil, true
		}
		fields[key] = v
	}
	return fields, true
}
