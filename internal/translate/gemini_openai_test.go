package translate

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	gemini := `{"contents":[{"role":"user","parts":[{"text":"hi "},{"text":"there"}]},{"role":"model","parts":[{"text":"hello"},{"text":"plan","thought":true}]},{"parts":[{"text":"and?"}]}],
		"systemInstruction":{"parts":[{"text":"Be brief."}]},"generationConfig":{"temperature":0.3,"topP":0.8,"maxOutputTokens":64,"stopSequences":["END"]},"safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_NONE"}]}`
	tests := []struct {
		name, from, suffix, query, body, to string
		wantPath, wantBody                  string
		stream                              bool
		refused                             error
		refusedText                         string
	}{
		{name: "gemini to openai", from: "gemini", suffix: "/v1beta/models/gemini-2.5-flash:generateContent", body: gemini, to: "openai",
			wantPath: "/chat/completions",
			wantBody: `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi there"},{"role":"assistant","content":"hello"},{"role":"user","content":"and?"}],"max_completion_tokens":64,"temperature":0.3,"top_p":0.8,"stop":["END"]}`},
		{name: "gemini stream to openai-compatible", from: "gemini", suffix: "/v1beta/models/m:streamGenerateContent", query: "alt=sse", body: `{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":32}}`, to: "openai-compatible",
			wantPath: "/chat/completions", stream: true,
			wantBody: `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":32,"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "gemini stream without sse", from: "gemini", suffix: "/v1beta/models/m:streamGenerateContent", body: `{"contents":[{"parts":[{"text":"hi"}]}]}`, to: "openai", refused: ErrUntranslatable, refusedText: "alt=sse"},
		{name: "gemini embeddings", from: "gemini", suffix: "/v1beta/models/m:embedContent", body: `{}`, to: "openai", refused: ErrUntranslatable, refusedText: "embedContent"},
		{name: "gemini tools", from: "gemini", suffix: "/v1beta/models/m:generateContent", body: `{"contents":[{"parts":[{"text":"hi"}]}],"tools":[{"functionDeclarations":[]}]}`, to: "openai", refused: ErrUntranslatable, refusedText: `"tools"`},
		{name: "gemini image", from: "gemini", suffix: "/v1beta/models/m:generateContent", body: `{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA=="}}]}]}`, to: "openai", refused: ErrUntranslatable, refusedText: "media"},
		{name: "gemini function response", from: "gemini", suffix: "/v1beta/models/m:generateContent", body: `{"contents":[{"role":"user","parts":[{"functionResponse":{"name":"f"}}]}]}`, to: "openai", refused: ErrUntranslatable, refusedText: "function call"},
		{name: "gemini json output", from: "gemini", suffix: "/v1beta/models/m:generateContent", body: `{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"responseMimeType":"application/json"}}`, to: "openai", refused: ErrUntranslatable, refusedText: "structured output"},
		{name: "gemini two candidates", from: "gemini", suffix: "/v1beta/models/m:generateContent", body: `{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"candidateCount":2}}`, to: "openai", refused: ErrUntranslatable, refusedText: "candidateCount"},
		{name: "openai to anthropic", from: "openai", suffix: "/chat/completions", body: `{"messages":[{"role":"user","content":"hi"}]}`, to: "anthropic",
			wantPath: "/v1/messages", wantBody: `{"model":"gpt-4o-mini","max_tokens":4096,"messages":[{"role":"user","content":"hi"}]}`},
		{name: "openai embeddings to anthropic", from: "openai", suffix: "/embeddings", body: `{}`, to: "anthropic", refused: ErrUntranslatable, refusedText: "/embeddings"},
		{name: "openai to gemini", from: "openai", suffix: "/chat/completions", body: `{}`, to: "gemini", refused: ErrUnsupportedPair},
		{name: "anthropic to openai", from: "anthropic", suffix: "/v1/messages", body: `{}`, to: "openai", refused: ErrUnsupportedPair},
		{name: "gemini to anthropic", from: "gemini", suffix: "/v1beta/models/m:generateContent", body: `{}`, to: "anthropic", refused: ErrUnsupportedPair},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Plan(tt.from, tt.suffix, tt.query, []byte(tt.body), tt.to, "gpt-4o-mini")
			if tt.refused != nil {
				if !errors.Is(err, tt.refused) || !strings.Contains(err.Error(), tt.refusedText) {
					t.Fatalf("error %v, want %v naming %q", err, tt.refused, tt.refusedText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Path != tt.wantPath || (got.Stream != nil) != tt.stream {
				t.Errorf("path %s stream %v", got.Path, got.Stream != nil)
			}
			assertJSONEqual(t, got.Body, tt.wantBody)
		})
	}
}

// TestOpenAIAnswerGivesOneCandidate: the request asked for one candidate, so an answer
// with several choices gives the first one alone, and one with none gives no candidate.
func TestOpenAIAnswerGivesOneCandidate(t *testing.T) {
	got, err := OpenAIChatToGemini([]byte(`{"id":"c1","model":"m","choices":[
		{"index":0,"message":{"role":"assistant","content":"first"},"finish_reason":"stop"},
		{"index":1,"message":{"role":"assistant","content":"second"},"finish_reason":"length"}]}`), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	assertJSONEqual(t, got, `{"candidates":[{"content":{"role":"model","parts":[{"text":"first"}]},"finishReason":"STOP","index":0}],"modelVersion":"m","responseId":"c1"}`)
	got, err = OpenAIChatToGemini([]byte(`{"id":"c2","model":"m","choices":[]}`), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	assertJSONEqual(t, got, `{"modelVersion":"m","responseId":"c2"}`)
}

func TestOpenAIAnswersBecomeGeminiAnswers(t *testing.T) {
	for _, tt := range []struct{ finish, want string }{{"stop", "STOP"}, {"length", "MAX_TOKENS"}, {"content_filter", "SAFETY"}} {
		got, err := OpenAIChatToGemini([]byte(`{"id":"c1","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"`+tt.finish+`"}],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}`), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		assertJSONEqual(t, got, `{"candidates":[{"content":{"role":"model","parts":[{"text":"hello"}]},"finishReason":"`+tt.want+`","index":0}],
			"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":500,"totalTokenCount":1500},"modelVersion":"gpt-4o-mini","responseId":"c1"}`)
	}
	s := &OpenAIStream{}
	var out strings.Builder
	for _, e := range []string{
		`{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`,
		`{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"hel"}}]}`,
		`{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}`,
		`{"id":"c1","model":"m","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}`,
		`{"error":{"type":"server_error","message":"boom at 10.0.0.1"}}`,
		`{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"after"}}]}`,
	} {
		out.Write(s.Event([]byte(e)))
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n\n"), "\n\n")
	want := []string{
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"hel"}]},"index":0}],"modelVersion":"m","responseId":"c1"}`,
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP","index":0}],"modelVersion":"m","responseId":"c1"}`,
		`{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":2,"totalTokenCount":12},"modelVersion":"m","responseId":"c1"}`,
		`{"error":{"code":502,"status":"UNAVAILABLE","message":"the fallback provider ended the stream with an error (server_error)"}}`,
	}
	if len(lines) != len(want) {
		t.Fatalf("stream:\n%s", out.String())
	}
	for i, w := range want {
		assertJSONEqual(t, []byte(strings.TrimPrefix(lines[i], "data: ")), w)
	}
}
