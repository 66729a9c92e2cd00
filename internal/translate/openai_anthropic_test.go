package translate

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestOpenAIChatToAnthropic(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // the Anthropic request, compared as JSON
		stream   bool
		usage    bool
		refused  string // part of the error; the request is untranslatable
	}{
		{name: "plain conversation with a system prompt and defaults",
			in:   `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"and?"}]}`,
			want: `{"model":"claude-haiku-4-5","max_tokens":4096,"system":"Be brief.","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"and?"}]}`},
		{name: "developer messages and text parts",
			in:   `{"messages":[{"role":"developer","content":[{"type":"text","text":"Rule one."}]},{"role":"system","content":"Rule two."},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`,
			want: `{"model":"claude-haiku-4-5","max_tokens":4096,"system":"Rule one.\n\nRule two.","messages":[{"role":"user","content":"ab"}]}`},
		{name: "sampling, limits, stop, user, streaming with usage",
			in:     `{"messages":[{"role":"user","content":"hi"}],"max_tokens":100,"max_completion_tokens":200,"temperature":1.7,"top_p":0.9,"stop":"END","user":"caller-7","stream":true,"stream_options":{"include_usage":true},"seed":4,"presence_penalty":0.5}`,
			want:   `{"model":"claude-haiku-4-5","max_tokens":200,"messages":[{"role":"user","content":"hi"}],"temperature":1,"top_p":0.9,"stop_sequences":["END"],"stream":true,"metadata":{"user_id":"caller-7"}}`,
			stream: true, usage: true},
		{name: "stop list and max_tokens",
			in:   `{"messages":[{"role":"user","content":"hi"}],"max_tokens":50,"stop":["a","b"],"temperature":0.2,"tools":null,"n":1}`,
			want: `{"model":"claude-haiku-4-5","max_tokens":50,"messages":[{"role":"user","content":"hi"}],"temperature":0.2,"stop_sequences":["a","b"]}`},
		{name: "tools", in: `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, refused: `"tools"`},
		{name: "legacy functions", in: `{"messages":[{"role":"user","content":"hi"}],"functions":[{"name":"f"}]}`, refused: `"functions"`},
		{name: "tool result message", in: `{"messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"c1","content":"42"}]}`, refused: "tool calls"},
		{name: "assistant tool call", in: `{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1"}]}]}`, refused: "tool calls"},
		{name: "image part", in: `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, refused: `"image_url"`},
		{name: "several choices", in: `{"messages":[{"role":"user","content":"hi"}],"n":3}`, refused: "n > 1"},
		{name: "structured output", in: `{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema"}}`, refused: "json_schema"},
		{name: "audio", in: `{"messages":[{"role":"user","content":"hi"}],"audio":{"voice":"alloy"}}`, refused: `"audio"`},
		{name: "only a system prompt", in: `{"messages":[{"role":"system","content":"x"}]}`, refused: "no user or assistant message"},
		{name: "unknown role", in: `{"messages":[{"role":"narrator","content":"x"}]}`, refused: `"narrator"`},
		{name: "not an object", in: `[1,2]`, refused: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OpenAIChatToAnthropic([]byte(tt.in), "claude-haiku-4-5")
			if tt.refused != "" {
				if !errors.Is(err, ErrUntranslatable) || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("error %v, want ErrUntranslatable naming %s", err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			assertJSONEqual(t, got.Body, tt.want)
			if got.Stream != tt.stream || got.IncludeUsage != tt.usage {
				t.Errorf("stream %v include usage %v, want %v %v", got.Stream, got.IncludeUsage, tt.stream, tt.usage)
			}
		})
	}
}

func TestAnthropicToOpenAIChat(t *testing.T) {
	now := time.Unix(1764200000, 0)
	for _, tt := range []struct{ stop, finish string }{
		{"end_turn", "stop"}, {"stop_sequence", "stop"}, {"max_tokens", "length"}, {"refusal", "content_filter"},
	} {
		in := `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"hello "},{"type":"thinking","thinking":"hidden"},{"type":"text","text":"there"}],"stop_reason":"` + tt.stop + `","usage":{"input_tokens":1000,"output_tokens":500}}`
		got, err := AnthropicToOpenAIChat([]byte(in), now)
		if err != nil {
			t.Fatal(err)
		}
		assertJSONEqual(t, got, `{"id":"msg_1","object":"chat.completion","created":1764200000,"model":"claude-haiku-4-5",
			"choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"`+tt.finish+`"}],
			"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}`)
	}
	if _, err := AnthropicToOpenAIChat([]byte(`not json`), now); err == nil {
		t.Error("a body that is not JSON was translated")
	}
}

func TestAnthropicStreamBecomesAChatCompletionStream(t *testing.T) {
	events := []string{
		`{"type":"message_start","message":{"id":"msg_1","model":"claude-haiku-4-5","usage":{"input_tokens":1000,"output_tokens":1}}}`,
		`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
		`{"type":"ping"}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello "}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"there"}}`,
		`{"type":"content_block_stop","index":0}`,
		`{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":500}}`,
		`{"type":"message_stop"}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"after the end"}}`,
	}
	for _, includeUsage := range []bool{false, true} {
		s := &AnthropicStream{IncludeUsage: includeUsage, Now: time.Unix(1764200000, 0)}
		var out strings.Builder
		for _, e := range events {
			out.Write(s.Event([]byte(e)))
		}
		head := `"id":"msg_1","object":"chat.completion.chunk","created":1764200000,"model":"claude-haiku-4-5"`
		want := []string{
			`{` + head + `,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
			`{` + head + `,"choices":[{"index":0,"delta":{"content":"hello "},"finish_reason":null}]}`,
			`{` + head + `,"choices":[{"index":0,"delta":{"content":"there"},"finish_reason":null}]}`,
			`{` + head + `,"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`,
		}
		if includeUsage {
			want = append(want, `{`+head+`,"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}`)
		}
		got := strings.Split(strings.TrimSuffix(out.String(), "\n\n"), "\n\n")
		if len(got) != len(want)+1 || got[len(got)-1] != "data: [DONE]" {
			t.Fatalf("include_usage %v: stream\n%s", includeUsage, out.String())
		}
		for i, w := range want {
			line, ok := strings.CutPrefix(got[i], "data: ")
			if !ok {
				t.Fatalf("line %d %q is not a data line", i, got[i])
			}
			assertJSONEqual(t, []byte(line), w)
		}
	}
}

func TestAnthropicStreamErrorIsPassedOnWithoutDetail(t *testing.T) {
	s := &AnthropicStream{Now: time.Unix(1, 0)}
	out := string(s.Event([]byte(`{"type":"error","error":{"type":"overloaded_error","message":"overloaded at 10.1.2.3"}}`)))
	if !strings.Contains(out, `"type":"overloaded_error"`) || strings.Contains(out, "10.1.2.3") {
		t.Fatalf("error event became %q", out)
	}
	if more := s.Event([]byte(`{"type":"message_stop"}`)); more != nil {
		t.Fatalf("events after an error: %q", more)
	}
}

func assertJSONEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got is not JSON: %s", got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want is not JSON: %s", want)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
