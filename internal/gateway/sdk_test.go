package gateway

import (
	"context"
	"strings"
	"testing"

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
