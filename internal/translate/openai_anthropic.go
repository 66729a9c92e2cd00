// Package translate converts model calls between provider request formats, so that
// the gateway can fail over from a primary to a fallback of another provider: an agent
// written against OpenAI's chat completions keeps speaking it while Anthropic's
// Messages API answers.
//
// Only what means the same on both sides is translated: text conversations, system
// instructions, sampling settings, stop sequences, streaming and usage. A request that
// uses anything else (tools, images, audio, several choices, structured output) is
// refused with ErrUntranslatable and the gateway does not use that fallback for it:
// a half-translated call would quietly behave differently.
package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/neterr"
)

// ErrUntranslatable is wrapped by errors about requests this package cannot translate.
var ErrUntranslatable = errors.New("request cannot be translated")

// DefaultMaxTokens is sent to Anthropic, which requires a limit, when the OpenAI
// request sets none.
const DefaultMaxTokens = 4096

type openAIRequest struct {
	Model               string          `json:"model"`
	Messages            []openAIMessage `json:"messages"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Stop                json.RawMessage `json:"stop"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	User           string `json:"user"`
	N              *int   `json:"n"`
	ResponseFormat *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

type openAIMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
}

// untranslatableFields change what a call does in ways Anthropic's API cannot follow.
var untranslatableFields = []string{
	"tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs",
	"audio", "modalities", "prediction", "web_search_options",
}

// Request is a translated request.
type Request struct {
	// Body is the Anthropic Messages request.
	Body []byte
	// Stream and IncludeUsage are the OpenAI request's streaming settings, which shape
	// the translated answer.
	Stream, IncludeUsage bool
}

// OpenAIChatToAnthropic translates a chat completions request into a Messages request
// for model.
func OpenAIChatToAnthropic(body []byte, model string) (Request, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return Request{}, fmt.Errorf("%w: body is not a JSON object", ErrUntranslatable)
	}
	for _, f := range untranslatableFields {
		if v, ok := fields[f]; ok && !isNull(v) {
			return Request{}, fmt.Errorf("%w: %q has no Anthropic equivalent here", ErrUntranslatable, f)
		}
	}
	var in openAIRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return Request{}, fmt.Errorf("%w: %w", ErrUntranslatable, err)
	}
	if in.N != nil && *in.N > 1 {
		return Request{}, fmt.Errorf("%w: n > 1 (several choices)", ErrUntranslatable)
	}
	if in.ResponseFormat != nil && in.ResponseFormat.Type != "" && in.ResponseFormat.Type != "text" {
		return Request{}, fmt.Errorf("%w: response_format %q", ErrUntranslatable, in.ResponseFormat.Type)
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	out := struct {
		Model         string    `json:"model"`
		MaxTokens     int64     `json:"max_tokens"`
		System        string    `json:"system,omitempty"`
		Messages      []message `json:"messages"`
		Temperature   *float64  `json:"temperature,omitempty"`
		TopP          *float64  `json:"top_p,omitempty"`
		StopSequences []string  `json:"stop_sequences,omitempty"`
		Stream        bool      `json:"stream,omitempty"`
		Metadata      *struct {
			UserID string `json:"user_id"`
		} `json:"metadata,omitempty"`
	}{Model: model, MaxTokens: DefaultMaxTokens, Stream: in.Stream, TopP: in.TopP}
	switch {
	case in.MaxCompletionTokens != nil:
		out.MaxTokens = *in.MaxCompletionTokens
	case in.MaxTokens != nil:
		out.MaxTokens = *in.MaxTokens
	}
	if in.Temperature != nil {
		t := min(*in.Temperature, 1) // OpenAI's range is 0 to 2, Anthropic's 0 to 1
		out.Temperature = &t
	}
	var system []string
	for i, m := range in.Messages {
		if len(m.ToolCalls) > 0 && !isNull(m.ToolCalls) || m.ToolCallID != "" {
			return Request{}, fmt.Errorf("%w: messages[%d] carries tool calls", ErrUntranslatable, i)
		}
		text, err := textContent(m.Content)
		if err != nil {
			return Request{}, fmt.Errorf("%w: messages[%d]: %w", ErrUntranslatable, i, err)
		}
		switch m.Role {
		case "system", "developer":
			system = append(system, text)
		case "user", "assistant":
			out.Messages = append(out.Messages, message{Role: m.Role, Content: text})
		default:
			return Request{}, fmt.Errorf("%w: messages[%d] has role %q", ErrUntranslatable, i, m.Role)
		}
	}
	if len(out.Messages) == 0 {
		return Request{}, fmt.Errorf("%w: no user or assistant message", ErrUntranslatable)
	}
	out.System = strings.Join(system, "\n\n")
	if len(in.Stop) > 0 && !isNull(in.Stop) {
		var one string
		if json.Unmarshal(in.Stop, &one) == nil {
			out.StopSequences = []string{one}
		} else if json.Unmarshal(in.Stop, &out.StopSequences) != nil {
			return Request{}, fmt.Errorf("%w: stop is neither a string nor a list of strings", ErrUntranslatable)
		}
	}
	if in.User != "" {
		out.Metadata = &struct {
			UserID string `json:"user_id"`
		}{in.User}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return Request{}, err
	}
	return Request{Body: b, Stream: in.Stream, IncludeUsage: in.StreamOptions != nil && in.StreamOptions.IncludeUsage}, nil
}

// textContent reads a message's content: a string, or a list of text parts.
func textContent(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("content is neither text nor a list of parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("content part of type %q", p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

type anthropicUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

type openAIUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func (u anthropicUsage) openAI() *openAIUsage {
	return &openAIUsage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: u.InputTokens + u.OutputTokens}
}

// finishReason maps Anthropic's stop_reason to OpenAI's finish_reason.
func finishReason(stop string) string {
	switch stop {
	case "max_tokens":
		return "length"
	case "refusal":
		return "content_filter"
	case "tool_use":
		return "tool_calls"
	default: // end_turn, stop_sequence, pause_turn
		return "stop"
	}
}

// AnthropicToOpenAIChat translates a Messages answer into a chat completion.
func AnthropicToOpenAIChat(body []byte, now time.Time) ([]byte, error) {
	var in struct {
		ID         string `json:"id"`
		Model      string `json:"model"`
		StopReason string `json:"stop_reason"`
		Content    []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		Usage anthropicUsage `json:"usage"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("anthropic answer: %w", err)
	}
	var text strings.Builder
	for _, c := range in.Content {
		if c.Type == "text" {
			text.WriteString(c.Text)
		}
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	type choice struct {
		Index        int     `json:"index"`
		Message      message `json:"message"`
		FinishReason string  `json:"finish_reason"`
	}
	return json.Marshal(struct {
		ID      string       `json:"id"`
		Object  string       `json:"object"`
		Created int64        `json:"created"`
		Model   string       `json:"model"`
		Choices []choice     `json:"choices"`
		Usage   *openAIUsage `json:"usage"`
	}{
		ID: in.ID, Object: "chat.completion", Created: now.Unix(), Model: in.Model,
		Choices: []choice{{Message: message{Role: "assistant", Content: text.String()}, FinishReason: finishReason(in.StopReason)}},
		Usage:   in.Usage.openAI(),
	})
}

// AnthropicStream turns the data of a Messages event stream, event by event, into the
// `data:` lines of a chat completions stream.
type AnthropicStream struct {
	IncludeUsage bool
	Now          time.Time

	id, model string
	usage     anthropicUsage
	done      bool
}

// Event takes the data of one Anthropic event and returns the SSE bytes to send the
// agent (possibly none).
func (s *AnthropicStream) Event(data []byte) []byte {
	var ev struct {
		Type    string `json:"type"`
		Message *struct {
			ID    string         `json:"id"`
			Model string         `json:"model"`
			Usage anthropicUsage `json:"usage"`
		} `json:"message"`
		Delta *struct {
			Type       string `json:"type"`
			Text       string `json:"text"`
			StopReason string `json:"stop_reason"`
		} `json:"delta"`
		Usage *struct {
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
		Error *struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if s.done || json.Unmarshal(data, &ev) != nil {
		return nil
	}
	switch ev.Type {
	case "message_start":
		if ev.Message != nil {
			s.id, s.model, s.usage = ev.Message.ID, ev.Message.Model, ev.Message.Usage
		}
		return s.chunk(map[string]any{"role": "assistant", "content": ""}, nil)
	case "content_block_delta":
		if ev.Delta != nil && ev.Delta.Type == "text_delta" && ev.Delta.Text != "" {
			return s.chunk(map[string]any{"content": ev.Delta.Text}, nil)
		}
	case "message_delta":
		if ev.Usage != nil {
			s.usage.OutputTokens = max(s.usage.OutputTokens, ev.Usage.OutputTokens)
		}
		if ev.Delta != nil && ev.Delta.StopReason != "" {
			r := finishReason(ev.Delta.StopReason)
			return s.chunk(map[string]any{}, &r)
		}
	case "message_stop":
		s.done = true
		var out []byte
		if s.IncludeUsage {
			out = s.line(map[string]any{
				"id": s.id, "object": "chat.completion.chunk", "created": s.Now.Unix(), "model": s.model,
				"choices": []any{}, "usage": s.usage.openAI(),
			})
		}
		return append(out, "data: [DONE]\n\n"...)
	case "error":
		s.done = true
		msg, kind := "the fallback provider ended the stream with an error", "upstream_error"
		if ev.Error != nil && neterr.SafeKind(ev.Error.Type) {
			kind = ev.Error.Type
		}
		return s.line(map[string]any{"error": map[string]any{"message": msg, "type": kind}})
	}
	return nil
}

// Ended: message_stop or an error event was seen.
func (s *AnthropicStream) Ended() bool { return s.done }

func (s *AnthropicStream) chunk(delta map[string]any, finish *string) []byte {
	return s.line(map[string]any{
		"id": s.id, "object": "chat.completion.chunk", "created": s.Now.Unix(), "model": s.model,
		"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
	})
}

func (s *AnthropicStream) line(v any) []byte {
	b, _ := json.Marshal(v) // maps of strings and numbers: cannot fail
	return append(append([]byte("data: "), b...), "\n\n"...)
}
