package translate

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/neterr"
)

type geminiPart struct {
	Text             *string         `json:"text"`
	InlineData       json.RawMessage `json:"inlineData"`
	FileData         json.RawMessage `json:"fileData"`
	FunctionCall     json.RawMessage `json:"functionCall"`
	FunctionResponse json.RawMessage `json:"functionResponse"`
	ExecutableCode   json.RawMessage `json:"executableCode"`
	Thought          bool            `json:"thought"`
}

type geminiContent struct {
	Role  string       `json:"role"`
	Parts []geminiPart `json:"parts"`
}

// geminiUntranslatable change what a call does in ways OpenAI's API cannot follow.
var geminiUntranslatable = []string{"tools", "toolConfig", "cachedContent"}

// GeminiToOpenAIChat translates a generateContent (stream false) or
// streamGenerateContent (stream true) request into a chat completions request for
// model. A streamed translation asks for usage in the last chunk, which is where the
// gateway reads it.
//
// OpenAI's own API takes the output limit as max_completion_tokens (its newer models
// refuse max_tokens); OpenAI-compatible servers mostly know only max_tokens.
func GeminiToOpenAIChat(body []byte, stream bool, model string, openAIProper bool) (Request, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return Request{}, fmt.Errorf("%w: body is not a JSON object", ErrUntranslatable)
	}
	for _, f := range geminiUntranslatable {
		if v, ok := fields[f]; ok && !isNull(v) {
			return Request{}, fmt.Errorf("%w: %q has no OpenAI equivalent here", ErrUntranslatable, f)
		}
	}
	var in struct {
		Contents          []geminiContent `json:"contents"`
		SystemInstruction *geminiContent  `json:"systemInstruction"`
		GenerationConfig  *struct {
			Temperature      *float64        `json:"temperature"`
			TopP             *float64        `json:"topP"`
			MaxOutputTokens  *int64          `json:"maxOutputTokens"`
			StopSequences    []string        `json:"stopSequences"`
			CandidateCount   *int            `json:"candidateCount"`
			ResponseMimeType string          `json:"responseMimeType"`
			ResponseSchema   json.RawMessage `json:"responseSchema"`
		} `json:"generationConfig"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return Request{}, fmt.Errorf("%w: %w", ErrUntranslatable, err)
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	out := struct {
		Model         string    `json:"model"`
		Messages      []message `json:"messages"`
		MaxTokens     *int64    `json:"max_tokens,omitempty"`
		MaxCompletion *int64    `json:"max_completion_tokens,omitempty"`
		Temperature   *float64  `json:"temperature,omitempty"`
		TopP          *float64  `json:"top_p,omitempty"`
		Stop          []string  `json:"stop,omitempty"`
		Stream        bool      `json:"stream,omitempty"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options,omitempty"`
	}{Model: model, Stream: stream}
	if stream {
		out.StreamOptions = &struct {
			IncludeUsage bool `json:"include_usage"`
		}{true}
	}
	if g := in.GenerationConfig; g != nil {
		if g.CandidateCount != nil && *g.CandidateCount > 1 {
			return Request{}, fmt.Errorf("%w: candidateCount > 1 (several candidates)", ErrUntranslatable)
		}
		if (g.ResponseMimeType != "" && g.ResponseMimeType != "text/plain") || (len(g.ResponseSchema) > 0 && !isNull(g.ResponseSchema)) {
			return Request{}, fmt.Errorf("%w: structured output (responseMimeType, responseSchema)", ErrUntranslatable)
		}
		out.Temperature, out.TopP, out.Stop = g.Temperature, g.TopP, g.StopSequences
		if openAIProper {
			out.MaxCompletion = g.MaxOutputTokens
		} else {
			out.MaxTokens = g.MaxOutputTokens
		}
	}
	if s := in.SystemInstruction; s != nil {
		text, err := geminiText(s.Parts)
		if err != nil {
			return Request{}, fmt.Errorf("%w: systemInstruction: %w", ErrUntranslatable, err)
		}
		out.Messages = append(out.Messages, message{Role: "system", Content: text})
	}
	for i, c := range in.Contents {
		text, err := geminiText(c.Parts)
		if err != nil {
			return Request{}, fmt.Errorf("%w: contents[%d]: %w", ErrUntranslatable, i, err)
		}
		switch c.Role {
		case "", "user":
			out.Messages = append(out.Messages, message{Role: "user", Content: text})
		case "model":
			out.Messages = append(out.Messages, message{Role: "assistant", Content: text})
		default:
			return Request{}, fmt.Errorf("%w: contents[%d] has role %q", ErrUntranslatable, i, c.Role)
		}
	}
	if len(in.Contents) == 0 {
		return Request{}, fmt.Errorf("%w: no contents", ErrUntranslatable)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return Request{}, err
	}
	return Request{Body: b, Stream: stream, IncludeUsage: stream}, nil
}

func geminiText(parts []geminiPart) (string, error) {
	var b strings.Builder
	for _, p := range parts {
		switch {
		case len(p.InlineData) > 0, len(p.FileData) > 0:
			return "", fmt.Errorf("a part carries media")
		case len(p.FunctionCall) > 0, len(p.FunctionResponse) > 0, len(p.ExecutableCode) > 0:
			return "", fmt.Errorf("a part carries a function call or code")
		case p.Text != nil && !p.Thought:
			b.WriteString(*p.Text)
		}
	}
	return b.String(), nil
}

type openAIAnswer struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Message *struct {
			Content string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *openAIUsage `json:"usage"`
}

type geminiUsage struct {
	PromptTokenCount     int64 `json:"promptTokenCount"`
	CandidatesTokenCount int64 `json:"candidatesTokenCount"`
	TotalTokenCount      int64 `json:"totalTokenCount"`
}

func (u *openAIUsage) gemini() *geminiUsage {
	if u == nil {
		return nil
	}
	return &geminiUsage{PromptTokenCount: u.PromptTokens, CandidatesTokenCount: u.CompletionTokens, TotalTokenCount: u.PromptTokens + u.CompletionTokens}
}

// geminiFinish maps OpenAI's finish_reason to Gemini's finishReason.
func geminiFinish(reason string) string {
	switch reason {
	case "":
		return ""
	case "length":
		return "MAX_TOKENS"
	case "content_filter":
		return "SAFETY"
	default:
		return "STOP"
	}
}

type geminiCandidate struct {
	Content      geminiOutContent `json:"content"`
	FinishReason string           `json:"finishReason,omitempty"`
	Index        int              `json:"index"`
}

type geminiOutContent struct {
	Role  string           `json:"role"`
	Parts []map[string]any `json:"parts"`
}

type geminiResponse struct {
	Candidates    []geminiCandidate `json:"candidates,omitempty"`
	UsageMetadata *geminiUsage      `json:"usageMetadata,omitempty"`
	ModelVersion  string            `json:"modelVersion,omitempty"`
	ResponseID    string            `json:"responseId,omitempty"`
}

// OpenAIChatToGemini translates a chat completion into a generateContent answer.
func OpenAIChatToGemini(body []byte, _ time.Time) ([]byte, error) {
	var in openAIAnswer
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("openai answer: %w", err)
	}
	out := geminiResponse{UsageMetadata: in.Usage.gemini(), ModelVersion: in.Model, ResponseID: in.ID}
	if len(in.Choices) > 0 { // one candidate, the first choice: the request asked for one
		c := in.Choices[0]
		text := ""
		if c.Message != nil {
			text = c.Message.Content
		}
		out.Candidates = []geminiCandidate{{
			Content:      geminiOutContent{Role: "model", Parts: []map[string]any{{"text": text}}},
			FinishReason: geminiFinish(c.FinishReason),
		}}
	}
	return json.Marshal(out)
}

// OpenAIStream turns the data of a chat completions stream, chunk by chunk, into the
// `data:` lines of a streamGenerateContent answer (alt=sse).
type OpenAIStream struct {
	done     bool // an error event: nothing more is passed on
	finished bool // a finish_reason was seen
}

// Ended: a choice finished, or an error event was seen. ([DONE] itself never reaches
// Event: the gateway's scanner drops it.)
func (s *OpenAIStream) Ended() bool { return s.done || s.finished }

// Event takes the data of one chunk and returns the SSE bytes to send the agent.
func (s *OpenAIStream) Event(data []byte) []byte {
	var ch openAIAnswer
	if s.done || json.Unmarshal(data, &ch) != nil {
		return nil
	}
	var fields struct {
		Error *struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &fields) == nil && fields.Error != nil {
		s.done = true
		kind := "upstream_error"
		if neterr.SafeKind(fields.Error.Type) {
			kind = fields.Error.Type
		}
		return sseLine(map[string]any{"error": map[string]any{"code": 502, "status": "UNAVAILABLE", "message": "the fallback provider ended the stream with an error (" + kind + ")"}})
	}
	out := geminiResponse{UsageMetadata: ch.Usage.gemini(), ModelVersion: ch.Model, ResponseID: ch.ID}
	for _, c := range ch.Choices {
		if c.FinishReason != "" {
			s.finished = true
		}
		if c.Delta == nil || (c.Delta.Content == "" && c.FinishReason == "") {
			continue
		}
		out.Candidates = append(out.Candidates, geminiCandidate{
			Content:      geminiOutContent{Role: "model", Parts: []map[string]any{{"text": c.Delta.Content}}},
			FinishReason: geminiFinish(c.FinishReason),
		})
		break
	}
	if len(out.Candidates) == 0 && out.UsageMetadata == nil {
		return nil
	}
	return sseLine(out)
}

func sseLine(v any) []byte {
	b, _ := json.Marshal(v) // strings, numbers and maps of them: cannot fail
	return append(append([]byte("data: "), b...), "\n\n"...)
}
