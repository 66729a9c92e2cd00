package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"google.golang.org/genai"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// The official SDKs are the agent here: pointed at the gateway by base URL, with a key
// of their own that the gateway must strip. The fake upstream refuses any key but the
// mounted one, so a passing call proves the injection.
const agentKey = "agent-supplied-key-must-not-leak"

func TestOfficialSDKsThroughTheGateway(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		provider string
		call     func(t *testing.T, baseURL string) string
	}{
		{"gemini", "gemini", func(t *testing.T, base string) string {
			c, err := genai.NewClient(ctx, &genai.ClientConfig{APIKey: agentKey, Backend: genai.BackendGeminiAPI,
				HTTPOptions: genai.HTTPOptions{BaseURL: base + "/model/"}})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Models.GenerateContent(ctx, "gemini-2.5-flash", genai.Text("hi"), nil)
			if err != nil {
				t.Fatal(err)
			}
			return resp.Text()
		}},
		{"gemini stream", "gemini", func(t *testing.T, base string) string {
			c, err := genai.NewClient(ctx, &genai.ClientConfig{APIKey: agentKey, Backend: genai.BackendGeminiAPI,
				HTTPOptions: genai.HTTPOptions{BaseURL: base + "/model/"}})
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for resp, err := range c.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text("hi"), nil) {
				if err != nil {
					t.Fatal(err)
				}
				b.WriteString(resp.Text())
			}
			return b.String()
		}},
		{"openai", "openai", func(t *testing.T, base string) string {
			c := openai.NewClient(openaioption.WithBaseURL(base+"/model/"), openaioption.WithAPIKey(agentKey))
			resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			})
			if err != nil {
				t.Fatal(err)
			}
			return resp.Choices[0].Message.Content
		}},
		{"openai stream", "openai", func(t *testing.T, base string) string {
			c := openai.NewClient(openaioption.WithBaseURL(base+"/model/"), openaioption.WithAPIKey(agentKey))
			stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			})
			var b strings.Builder
			for stream.Next() {
				for _, ch := range stream.Current().Choices {
					b.WriteString(ch.Delta.Content)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			return b.String()
		}},
		{"anthropic", "anthropic", func(t *testing.T, base string) string {
			c := anthropic.NewClient(anthropicoption.WithBaseURL(base+"/model/"), anthropicoption.WithAPIKey(agentKey))
			msg, err := c.Messages.New(ctx, anthropic.MessageNewParams{Model: "claude-haiku-4-5", MaxTokens: 100,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
			if err != nil {
				t.Fatal(err)
			}
			return msg.Content[0].Text
		}},
		{"anthropic stream", "anthropic", func(t *testing.T, base string) string {
			c := anthropic.NewClient(anthropicoption.WithBaseURL(base+"/model/"), anthropicoption.WithAPIKey(agentKey))
			stream := c.Messages.NewStreaming(ctx, anthropic.MessageNewParams{Model: "claude-haiku-4-5", MaxTokens: 100,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
			var b strings.Builder
			for stream.Next() {
				if d, ok := stream.Current().AsAny().(anthropic.ContentBlockDeltaEvent); ok {
					b.WriteString(d.Delta.Text)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			return b.String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := startGateway(t, tt.provider, func(c *gw.Config, _ *fakeProviderUpstream) {
				c.Models[0].Pricing = &gw.Pricing{InputPerMillionTokens: "0.30", OutputPerMillionTokens: "2.50"}
			})
			text := tt.call(t, tg.URL)
			if !strings.Contains(text, "hello") {
				t.Errorf("reply %q", text)
			}
			for _, k := range tg.upstream.keys() {
				if k != mountedKey {
					t.Errorf("upstream saw key %q, want only the mounted one", k)
				}
			}
			recs := tg.audit.waitRecords(t, 1)
			if len(recs) != 1 {
				t.Fatalf("%d audit records, want 1", len(recs))
			}
			r := recs[0]
			// 1000 input tokens at 0.30/M + 500 output at 2.50/M = 0.00155 USD.
			if r.Decision != "allowed" || r.Status != 200 || r.InputTokens != 1000 || r.OutputToks != 500 || !strings.HasPrefix(r.CostUSD, "0.00155") {
				t.Errorf("audit record %+v", r)
			}
			day, _ := tg.budget.Spent()
			if day.String() != r.CostUSD {
				t.Errorf("budget spent %s, record says %s", day, r.CostUSD)
			}
		})
	}
}

// An agent written against OpenAI keeps working when its primary fails and the
// fallback is Anthropic: the gateway translates the call both ways, streamed or not,
// counts the Anthropic usage at the fallback's prices, and refuses to translate what
// would change meaning (tools).
func TestOpenAISDKFailsOverToAnthropic(t *testing.T) {
	ctx := context.Background()
	var fallback *fakeProviderUpstream
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		fallback = newFakeProviderUpstream(t, mountedKey)
		c.Models = append(c.Models, gw.Model{Provider: "anthropic", Name: "claude-haiku-4-5", Endpoint: fallback.URL,
			Timeout: gw.Duration{Duration: 5 * time.Second}, CredentialFile: c.Models[0].CredentialFile,
			Pricing: &gw.Pricing{InputPerMillionTokens: "1.00", OutputPerMillionTokens: "5.00"}})
		c.Breaker = gw.Breaker{FailureThreshold: 100, OpenDuration: gw.Duration{Duration: time.Minute}}
	})
	tg.upstream.failNext.Store(1 << 20) // the primary is down
	client := openai.NewClient(openaioption.WithBaseURL(tg.URL+"/model/"), openaioption.WithAPIKey(agentKey), openaioption.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("hi")},
	}

	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0].Message.Content; got != "hello from anthropic" || resp.Choices[0].FinishReason != "stop" || resp.Usage.PromptTokens != 1000 {
		t.Errorf("translated answer: %q, finish %q, usage %+v", got, resp.Choices[0].FinishReason, resp.Usage)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	var streamedUsage int64
	for stream.Next() {
		ch := stream.Current()
		for _, c := range ch.Choices {
			text.WriteString(c.Delta.Content)
		}
		streamedUsage += ch.Usage.CompletionTokens
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != "hello from anthropic" || streamedUsage != 500 {
		t.Errorf("translated stream: %q, usage %d", text.String(), streamedUsage)
	}

	// The fallback got Messages API requests with the mounted key.
	for _, k := range fallback.keys() {
		if k != mountedKey {
			t.Errorf("fallback saw key %q", k)
		}
	}
	fallback.mu.Lock()
	bodies := append([]string(nil), fallback.bodies...)
	fallback.mu.Unlock()
	if len(bodies) != 2 || !strings.Contains(bodies[0], `"model":"claude-haiku-4-5"`) || !strings.Contains(bodies[0], `"system":"Be brief."`) ||
		!strings.Contains(bodies[0], `"max_tokens":4096`) || !strings.Contains(bodies[1], `"stream":true`) {
		t.Errorf("requests the fallback got: %q", bodies)
	}

	// Tools cannot be translated: the call fails over to nothing and says why.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	params.Tools = []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "lookup"})}
	_, err = client.Chat.Completions.New(ctx, params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || !strings.Contains(apiErr.Message, "tools") {
		t.Errorf("call with tools: %v, want a 502 naming tools", err)
	}

	// A stream's record follows its end event, which the SDK stops at: records are told
	// apart by their decision, not their order.
	var allowed, failed []auditRecord
	for _, r := range tg.audit.waitRecords(t, 3) {
		if r.Decision == "failed" {
			failed = append(failed, r)
		} else {
			allowed = append(allowed, r)
		}
	}
	if len(allowed) != 2 || len(failed) != 1 {
		t.Fatalf("records: %d allowed, %d failed; want 2 and 1", len(allowed), len(failed))
	}
	for i, r := range allowed {
		// 1000 input tokens at 1.00/M + 500 output at 5.00/M = 0.0035 USD.
		if r.Upstream != "anthropic/claude-haiku-4-5" || r.InputTokens != 1000 || r.OutputToks != 500 || !strings.HasPrefix(r.CostUSD, "0.0035") || !strings.Contains(r.Reason, "another format") {
			t.Errorf("record %d: %+v", i, r)
		}
	}
	if r := failed[0]; !strings.Contains(r.Reason, "tools") {
		t.Errorf("record of the call with tools: %+v", r)
	}
}

// The brief's own example: a Gemini agent whose fallback is OpenAI. The Gemini SDK gets
// Gemini answers, streamed or not, from an OpenAI upstream, and usage is counted at the
// fallback's prices.
func TestGeminiSDKFailsOverToOpenAI(t *testing.T) {
	ctx := context.Background()
	var fallback *fakeProviderUpstream
	tg := startGateway(t, "gemini", func(c *gw.Config, _ *fakeProviderUpstream) {
		fallback = newFakeProviderUpstream(t, mountedKey)
		c.Models = append(c.Models, gw.Model{Provider: "openai", Name: "gpt-4o-mini", Endpoint: fallback.URL + "/v1",
			Timeout: gw.Duration{Duration: 5 * time.Second}, CredentialFile: c.Models[0].CredentialFile,
			Pricing: &gw.Pricing{InputPerMillionTokens: "0.15", OutputPerMillionTokens: "0.60"}})
		c.Breaker = gw.Breaker{FailureThreshold: 100, OpenDuration: gw.Duration{Duration: time.Minute}}
	})
	tg.upstream.failNext.Store(1 << 20) // the primary is down
	client, err := genai.NewClient(ctx, &genai.ClientConfig{APIKey: agentKey, Backend: genai.BackendGeminiAPI,
		HTTPOptions: genai.HTTPOptions{BaseURL: tg.URL + "/model/"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &genai.GenerateContentConfig{SystemInstruction: genai.NewContentFromText("Be brief.", genai.RoleUser), MaxOutputTokens: 64}
	resp, err := client.Models.GenerateContent(ctx, "gemini-2.5-flash", genai.Text("hi"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text() != "hello from openai" || resp.UsageMetadata == nil || resp.UsageMetadata.PromptTokenCount != 1000 ||
		resp.Candidates[0].FinishReason != genai.FinishReasonStop {
		t.Errorf("translated answer %q, usage %+v", resp.Text(), resp.UsageMetadata)
	}
	var text strings.Builder
	for chunk, err := range client.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text("hi"), cfg) {
		if err != nil {
			t.Fatal(err)
		}
		text.WriteString(chunk.Text())
	}
	if text.String() != "hello from openai" {
		t.Errorf("translated stream %q", text.String())
	}
	fallback.mu.Lock()
	bodies := append([]string(nil), fallback.bodies...)
	fallback.mu.Unlock()
	if len(bodies) != 2 || !strings.Contains(bodies[0], `"model":"gpt-4o-mini"`) || !strings.Contains(bodies[0], `{"role":"system","content":"Be brief."}`) ||
		!strings.Contains(bodies[0], `"max_completion_tokens":64`) || !strings.Contains(bodies[1], `"include_usage":true`) {
		t.Errorf("requests the fallback got: %q", bodies)
	}
	for _, k := range fallback.keys() {
		if k != mountedKey {
			t.Errorf("fallback saw key %q", k)
		}
	}
	recs := tg.audit.waitRecords(t, 2)
	for i, r := range recs {
		// 1000 input tokens at 0.15/M + 500 output at 0.60/M = 0.00045 USD.
		if r.Upstream != "openai/gpt-4o-mini" || r.InputTokens != 1000 || r.OutputToks != 500 || !strings.HasPrefix(r.CostUSD, "0.00045") {
			t.Errorf("record %d: %+v", i, r)
		}
	}
}

// A translated stream that breaks off is not passed off as complete: the agent's SDK
// sees an error, and the record says the stream was cut short.
func TestTranslatedStreamCutShortIsAnErrorForTheAgent(t *testing.T) {
	ctx := context.Background()
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		fallback := newFakeProviderUpstream(t, mountedKey)
		fallback.cutStreams = true
		c.Models = append(c.Models, gw.Model{Provider: "anthropic", Name: "claude-haiku-4-5", Endpoint: fallback.URL,
			Timeout: gw.Duration{Duration: 5 * time.Second}, CredentialFile: c.Models[0].CredentialFile})
		c.Breaker = gw.Breaker{FailureThreshold: 100, OpenDuration: gw.Duration{Duration: time.Minute}}
	})
	tg.upstream.failNext.Store(1 << 20)
	client := openai.NewClient(openaioption.WithBaseURL(tg.URL+"/model/"), openaioption.WithAPIKey(agentKey), openaioption.WithMaxRetries(0))
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	for stream.Next() {
	}
	if stream.Err() == nil {
		t.Fatal("a stream cut short upstream ended cleanly for the agent")
	}
	recs := tg.audit.waitRecords(t, 1)
	if r := recs[0]; r.Reason != "upstream stream cut short" {
		t.Errorf("record %+v", r)
	}
}
