package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// Native fuzz tests of what reads and rewrites the bytes passing through the gateway.
// Each checks an invariant against an independent model (encoding/json, a line-by-line
// reading of the event stream), in any chunking of the input, with the writer's buffer
// reused after every write as the relay loop reuses its read buffer.
//
//	go test ./internal/gateway/ -run XXX -fuzz '^FuzzUsageScanner$' -fuzztime 30s

// fzChunks cuts data into the writes plan describes, cycling through it: a byte b is a
// write of b bytes ((b&0x7f+1)*4096 with the high bit set), 0 an empty write followed by
// one of a byte. An empty plan is one write.
func fzChunks(data, plan []byte) [][]byte {
	if len(plan) == 0 {
		return [][]byte{data}
	}
	var out [][]byte
	for i := 0; len(data) > 0; i++ {
		b := plan[i%len(plan)]
		n := int(b)
		switch {
		case b == 0:
			out = append(out, data[:0:0])
			n = 1
		case b&0x80 != 0:
			n = (int(b&0x7f) + 1) * 4096
		}
		n = min(n, len(data))
		out = append(out, data[:n:n])
		data = data[n:]
	}
	return out
}

// fzFeed writes data in the chunks of plan, each from one reused buffer that is
// clobbered once the write returns: nothing may keep a reference to it.
func fzFeed(data, plan []byte, write func([]byte)) {
	var buf []byte
	for _, c := range fzChunks(data, plan) {
		buf = append(buf[:0], c...)
		write(buf)
		for i := range buf {
			buf[i] = 0xA5
		}
	}
}

// fzQ quotes b for a failure message, cut short when long.
func fzQ(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%q...(%d bytes)", b[:300], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func fzQs(bs [][]byte) string {
	var q []string
	for _, b := range bs {
		q = append(q, fzQ(b))
	}
	return "[" + strings.Join(q, " ") + "]"
}

// fzMembers lists the members of the JSON object obj in order, duplicates included:
// each key as it is written (quoted, escapes and all) and its value.
func fzMembers(obj []byte) (keys []string, vals []json.RawMessage) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil
	}
	for dec.More() {
		start := dec.InputOffset()
		if _, err := dec.Token(); err != nil {
			return nil, nil
		}
		key := bytes.TrimLeft(obj[start:dec.InputOffset()], " \t\r\n,")
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return nil, nil
		}
		keys, vals = append(keys, string(key)), append(vals, v)
	}
	return keys, vals
}

// fzScannerModel is what usageScanner must find in the valid JSON data, read with
// encoding/json: every object (of at most maxUsageObject bytes) that is the value of a
// key written "usage" or "usageMetadata" among the members of the top-level object, of
// an object that is the value of one of those members, or of an object that is an
// element of a top-level array; merged field by field. seen counts the ones carrying
// usage. escaped says a key spelt with escapes decodes to one of those names: the
// scanner does not read such a key (no encoder writes one).
func fzScannerModel(data []byte) (total usage, seen int, escaped bool) {
	var visit func(obj []byte, descend bool)
	visit = func(obj []byte, descend bool) {
		keys, vals := fzMembers(obj)
		for i, k := range keys {
			var name string
			_ = json.Unmarshal([]byte(k), &name)
			v := vals[i]
			literal := k == `"usage"` || k == `"usageMetadata"`
			if !literal && isUsageKey(name) {
				escaped = true
			}
			switch {
			case v[0] != '{':
			case literal:
				if len(v) <= maxUsageObject {
					if u := parseUsage(v); u.Seen {
						total.maxMerge(u)
						seen++
					}
				}
			case descend:
				visit(v, false)
			}
		}
	}
	data = bytes.TrimLeft(data, " \t\r\n")
	switch {
	case len(data) == 0:
	case data[0] == '{':
		visit(data, true)
	case data[0] == '[':
		var elems []json.RawMessage
		_ = json.Unmarshal(data, &elems)
		for _, e := range elems {
			if e[0] == '{' {
				visit(e, false)
			}
		}
	}
	return total, seen, escaped
}

func fzScan(data, plan []byte) *usageScanner {
	s := &usageScanner{}
	fzFeed(data, plan, func(p []byte) {
		if n, err := s.Write(p); n != len(p) || err != nil {
			panic(fmt.Sprintf("usageScanner.Write = %d, %v", n, err))
		}
	})
	return s
}

// fzDominates: every field of a is at least that of b.
func fzDominates(a, b usage) bool {
	return a.Seen && a.Input >= b.Input && a.Output >= b.Output && a.CachedInput >= b.CachedInput &&
		a.CacheWrite >= b.CacheWrite && a.AudioInput >= b.AudioInput && a.AudioOutput >= b.AudioOutput
}

func FuzzUsageScanner(f *testing.F) {
	for _, s := range []string{
		`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello from openai"}}],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}`,
		`{"id":"resp_1","object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":1000,"input_tokens_details":{"cached_tokens":10},"output_tokens":500,"output_tokens_details":{"reasoning_tokens":0}}}`,
		`{"id":"msg_1","type":"message","content":[{"type":"text","text":"\"usage\":{\"input_tokens\":9999999}"}],"usage":{"input_tokens":100,"cache_creation_input_tokens":400,"cache_read_input_tokens":2000,"output_tokens":50}}`,
		`{"candidates":[],"usageMetadata":{"promptTokenCount":3000,"cachedContentTokenCount":2000,"candidatesTokenCount":60,"thoughtsTokenCount":40,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":7}]}}`,
		`[{"candidates":[{"content":{"parts":[{"text":"hello "}]}}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":200}}` + ",\r\n" + `{"candidates":[{"content":{"parts":[{"text":"from \"usage\": gemini"}]}}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":500}}]`,
		`{"text":"a transcription","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"audio_tokens":14},"output_tokens":45}}`,
		`{"data":[{"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`,
		// usageFromJSON reads the first usage found, the scanner the largest of all it
		// reaches, one level down under any key too: never less.
		`{"usage":{"prompt_tokens":1,"completion_tokens":1},"usageMetadata":{"promptTokenCount":5}}`,
		`{"usage":{"prompt_tokens":1},"response":{"usage":{"input_tokens":9}},"x":{"usage":{"prompt_tokens":50}}}`,
		`{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":7}}`,
		`{"usage":{"usage":{"prompt_tokens":3}},"a":[{"usage":{"prompt_tokens":4}}]}`,
		`{"usa\u0067e":{"prompt_tokens":3}}`,
		`{"usage":{"prompt_tokens":-5,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":9}}}`,
		`{"usage":null,"usageMetadata":{"candidatesTokenCount":4}}`,
		`  {"a":"\\","usage" : { "prompt_tokens" : 12 } }  `,
		`{"a":"\"","usage":{"prompt_tokens":5}}`,
		`{"a":"\\\"usage\":{\"prompt_tokens\":77}","b":1}`,
		`{"usageMetadataX":{"promptTokenCount":1},"usagE":{"prompt_tokens":1}}`,
		`[[{"usage":{"prompt_tokens":1}}],{"usage":{"prompt_tokens":2}},"usage",{"usage":3}]`,
		`{"usage":{"prompt_tokens":1}`,
		`}}]]{"usage":{"prompt_tokens":1}}`,
		`"usage":{"prompt_tokens":1}`,
		`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807}}`,
		`{"usageMetadata":{"candidatesTokenCount":9223372036854775807,"thoughtsTokenCount":9223372036854775807}}`,
	} {
		f.Add([]byte(s), []byte{}, int64(10), int64(20), int64(30), "hi")
		f.Add([]byte(s), []byte{1}, int64(-1), int64(0), int64(5), `"usage":{"prompt_tokens":1}}`)
		f.Add([]byte(s), []byte{3, 0, 7, 200, 1}, int64(1<<40), int64(7), int64(-9), "\\")
	}
	// A usage object past the bound is not read (the scanner holds no more).
	big := []byte(`{"usage":{"prompt_tokens":5,"pad":"` + strings.Repeat("x", maxUsageObject) + `"}}`)
	f.Add(big, []byte{0x85, 9}, int64(1), int64(2), int64(3), "")
	f.Add(big[len(big)-maxUsageObject+30:], []byte{}, int64(1), int64(2), int64(3), "")

	f.Fuzz(func(t *testing.T, data, plan []byte, a, b, c int64, text string) {
		// However the answer is cut into writes, the scanner ends in the same state.
		ws := fzScan(data, nil)
		if cs := fzScan(data, plan); !reflect.DeepEqual(cs, ws) {
			t.Fatalf("chunked %+v, whole %+v", cs, ws)
		}
		whole := ws.total
		if json.Valid(data) {
			want, seen, escaped := fzScannerModel(data)
			if whole != want {
				t.Fatalf("scanner %+v, encoding/json %+v", whole, want)
			}
			// The whole-answer reader: what it finds in a top-level usage key the scanner
			// charges at least, and exactly when that is the only usage it reaches.
			var top map[string]json.RawMessage
			if trimmed := bytes.TrimLeft(data, " \t\r\n"); trimmed[0] == '{' && json.Unmarshal(data, &top) == nil && !escaped {
				for _, k := range []string{"usage", "usageMetadata"} {
					v, ok := top[k]
					if !ok || !parseUsage(v).Seen {
						continue
					}
					u, found := usageFromJSON(data)
					if !found || u != parseUsage(v) {
						t.Fatalf("usageFromJSON = %+v, %v; top-level %s is %+v", u, found, k, parseUsage(v))
					}
					if len(v) <= maxUsageObject && (!fzDominates(whole, u) || (seen == 1 && whole != u)) {
						t.Fatalf("scanner %+v, usageFromJSON %+v (%d usage objects)", whole, u, seen)
					}
					break
				}
			}
		}

		// A Gemini JSON-array stream: the largest of its chunks' usageMetadata.
		textJSON, _ := json.Marshal(text)
		metas := []string{
			fmt.Sprintf(`{"promptTokenCount":%d,"candidatesTokenCount":%d}`, a, b),
			fmt.Sprintf(`{"promptTokenCount":%d,"candidatesTokenCount":%d,"thoughtsTokenCount":%d,"cachedContentTokenCount":%d}`, c, a, b, c),
			fmt.Sprintf(`{"candidatesTokenCount":%d,"toolUsePromptTokenCount":%d,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":%d}],"candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":%d}]}`, b, c, a, b),
		}
		var arr bytes.Buffer
		var want usage
		arr.WriteString("[")
		for i, m := range metas[:1+int(uint64(a^b^c)%3)] {
			if i > 0 {
				arr.WriteString(",\r\n")
			}
			fmt.Fprintf(&arr, `{"candidates":[{"content":{"role":"model","parts":[{"text":%s}]}}],%s:"x","usageMetadata":%s,"modelVersion":%s}`,
				textJSON, textJSON, m, textJSON)
			want.maxMerge(parseUsage([]byte(m)))
		}
		arr.WriteString("]")
		if !json.Valid(arr.Bytes()) {
			t.Fatalf("test bug: %s", arr.Bytes())
		}
		if got := fzScan(arr.Bytes(), plan).total; got != want {
			t.Fatalf("Gemini array %s: scanner %+v, elements %+v", fzQ(arr.Bytes()), got, want)
		}
	})
}

// fzSSEModel is what an sseRelay passes and hands to onData, read line by line: lines
// end at "\n"; a line of more than maxSSELine bytes is neither data nor an event's end;
// a blank one ends an event; with hold an event is passed unless drop said so of one of
// its data payloads, an event of more than maxSSEEvent bytes always, and so is what is
// left of an unended one.
func fzSSEModel(in []byte, hold bool, drop func([]byte) bool) (out []byte, datas [][]byte) {
	if !hold {
		out = slices.Clone(in)
	}
	var event []byte
	dropped := false
	end := func() {
		if hold && (!dropped || len(event) > maxSSEEvent) {
			out = append(out, event...)
		}
		event, dropped = event[:0], false
	}
	for len(in) > 0 {
		line := in
		i := bytes.IndexByte(in, '\n')
		if i >= 0 {
			line = in[:i+1]
		}
		in = in[len(line):]
		event = append(event, line...)
		if i < 0 || len(line) > maxSSELine {
			continue
		}
		t := bytes.TrimRight(line, "\r\n")
		if len(t) == 0 {
			end()
			continue
		}
		if d, ok := bytes.CutPrefix(t, []byte("data:")); ok {
			d = bytes.TrimSpace(d)
			if len(d) > 0 && string(d) != "[DONE]" {
				datas = append(datas, slices.Clone(d))
				if drop(d) {
					dropped = true
				}
			}
		}
	}
	end()
	return out, datas
}

// fzRelay runs in through an sseRelay; out fails from its failAt-th call on when
// failAt > 0.
func fzRelay(t *testing.T, in, plan []byte, hold bool, drop func([]byte) bool, failAt int) (out []byte, datas [][]byte, failed bool) {
	calls := 0
	s := &sseRelay{hold: hold}
	s.out = func(b []byte) error {
		if failed {
			t.Fatalf("out called after it failed")
		}
		if len(b) == 0 {
			t.Fatalf("out called with nothing")
		}
		calls++
		if failAt > 0 && calls >= failAt {
			failed = true
			return fmt.Errorf("agent gone")
		}
		out = append(out, b...)
		return nil
	}
	s.onData = func(d []byte) bool {
		datas = append(datas, slices.Clone(d))
		return drop(d)
	}
	var werr error
	fzFeed(in, plan, func(p []byte) {
		n, err := s.Write(p)
		switch {
		case werr != nil && (n != 0 || !errors.Is(err, werr)):
			t.Fatalf("Write after the failure = %d, %v", n, err)
		case err == nil && n != len(p):
			t.Fatalf("Write = %d of %d", n, len(p))
		case err != nil && !failed:
			t.Fatalf("Write failed without out failing: %v", err)
		}
		werr = err
	})
	if err := s.Close(); (err != nil) != failed {
		t.Fatalf("Close = %v, out failed: %v", err, failed)
	}
	return out, datas, failed
}

func FuzzSSERelay(f *testing.F) {
	openai := "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}\n\n" +
		"data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500}}\n\n" +
		"data: [DONE]\n\n"
	anthropic := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1000}}}\n\n" +
		"event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":500}}\r\n\r\n"
	for _, s := range []string{
		openai,
		anthropic,
		": keep-alive\n\ndata:{\"choices\":[],\"usage\":{}}\n\ndata: x\n",
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\nid: 7\n\n\n\ndata: usage\r\r\n",
		"data: usage\ndata: other\n\ndata:\ndata:    \n\n",
		"event: a\n\r\n\r\ndata: [DONE]\ndata: usage",
		"\n\n\ndata: usage\n",
		"",
	} {
		f.Add([]byte(s), []byte{}, "usage", uint32(0), uint8(0))
		f.Add([]byte(s), []byte{1, 0, 5, 130}, "usage", uint32(0), uint8(2))
		f.Add([]byte(s), []byte{7}, "choices\":[]", uint32(0), uint8(1))
	}
	// Lines and events about the bounds: a line longer than maxSSELine is neither data
	// nor an event's end, an event longer than maxSSEEvent passes whatever onData says.
	at := uint32(strings.Index(openai, "prompt_tokens"))
	for _, k := range []uint32{0, 127, 128, 129, 255} {
		f.Add([]byte(openai), []byte{0x90}, "usage", 1|k<<2|at<<10, uint8(0))
	}
	f.Add([]byte(openai), []byte{0xff, 3}, "usage", uint32(1|128<<2|5<<10), uint8(3))

	f.Fuzz(func(t *testing.T, in, plan []byte, marker string, pad uint32, failAt uint8) {
		if pad&3 == 1 { // the line at pad>>10 made maxSSELine-128+(pad>>2)%256 bytes long
			at := int(pad>>10) % (len(in) + 1)
			start, end := bytes.LastIndexByte(in[:at], '\n')+1, len(in)
			if j := bytes.IndexByte(in[at:], '\n'); j >= 0 {
				end = at + j + 1
			}
			n := max(maxSSELine-128+int(pad>>2%256)-(end-start), 0)
			in = slices.Concat(in[:at], bytes.Repeat([]byte("x"), n), in[at:])
		}
		if marker == "" {
			marker = "usage"
		}
		never := func([]byte) bool { return false }
		byMarker := func(d []byte) bool { return bytes.Contains(d, []byte(marker)) }
		_, wantDatas := fzSSEModel(in, false, never)

		// Without hold, bytes pass as they come.
		out, datas, _ := fzRelay(t, in, plan, false, byMarker, 0)
		if !bytes.Equal(out, in) {
			t.Fatalf("without hold: out %s, in %s", fzQ(out), fzQ(in))
		}
		if !reflect.DeepEqual(datas, wantDatas) {
			t.Fatalf("without hold: onData saw %s, want %s", fzQs(datas), fzQs(wantDatas))
		}
		// With hold and nothing dropped, the same bytes.
		out, datas, _ = fzRelay(t, in, plan, true, never, 0)
		if !bytes.Equal(out, in) {
			t.Fatalf("hold, nothing dropped: out %s, in %s", fzQ(out), fzQ(in))
		}
		if !reflect.DeepEqual(datas, wantDatas) {
			t.Fatalf("hold: onData saw %s, want %s", fzQs(datas), fzQs(wantDatas))
		}
		// With hold, the events onData drops are gone, and only them.
		for _, drop := range []func([]byte) bool{byMarker, isUsageOnlyChunk} {
			want, _ := fzSSEModel(in, true, drop)
			out, _, _ = fzRelay(t, in, plan, true, drop, 0)
			if !bytes.Equal(out, want) {
				t.Fatalf("hold, dropping: out %s, want %s", fzQ(out), fzQ(want))
			}
			// When every event is ended and none is near a bound, no dropped payload is
			// left in what passed.
			if len(in) < maxSSELine && (len(in) == 0 || bytes.HasSuffix(in, []byte("\n\n")) || bytes.HasSuffix(in, []byte("\n\r\n"))) {
				for _, line := range bytes.Split(out, []byte("\n")) {
					d, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("data:"))
					if d = bytes.TrimSpace(d); ok && len(d) > 0 && string(d) != "[DONE]" && drop(d) {
						t.Fatalf("dropped data line %s passed: %s", fzQ(line), fzQ(out))
					}
				}
			}
		}
		// When the agent's side fails, what passed is the start of what would have, and
		// nothing more is written.
		if failAt > 0 {
			want, _ := fzSSEModel(in, true, byMarker)
			out, _, _ = fzRelay(t, in, plan, true, byMarker, int(failAt%16))
			if !bytes.HasPrefix(want, out) {
				t.Fatalf("after a failure: out %s is not a start of %s", fzQ(out), fzQ(want))
			}
			out, _, _ = fzRelay(t, in, plan, false, never, int(failAt%16))
			if !bytes.HasPrefix(in, out) {
				t.Fatalf("after a failure: out %s is not a start of %s", fzQ(out), fzQ(in))
			}
		}
	})
}

func fzScrub(secret string, in, plan []byte) []byte {
	s := newScrubber(secret)
	var out []byte
	fzFeed(in, plan, func(p []byte) { out = append(out, s.Apply(p)...) })
	return append(out, s.Flush()...)
}

func FuzzScrubber(f *testing.F) {
	for _, s := range []struct{ secret, text string }{
		{"sk-proj-abcdefghijklmnop", `{"error":"invalid key sk-proj-abcd...mnop"}`},
		{"sk-proj-abcdefghijklmnop", "sk-proj-sk-proj-abcdefghijklmno"},
		{"aaaaaaaa", "aaaaaaaaaaaaaaaaaaaaaaaaa"},
		{"abababab", "abababababababa"},
		{"user:correct-horse", "Authorization: Basic dXNlcjpjb3JyZWN0LWhvcnNl\npassword correct-hors"},
		{"p@ss w/rd+%&=?", "p%40ss+w%2Frd%2B%25%26%3D%3F"},
		{"\xff\xfe\x00\x01binary", "\xff\xfe\x00"},
		{"Zm9vYmFyYmF6", "Wm05dlltRnlZbUY2"},
		// A credential that overlaps the replacement cannot be kept out of the answer
		// (see the skip below): "[REDACTED]" followed by "qqqqqq" is such a value.
		{"D]qqqqqq", "D]qqqqqqqqqqqq"},
		{"REDACTED", "REDACTED"},
	} {
		f.Add(s.secret, []byte(s.text), uint16(0), uint8(0), []byte{})
		f.Add(s.secret, []byte(s.text), uint16(3), uint8(7), []byte{1})
		f.Add(s.secret, []byte(s.text), uint16(9), uint8(5), []byte{2, 0, 5})
	}

	f.Fuzz(func(t *testing.T, secret string, text []byte, pos uint16, form uint8, plan []byte) {
		if len(secret) < minScrubbedLen {
			return
		}
		patterns := newScrubber(secret).patterns
		for _, p := range patterns {
			// A value that overlaps "[REDACTED]" is made again by replacing it: secret
			// "D]qqqqqq" in "D]qqqqqqqqqqqq" gives "[REDACTED]qqqqqq". That shows nothing
			// of the value the agent did not already see; no real credential is one.
			if bytes.ContainsAny(p, "[]") || strings.Contains(redactedCredential, string(p)) {
				return
			}
		}
		// Every form the credential can take in an answer.
		forms := []string{
			secret,
			base64.StdEncoding.EncodeToString([]byte(secret)),
			strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(secret)), "="),
			base64.URLEncoding.EncodeToString([]byte(secret)),
			strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(secret)), "="),
			url.QueryEscape(secret),
		}
		if _, pass, ok := strings.Cut(secret, ":"); ok && len(pass) >= minScrubbedLen {
			forms = append(forms, pass)
		}
		leaks := func(out []byte) string {
			for _, p := range forms {
				if strings.Contains(string(out), p) {
					return p
				}
			}
			for _, p := range patterns {
				if bytes.Contains(out, p) {
					return string(p)
				}
			}
			return ""
		}
		// The text as it is: nothing of a credential goes out, and without one it passes
		// unchanged.
		out := fzScrub(secret, text, plan)
		if l := leaks(out); l != "" {
			t.Fatalf("%q in the output %q of %q", l, out, text)
		}
		if leaks(text) == "" && !bytes.Equal(out, text) {
			t.Fatalf("text without a credential changed: %q became %q", text, out)
		}
		// The text with the credential in one of its forms (all of them for form 7).
		insert := strings.Join(forms, string(text[:min(len(text), 3)]))
		if int(form%8) < len(forms) {
			insert = forms[form%8]
		}
		at := int(pos) % (len(text) + 1)
		in := slices.Concat(text[:at], []byte(insert), text[at:])
		out = fzScrub(secret, in, plan)
		if l := leaks(out); l != "" {
			t.Fatalf("%q in the output %q of %q", l, out, in)
		}
		// Written in one go it is what String makes of the whole.
		if got, want := fzScrub(secret, in, nil), newScrubber(secret).String(string(in)); string(got) != want {
			t.Fatalf("one write gives %q, String %q", got, want)
		}
	})
}

// fzUnder checks that u, a URL upstreamURL made, is under base on the wire too.
func fzUnder(t *testing.T, u *url.URL, base string) {
	t.Helper()
	if !strings.HasPrefix(u.Path, base+"/") {
		t.Fatalf("path %q is not under %q/", u.Path, base)
	}
	if c := path.Clean(u.Path); c != path.Clean(base+"/") && !strings.HasPrefix(c, base+"/") {
		t.Fatalf("path %q cleans to %q, outside %q", u.Path, c, base)
	}
	again, err := url.Parse(u.String())
	if err != nil || again.Path != u.Path || again.Host != u.Host || again.RawQuery != u.RawQuery {
		t.Fatalf("%q does not read back as path %q (%v)", u.String(), u.Path, err)
	}
	q, _ := url.ParseQuery(u.RawQuery)
	if q.Has("key") || q.Has("access_token") {
		t.Fatalf("credential parameter passed in %q", u.RawQuery)
	}
}

func FuzzPathRefusal(f *testing.F) {
	for _, p := range []string{
		"/chat/completions", "/v1beta/models/gemini-2.5-flash:generateContent", "/", "/a/", "/a//b", "//a",
		"/../x", "/a/..", "/a/./b", "/%2e%2e/x", "/%2E./x", "/a%2fb", "/a%5Cb", "/a\\b", "/%252e%252e/x",
		"/a;b", "/a%00b", "/a%zz", "/%", "/a b/c", "/a?b#c", "/..%2f", "/...", "/.a/a.", "", "a/b", "/a/b/",
		"/\u2025/x", "/%e2%80%a5", "/a%3Fb%23c",
	} {
		f.Add(p, "alt=sse&key=AIza")
	}
	f.Add("/x", "key=1&access_token=2&KEY=3&k%65y=4&a;b=c")

	endpoints := []struct{ endpoint, base string }{
		{"https://api.example.com/base/v1", "/base/v1"},
		{"https://api.example.com/base/v1/", "/base/v1"},
		{"https://api.example.com", ""},
	}
	f.Fuzz(func(t *testing.T, p, query string) {
		decoded, err := url.PathUnescape(p)
		if pathRefusal(p) == "" {
			if err != nil {
				t.Fatalf("accepted %q does not decode: %v", p, err)
			}
			if strings.ContainsAny(decoded, "\\%") {
				t.Fatalf("accepted %q decodes to %q", p, decoded)
			}
			for _, s := range strings.Split(decoded, "/") {
				if s == "." || s == ".." {
					t.Fatalf("accepted %q has a dot segment: %q", p, decoded)
				}
			}
			for _, e := range endpoints {
				u, ok := upstreamURL(e.endpoint, decoded, query)
				if !ok {
					t.Fatalf("accepted %q (%q) has no upstream URL under %s", p, decoded, e.endpoint)
				}
				fzUnder(t, u, e.base)
			}
		}
		// Whatever the suffix, an upstream URL is under the endpoint's path.
		for _, suffix := range []string{p, decoded} {
			for _, e := range endpoints {
				if u, ok := upstreamURL(e.endpoint, suffix, query); ok {
					fzUnder(t, u, e.base)
				}
			}
		}
	})
}

// fzSameJSON: a and b are the same JSON value.
func fzSameJSON(a, b []byte) bool {
	decode := func(d []byte) (any, bool) {
		dec := json.NewDecoder(bytes.NewReader(d))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil
	}
	va, oka := decode(a)
	vb, okb := decode(b)
	return oka && okb && reflect.DeepEqual(va, vb)
}

func FuzzIncludeUsage(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":false,"other":[1,2]}}`,
		`{"stream":true,"stream_options":null}`,
		`{"stream":true,"stream_options":[]}`,
		`{"stream":true,"stream_options":{"include_usage":"yes"}}`,
		`{"stream":false}`,
		`{"stream":"true"}`,
		`{"stream":true,"stream":false}`,
		`{"stream":false,"stream":true,"stream_options":{},"stream_options":{"x":1}}`,
		`{"stream":true,"n":1e400,"big":12345678901234567890123,"s":"<&>\u2028","\u0073tream_options":{"a":1}}`,
		`{"stream":true,"bad":"\xff"}`,
		`null`, `[]`, `{}`, `{"stream":true} x`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, hide := withIncludeUsage(body)
		if !hide {
			if !bytes.Equal(out, body) {
				t.Fatalf("not hidden, yet the body changed: %q became %q", body, out)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid output %q of %q", out, body)
		}
		var in, got map[string]json.RawMessage
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("hidden usage for a body that is no object: %q", body)
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		var stream bool
		if json.Unmarshal(in["stream"], &stream) != nil || !stream {
			t.Fatalf("usage added to a call that does not stream: %q", body)
		}
		var opts, inOpts map[string]json.RawMessage
		if err := json.Unmarshal(got["stream_options"], &opts); err != nil {
			t.Fatalf("stream_options of %q: %v", out, err)
		}
		if string(opts["include_usage"]) != "true" {
			t.Fatalf("include_usage is %q in %q", opts["include_usage"], out)
		}
		_ = json.Unmarshal(in["stream_options"], &inOpts)
		var asked bool
		if json.Unmarshal(inOpts["include_usage"], &asked) == nil && asked {
			t.Fatalf("the agent asked for usage, yet it is hidden: %q", body)
		}
		for k, v := range inOpts {
			if k != "include_usage" && !fzSameJSON(v, opts[k]) {
				t.Fatalf("stream_options.%s changed: %s became %s", k, v, opts[k])
			}
		}
		if len(opts) != len(inOpts)+1 && (len(opts) != len(inOpts) || inOpts["include_usage"] == nil) {
			t.Fatalf("stream_options %v, in the request %v", opts, inOpts)
		}
		for k, v := range in {
			if k != "stream_options" && !fzSameJSON(v, got[k]) {
				t.Fatalf("%s changed: %s became %s", k, v, got[k])
			}
		}
		for k := range got {
			if _, ok := in[k]; !ok && k != "stream_options" {
				t.Fatalf("%s added: %q", k, out)
			}
		}
		if again, hide := withIncludeUsage(out); hide || !bytes.Equal(again, out) {
			t.Fatalf("a second pass changes %q again", out)
		}
	})
}

// FuzzRequestModel: the model the gateway reads in a body is the one every reader of it
// takes: a case-sensitive one (the providers' own), keeping the first or the last of
// two "model" members alike.
func FuzzRequestModel(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o-mini","messages":[]}`,
		` {"messages":[],"model":"gpt-4o-mini"} `,
		`{"mod\u0065l":"gpt-4o-mini"}`,
		// Found: encoding/json matches struct fields case-insensitively, so the gateway
		// read "gpt-4o-mini" where the provider reads "o1-pro".
		`{"model":"o1-pro","Model":"gpt-4o-mini"}`,
		`{"model":"o1-pro","MODEL":"gpt-4o-mini"}`,
		// Two "model" members: parsers differ on which one counts.
		`{"model":"o1-pro","model":"gpt-4o-mini"}`,
		`{"model":"gpt-4o-mini","model":5}`,
		`{"model":5}`, `{"model":null}`, `{"model":"gpt-4o-mini"} {}`, `[{"model":"x"}]`, `{"Model":"x"}`,
	} {
		f.Add([]byte(s))
	}
	op := operation{Name: "chat.completions", ModelIn: "body"}
	f.Fuzz(func(t *testing.T, body []byte) {
		m := requestModel(op, "/chat/completions", body)
		if m == "" {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("model %q read from invalid JSON %q", m, body)
		}
		keys, vals := fzMembers(body)
		var named []string
		for i, k := range keys {
			var name, model string
			if json.Unmarshal([]byte(k), &name) != nil || name != "model" {
				continue
			}
			if json.Unmarshal(vals[i], &model) != nil {
				t.Fatalf("model %q read from %q, whose model member %s is no string", m, body, vals[i])
			}
			named = append(named, model)
		}
		if len(named) == 0 || named[0] != m || named[len(named)-1] != m {
			t.Fatalf("the gateway reads model %q in %q; the provider reads the members %q", m, body, named)
		}
	})
}

// FuzzAgentToken: the agent token is found wherever an SDK puts its key, judged exactly
// as set membership (any candidate equal to the token), and removed from the request:
// no header that carries it is left, and the query keeps every other parameter Go's
// parser reads, spelled as it came, and no key.
func FuzzAgentToken(f *testing.F) {
	for _, s := range [][4]string{
		{"Bearer tok", "", "", "tok"},
		{"bearer  tok ", "tok2", "alt=sse&key=tok3", "tok3"},
		{"Basic dG9r", "", "key=&model=gpt-realtime", "tok"},
		{"", "", "k%65y=t%6Fk&alt=sse", "tok"},
		{"", "", "a=1;key=tok&key=%zz&b=%41&&c", "tok"},
		{"Bearer", " ", "key=a+b&key=a%20b", "a b"},
		{"Bearer tok\x00", "tok", "key", "tok"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, authorization, apiKey, rawQuery, token string) {
		h := http.Header{}
		if authorization != "" {
			h.Add("Authorization", authorization)
		}
		if apiKey != "" {
			h.Add("X-Api-Key", apiKey)
			h.Add("X-Goog-Api-Key", apiKey+"g")
		}
		candidates, query := agentTokenCandidates(h, rawQuery)
		for _, c := range candidates {
			if c == "" {
				t.Fatalf("empty candidate from %q %q %q", authorization, apiKey, rawQuery)
			}
		}
		if tok := strings.TrimSpace(apiKey); tok != "" && !slices.Contains(candidates, tok) {
			t.Fatalf("x-api-key %q not a candidate: %q", apiKey, candidates)
		}
		if f := strings.Fields(authorization); len(f) == 2 && strings.EqualFold(f[0], "bearer") && strings.TrimSpace(authorization) == f[0]+" "+f[1] &&
			!slices.Contains(candidates, f[1]) {
			t.Fatalf("bearer %q not a candidate: %q", authorization, candidates)
		}

		// The query, against Go's parser piece by piece.
		var kept, keys []string
		for _, piece := range strings.Split(rawQuery, "&") {
			v, err := url.ParseQuery(piece)
			if piece == "" || err != nil {
				continue
			}
			if v.Has("key") {
				if k := v.Get("key"); k != "" {
					keys = append(keys, k)
				}
				continue
			}
			kept = append(kept, piece)
		}
		if query != strings.Join(kept, "&") {
			t.Fatalf("query %q of %q, want %q", query, rawQuery, strings.Join(kept, "&"))
		}
		if v, err := url.ParseQuery(query); err != nil || v.Has("key") || strings.Contains(query, ";") {
			t.Fatalf("query %q of %q: %v, %v", query, rawQuery, v, err)
		}
		for _, k := range keys {
			if !slices.Contains(candidates, k) {
				t.Fatalf("key %q of %q not a candidate: %q", k, rawQuery, candidates)
			}
		}

		// Judged as membership, with the token as its file gives it.
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		want := strings.TrimRight(token, " \t\r\n")
		a := &agentToken{clock: clocktesting.NewFakePassiveClock(now), current: sha256.Sum256([]byte(want)), loaded: true, lastMismatchRead: now}
		if got := a.check(candidates) == tokenValid; got != (want != "" && slices.Contains(candidates, want)) {
			t.Fatalf("token %q judged %v for candidates %q", want, got, candidates)
		}

		r := &http.Request{Header: h, URL: &url.URL{Path: "/model/x", RawQuery: rawQuery}, RequestURI: "/model/x?" + rawQuery}
		stripAgentToken(r, query)
		for _, k := range agentTokenHeaders {
			if _, ok := r.Header[k]; ok {
				t.Fatalf("%s left in the request", k)
			}
		}
		wantURI := "/model/x"
		if query != "" {
			wantURI += "?" + query
		}
		if r.URL.RawQuery != query || (rawQuery != query && r.RequestURI != wantURI) {
			t.Fatalf("request target %q %q after stripping %q", r.URL.RawQuery, r.RequestURI, rawQuery)
		}
	})
}
