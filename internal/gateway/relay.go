package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// What passes back to the agent is read as it passes: usage for the budget, and every
// form of an injected credential scrubbed out. Nothing here holds a whole answer.

// maxUsageObject bounds one captured usage object; real ones are a few hundred bytes.
const maxUsageObject = 64 << 10

// usageScanner finds usage in a JSON answer as it streams past, holding nothing but the
// usage objects themselves: the value of a "usage" or "usageMetadata" key of the
// top-level object, or of an object that is an element of a top-level array (Gemini's
// :streamGenerateContent without alt=sse answers with a JSON array of chunks). Keys
// inside strings (a model's text) are not keys.
type usageScanner struct {
	total usage
	// turnComplete: a "turnComplete": true was seen (Gemini Live's end of a turn);
	// msgType is the start of the top-level "type" value (OpenAI Realtime's event type),
	// serverContent whether a Gemini "serverContent" key was seen.
	turnComplete  bool
	msgType       string
	serverContent bool
	// clientTurn: an agent's Gemini clientContent with turnComplete, or the end of its
	// audio stream: a turn the provider will answer and bill.
	clientTurn bool

	depth    int
	inStr    bool
	esc      bool
	str      []byte
	strLong  bool
	lastStr  string // the last string closed, a key if ':' follows
	lastAt   int    // the depth it closed at
	valueKey string // the key whose value comes next

	capturing bool
	capDepth  int
	capBuf    []byte
	capOver   bool
}

func isUsageKey(k string) bool { return k == "usage" || k == "usageMetadata" }

func (s *usageScanner) Write(p []byte) (int, error) {
	for _, c := range p {
		if s.capturing {
			if len(s.capBuf) < maxUsageObject {
				s.capBuf = append(s.capBuf, c)
			} else {
				s.capOver = true
			}
		}
		if s.inStr {
			switch {
			case s.esc:
				s.esc = false
				s.strLong = true // a key with escapes is none of ours
			case c == '\\':
				s.esc = true
			case c == '"':
				s.inStr = false
				if s.valueKey == "type" && s.depth == 1 && s.msgType == "" {
					s.msgType = string(s.str) // its first 16 bytes are enough to tell events apart
				}
				if !s.strLong {
					s.lastStr, s.lastAt = string(s.str), s.depth
				}
			default:
				if len(s.str) < 16 {
					s.str = append(s.str, c)
				} else {
					s.strLong = true
				}
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			// A string right after "type": is its value; the key is kept until it closes.
			keep := s.valueKey == "type"
			s.inStr, s.str, s.strLong = true, s.str[:0], false
			if !keep {
				s.valueKey = ""
			}
			continue
		case ':':
			if s.lastStr != "" && s.lastAt == s.depth {
				s.valueKey = s.lastStr
				if s.lastStr == "serverContent" && s.depth == 1 {
					s.serverContent = true
				}
			}
		case '{', '[':
			if !s.capturing && c == '{' && isUsageKey(s.valueKey) && s.depth <= 2 {
				s.capturing, s.capDepth, s.capOver = true, s.depth, false
				s.capBuf = append(s.capBuf[:0], c)
			}
			s.depth++
			s.valueKey = ""
		case '}', ']':
			if s.depth > 0 {
				s.depth--
			}
			s.valueKey = ""
			if s.capturing && s.depth == s.capDepth {
				s.capturing = false
				if !s.capOver {
					s.total.maxMerge(parseUsage(s.capBuf))
				}
			}
		default:
			if c == 't' && (s.valueKey == "turnComplete" || s.valueKey == "audioStreamEnd") {
				s.turnComplete = true
				s.clientTurn = true
			}
			s.valueKey = ""
		}
		s.lastStr = ""
	}
	return len(p), nil
}

// reset readies the scanner for the next message, keeping its buffers.
func (s *usageScanner) reset() {
	str, capBuf := s.str[:0], s.capBuf[:0]
	*s = usageScanner{str: str, capBuf: capBuf}
}

// sseRelay passes a Server-Sent Events stream to the agent, handing every data
// payload to onData. With hold set it passes whole events, so that onData can drop
// one (the usage-only chunk of an OpenAI stream the agent did not ask usage for);
// without it, bytes pass as they come.
type sseRelay struct {
	out    func([]byte) error
	onData func(data []byte) (drop bool)
	hold   bool

	line     []byte
	lineLong bool
	event    []byte
	pass     bool // this event is too big to hold: it passes as it comes
	drop     bool
	err      error
}

const (
	maxSSELine  = 1 << 20 // a longer line is not usage data
	maxSSEEvent = 1 << 20 // a longer event is not a usage-only chunk
)

func (s *sseRelay) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if !s.hold {
		s.emit(p)
	}
	rest := p
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		chunk := rest
		if i >= 0 {
			chunk = rest[:i+1]
		}
		rest = rest[len(chunk):]
		if s.hold {
			s.holdBytes(chunk)
		}
		if !s.lineLong {
			if len(s.line)+len(chunk) > maxSSELine {
				s.lineLong, s.line = true, s.line[:0]
			} else {
				s.line = append(s.line, chunk...)
			}
		}
		if i < 0 {
			break
		}
		s.endLine()
	}
	return len(p), s.err
}

func (s *sseRelay) holdBytes(b []byte) {
	if s.pass {
		s.emit(b)
		return
	}
	s.event = append(s.event, b...)
	if len(s.event) > maxSSEEvent {
		s.pass = true
		s.emit(s.event)
		s.event = s.event[:0]
	}
}

func (s *sseRelay) endLine() {
	line := bytes.TrimRight(s.line, "\r\n")
	long := s.lineLong
	s.line, s.lineLong = s.line[:0], false
	if long {
		return
	}
	if len(line) == 0 { // the end of an event
		if s.hold {
			if !s.drop && !s.pass {
				s.emit(s.event)
			}
			s.event, s.pass, s.drop = s.event[:0], false, false
		}
		return
	}
	if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
		data = bytes.TrimSpace(data)
		if len(data) > 0 && !bytes.Equal(data, []byte("[DONE]")) && s.onData(data) {
			s.drop = true
		}
	}
}

// Close passes on what is held of an event the stream did not end.
func (s *sseRelay) Close() error {
	if s.hold && len(s.event) > 0 && !s.drop {
		s.emit(s.event)
	}
	s.event = nil
	return s.err
}

func (s *sseRelay) emit(b []byte) {
	if s.err == nil && len(b) > 0 {
		s.err = s.out(b)
	}
}

// isUsageOnlyChunk is the last chunk of an OpenAI chat completions stream with
// stream_options.include_usage: no choices, only usage.
func isUsageOnlyChunk(data []byte) bool {
	var c struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   json.RawMessage   `json:"usage"`
	}
	return json.Unmarshal(data, &c) == nil && len(c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}

// redactedCredential replaces a credential found in what goes back to the agent.
const redactedCredential = "[REDACTED]"

// minScrubbedLen: shorter values are no real credential, and scrubbing them would
// mangle ordinary text.
const minScrubbedLen = 8

// scrubber removes every form of the credentials the gateway injected (the raw value,
// its standard and URL base64, its percent-encoding, and for a "user:password" value
// the password alone) from a stream of bytes, including a value split across writes:
// a tail that could be the start of one is held until the next write.
type scrubber struct {
	patterns [][]byte
	held     []byte
}

func newScrubber(secrets ...string) *scrubber {
	s := &scrubber{}
	seen := map[string]bool{}
	add := func(v string) {
		if len(v) >= minScrubbedLen && !seen[v] {
			seen[v] = true
			s.patterns = append(s.patterns, []byte(v))
		}
	}
	for _, v := range secrets {
		add(v)
		add(base64.StdEncoding.EncodeToString([]byte(v)))
		add(strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(v)), "="))
		add(base64.URLEncoding.EncodeToString([]byte(v)))
		add(strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(v)), "="))
		add(url.QueryEscape(v))
		if _, pass, ok := strings.Cut(v, ":"); ok {
			add(pass)
		}
	}
	return s
}

// Apply returns what of p (after what was held) can be passed on now.
func (s *scrubber) Apply(p []byte) []byte {
	if s == nil || len(s.patterns) == 0 {
		return p
	}
	buf := p
	if len(s.held) > 0 {
		buf = append(s.held, p...)
		s.held = nil
	}
	for _, pat := range s.patterns {
		if bytes.Contains(buf, pat) {
			buf = bytes.ReplaceAll(buf, pat, []byte(redactedCredential))
		}
	}
	if k := s.partialTail(buf); k > 0 {
		s.held = append([]byte(nil), buf[len(buf)-k:]...)
		buf = buf[:len(buf)-k]
	}
	return buf
}

// partialTail is the length of the longest end of buf that begins some pattern.
func (s *scrubber) partialTail(buf []byte) int {
	best := 0
	for _, pat := range s.patterns {
		from := max(len(buf)-len(pat)+1, 0)
		for i := from; i < len(buf); i++ {
			if buf[i] == pat[0] && bytes.HasPrefix(pat, buf[i:]) {
				best = max(best, len(buf)-i)
				break
			}
		}
	}
	return best
}

// Flush returns what is still held: the stream ended, so it cannot be a credential.
func (s *scrubber) Flush() []byte {
	if s == nil {
		return nil
	}
	h := s.held
	s.held = nil
	return h
}

// String scrubs one whole value.
func (s *scrubber) String(v string) string {
	if s == nil {
		return v
	}
	for _, pat := range s.patterns {
		v = strings.ReplaceAll(v, string(pat), redactedCredential)
	}
	return v
}

// Header scrubs every value of h in place.
func (s *scrubber) Header(h http.Header) {
	if s == nil || len(s.patterns) == 0 {
		return
	}
	for k, vs := range h {
		for i, v := range vs {
			vs[i] = s.String(v)
		}
		h[k] = vs
	}
}
