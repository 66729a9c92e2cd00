package translate

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ErrUnsupportedPair: no translation between these two formats. The operator refuses
// such fallbacks at admission; the gateway skips them.
var ErrUnsupportedPair = errors.New("no translation between these request formats")

// StreamTranslator turns one upstream event's data into the SSE bytes for the agent.
// Ended reports whether the upstream stream's end (or an error event) was seen.
type StreamTranslator interface {
	Event(data []byte) []byte
	Ended() bool
}

// Translation is how one call reaches a fallback that speaks another format.
type Translation struct {
	// Path is the upstream path under the fallback's endpoint; no query is sent.
	Path string
	// Body is the translated request.
	Body []byte
	// Answer translates a non-streamed answer back into the agent's format.
	Answer func(body []byte, now time.Time) ([]byte, error)
	// Stream, when set, translates a streamed answer event by event.
	Stream func(now time.Time) StreamTranslator
	// Direction names the translation for the audit record.
	Direction string
}

// Plan translates a call the agent made in fromFamily's format ("openai" or
// "gemini"), at path suffix with rawQuery, for a fallback of provider toProvider
// serving model. Supported: OpenAI chat completions to Anthropic messages, and Gemini
// generateContent to OpenAI (or OpenAI-compatible) chat completions.
func Plan(fromFamily, suffix, rawQuery string, body []byte, toProvider, model string) (*Translation, error) {
	switch {
	case fromFamily == "openai" && toProvider == "anthropic":
		if suffix != "/chat/completions" {
			return nil, fmt.Errorf("%w: only chat completions go to an anthropic fallback, not %s", ErrUntranslatable, suffix)
		}
		req, err := OpenAIChatToAnthropic(body, model)
		if err != nil {
			return nil, err
		}
		t := &Translation{Path: "/v1/messages", Body: req.Body, Answer: AnthropicToOpenAIChat,
			Direction: "openai chat completions to anthropic messages"}
		if req.Stream {
			includeUsage := req.IncludeUsage
			t.Stream = func(now time.Time) StreamTranslator { return &AnthropicStream{IncludeUsage: includeUsage, Now: now} }
		}
		return t, nil
	case fromFamily == "gemini" && (toProvider == "openai" || toProvider == "openai-compatible"):
		_, method, ok := strings.Cut(suffix, ":")
		if !ok || !strings.Contains(suffix, "/models/") {
			return nil, fmt.Errorf("%w: only generateContent goes to an openai fallback", ErrUntranslatable)
		}
		var stream bool
		switch method {
		case "generateContent":
		case "streamGenerateContent":
			if q, _ := url.ParseQuery(rawQuery); q.Get("alt") != "sse" {
				return nil, fmt.Errorf("%w: streamGenerateContent without alt=sse", ErrUntranslatable)
			}
			stream = true
		default:
			return nil, fmt.Errorf("%w: only generateContent goes to an openai fallback, not %s", ErrUntranslatable, method)
		}
		req, err := GeminiToOpenAIChat(body, stream, model, toProvider == "openai")
		if err != nil {
			return nil, err
		}
		t := &Translation{Path: "/chat/completions", Body: req.Body, Answer: OpenAIChatToGemini,
			Direction: "gemini generateContent to openai chat completions"}
		if stream {
			t.Stream = func(time.Time) StreamTranslator { return &OpenAIStream{} }
		}
		return t, nil
	}
	return nil, fmt.Errorf("%w (%s to %s)", ErrUnsupportedPair, fromFamily, toProvider)
}
