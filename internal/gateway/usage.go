package gateway

import (
	"encoding/json"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// usage is the token count of one call. Input counts every input token, cached and
// audio ones included; CachedInput, CacheWrite and AudioInput say how many of them are
// of those kinds, AudioOutput how many of Output.
type usage struct {
	Input, Output int64
	CachedInput   int64 // read from a prompt cache (billed at the cached price)
	CacheWrite    int64 // written to a prompt cache (Anthropic: billed above the input price)
	AudioInput    int64
	AudioOutput   int64
	Seen          bool // the answer carried usage
}

func (u usage) total() int64 { return u.Input + u.Output }

// maxMerge folds a report into the running total field by field. Every provider
// reports cumulative totals (OpenAI once at the end, Gemini on every chunk, Anthropic
// input in message_start and the output so far in message_delta), so the largest value
// of each field is the call's usage and nothing is counted twice.
func (u *usage) maxMerge(v usage) {
	if !v.Seen {
		return
	}
	u.Seen = true
	u.Input = max(u.Input, v.Input)
	u.Output = max(u.Output, v.Output)
	u.CachedInput = max(u.CachedInput, v.CachedInput)
	u.CacheWrite = max(u.CacheWrite, v.CacheWrite)
	u.AudioInput = max(u.AudioInput, v.AudioInput)
	u.AudioOutput = max(u.AudioOutput, v.AudioOutput)
}

// wireUsage is every usage shape the allowed operations answer with: OpenAI chat
// completions and embeddings (prompt_tokens), the Responses API and audio
// transcriptions (input_tokens), Anthropic messages (input_tokens plus cache tokens),
// and Gemini's usageMetadata.
type wireUsage struct {
	// OpenAI chat completions, embeddings.
	PromptTokens        *int64 `json:"prompt_tokens"`
	CompletionTokens    int64  `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
		AudioTokens  int64 `json:"audio_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		AudioTokens int64 `json:"audio_tokens"`
	} `json:"completion_tokens_details"`
	// OpenAI Responses, Realtime and transcriptions; Anthropic.
	InputTokens        *int64 `json:"input_tokens"`
	OutputTokens       int64  `json:"output_tokens"`
	InputTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
		AudioTokens  int64 `json:"audio_tokens"`
	} `json:"input_tokens_details"`
	InputTokenDetails *struct { // transcriptions and Realtime spell it without the s
		CachedTokens int64 `json:"cached_tokens"`
		AudioTokens  int64 `json:"audio_tokens"`
	} `json:"input_token_details"`
	OutputTokenDetails *struct { // Realtime
		AudioTokens int64 `json:"audio_tokens"`
	} `json:"output_token_details"`
	OutputTokensDetails *struct {
		AudioTokens int64 `json:"audio_tokens"`
	} `json:"output_tokens_details"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	// Gemini usageMetadata.
	PromptTokenCount        *int64          `json:"promptTokenCount"`
	CandidatesTokenCount    int64           `json:"candidatesTokenCount"`
	ThoughtsTokenCount      int64           `json:"thoughtsTokenCount"`
	ToolUsePromptTokenCount int64           `json:"toolUsePromptTokenCount"`
	CachedContentTokenCount int64           `json:"cachedContentTokenCount"`
	PromptTokensDetailsG    []modalityCount `json:"promptTokensDetails"`
	CandidatesTokensDetails []modalityCount `json:"candidatesTokensDetails"`
	// Gemini Live names the answer's tokens "response" instead of "candidates".
	ResponseTokenCount    int64           `json:"responseTokenCount"`
	ResponseTokensDetails []modalityCount `json:"responseTokensDetails"`
}

type modalityCount struct {
	Modality   string `json:"modality"`
	TokenCount int64  `json:"tokenCount"`
}

func audioCount(ds []modalityCount) int64 {
	var n int64
	for _, d := range ds {
		if d.Modality == "AUDIO" {
			n += d.TokenCount
		}
	}
	return n
}

// parseUsage reads one usage object (the value of a "usage" or "usageMetadata" key).
// Negative counts are an upstream's bug and read as zero.
func parseUsage(data []byte) usage {
	var w wireUsage
	if json.Unmarshal(data, &w) != nil {
		return usage{}
	}
	var u usage
	switch {
	case w.PromptTokenCount != nil || w.CandidatesTokenCount > 0 || w.ResponseTokenCount > 0:
		u = usage{Seen: true, Output: w.CandidatesTokenCount + w.ResponseTokenCount + w.ThoughtsTokenCount,
			CachedInput: w.CachedContentTokenCount, AudioInput: audioCount(w.PromptTokensDetailsG),
			AudioOutput: audioCount(w.CandidatesTokensDetails) + audioCount(w.ResponseTokensDetails)}
		if w.PromptTokenCount != nil {
			u.Input = *w.PromptTokenCount
		}
		u.Input += w.ToolUsePromptTokenCount
	case w.PromptTokens != nil:
		u = usage{Seen: true, Input: *w.PromptTokens, Output: w.CompletionTokens}
		if d := w.PromptTokensDetails; d != nil {
			u.CachedInput, u.AudioInput = d.CachedTokens, d.AudioTokens
		}
		if d := w.CompletionTokensDetails; d != nil {
			u.AudioOutput = d.AudioTokens
		}
	case w.InputTokens != nil || w.OutputTokens > 0 || w.CacheCreationInputTokens > 0 || w.CacheReadInputTokens > 0:
		u = usage{Seen: true, Output: w.OutputTokens}
		if w.InputTokens != nil {
			u.Input = *w.InputTokens
		}
		if d := w.InputTokensDetails; d != nil {
			u.CachedInput, u.AudioInput = d.CachedTokens, d.AudioTokens
		}
		if d := w.InputTokenDetails; d != nil {
			u.CachedInput, u.AudioInput = max(u.CachedInput, d.CachedTokens), d.AudioTokens
		}
		if d := w.OutputTokenDetails; d != nil {
			u.AudioOutput = d.AudioTokens
		}
		if d := w.OutputTokensDetails; d != nil {
			u.AudioOutput = d.AudioTokens
		}
		// Anthropic counts cache reads and writes apart from input_tokens.
		u.Input += w.CacheCreationInputTokens + w.CacheReadInputTokens
		u.CachedInput += w.CacheReadInputTokens
		u.CacheWrite = w.CacheCreationInputTokens
	default:
		return usage{}
	}
	return u.clamped()
}

func (u usage) clamped() usage {
	for _, p := range []*int64{&u.Input, &u.Output, &u.CachedInput, &u.CacheWrite, &u.AudioInput, &u.AudioOutput} {
		*p = max(*p, 0)
	}
	u.CachedInput = min(u.CachedInput, u.Input)
	u.CacheWrite = min(u.CacheWrite, u.Input-u.CachedInput)
	u.AudioInput = min(u.AudioInput, u.Input)
	u.AudioOutput = min(u.AudioOutput, u.Output)
	return u
}

// usageFromJSON reads token usage from a whole answer or one streamed event: the
// first usage object found at the top level or one level down (the Responses API's
// response.completed event nests it in "response", Anthropic's message_start in
// "message").
func usageFromJSON(data []byte) (usage, bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return usage{}, false
	}
	for _, k := range []string{"usage", "usageMetadata"} {
		if v, ok := top[k]; ok {
			if u := parseUsage(v); u.Seen {
				return u, true
			}
		}
	}
	for _, k := range []string{"response", "message"} {
		if v, ok := top[k]; ok {
			var inner map[string]json.RawMessage
			if json.Unmarshal(v, &inner) == nil {
				if u := parseUsage(inner["usage"]); u.Seen {
					return u, true
				}
			}
		}
	}
	return usage{}, false
}

// Anthropic bills a prompt-cache write at 1.25 times the input price (its five-minute
// cache); the gateway charges that whatever cache the call asked for, the lower bound.
const cacheWriteNumerator, cacheWriteDenominator = 5, 4

// usageCost prices usage: uncached text input at the input price, cached input at the
// cached price (the input price when none is set), cache writes at 1.25 times the input
// price, audio at the audio prices (the text prices when none is set).
func usageCost(u usage, p *gw.Pricing) budget.Micros {
	if p == nil {
		return 0
	}
	in := priceOr(p.InputPerMillionTokens, "")
	out := priceOr(p.OutputPerMillionTokens, "")
	cached := priceOr(p.CachedInputPerMillionTokens, p.InputPerMillionTokens)
	audioIn := priceOr(p.AudioInputPerMillionTokens, p.InputPerMillionTokens)
	audioOut := priceOr(p.AudioOutputPerMillionTokens, p.OutputPerMillionTokens)
	plainIn := u.Input - u.CachedInput - u.CacheWrite - u.AudioInput
	if plainIn < 0 { // audio that was also cached: charge it once, as audio
		plainIn = 0
	}
	plainOut := u.Output - u.AudioOutput
	cost := budget.Cost(plainIn, plainOut, in, out)
	cost += budget.Cost(u.CachedInput, 0, cached, 0)
	cost += budget.Cost(u.CacheWrite*cacheWriteNumerator/cacheWriteDenominator, 0, in, 0)
	cost += budget.Cost(u.AudioInput, u.AudioOutput, audioIn, audioOut)
	return cost
}

func priceOr(v, fallback string) budget.Micros {
	if v == "" {
		v = fallback
	}
	m, _ := budget.ParseMicros(v) // validated by gatewayconfig.Parse
	return m
}

// estimateUsage is what an answer whose usage could not be read is charged: never
// free. A token is about four bytes of English text; counting one per three bytes of
// the request and of the answer errs on the side of the budget.
func estimateUsage(requestBytes, answerBytes int64) usage {
	return usage{Input: ceilDiv(requestBytes, 3), Output: max(ceilDiv(answerBytes, 3), 1)}
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
