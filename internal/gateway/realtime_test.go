package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/genai"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// fakeRealtimeUpstream is a hand-written stand-in for the Gemini Live API
// (BidiGenerateContent) and the OpenAI Realtime API, which cannot be reached from here.
// It speaks the documented events: Gemini's setup/setupComplete, serverContent with
// audio and transcripts, usageMetadata reported cumulatively within a turn and
// turnComplete; OpenAI's session.created, response.* events and response.done with
// usage by modality. It records the keys and subprotocols it was offered.
type fakeRealtimeUpstream struct {
	*httptest.Server
	handshakeStatus int // answer handshakes with this status instead (0: accept)

	mu        sync.Mutex
	keys      []string
	heads     []string // target and headers of every handshake
	protocols []string
	queries   []string
	setups    []string
	bigSeen   int // size of the largest message received
	// holdDone: response.done is sent only once this is closed (a turn in progress).
	holdDone chan struct{}
}

func newFakeRealtimeUpstream(t *testing.T) *fakeRealtimeUpstream {
	f := &fakeRealtimeUpstream{}
	up := websocket.Upgrader{Subprotocols: []string{"realtime"}, CheckOrigin: func(*http.Request) bool { return true }}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.keys = append(f.keys, r.Header.Get("X-Goog-Api-Key")+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		f.heads = append(f.heads, requestHead(r))
		f.protocols = append(f.protocols, r.Header.Get("Sec-WebSocket-Protocol"))
		f.queries = append(f.queries, r.URL.RawQuery)
		status := f.handshakeStatus
		f.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		conn.SetReadLimit(maxRealtimeMessage)
		defer conn.Close()
		if strings.Contains(r.URL.Path, "BidiGenerateContent") {
			f.serveGemini(conn)
		} else {
			f.serveOpenAI(conn)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeRealtimeUpstream) note(n int) {
	f.mu.Lock()
	f.bigSeen = max(f.bigSeen, n)
	f.mu.Unlock()
}

var audioChunk = base64.StdEncoding.EncodeToString(make([]byte, 640)) // 20 ms of 16 kHz PCM16

func (f *fakeRealtimeUpstream) serveGemini(conn *websocket.Conn) {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		f.note(len(data))
		var msg map[string]json.RawMessage
		_ = json.Unmarshal(data, &msg)
		switch {
		case msg["setup"] != nil:
			f.mu.Lock()
			f.setups = append(f.setups, string(msg["setup"]))
			f.mu.Unlock()
			_ = conn.WriteMessage(websocket.BinaryMessage, []byte(`{"setupComplete":{}}`))
		case msg["clientContent"] != nil || strings.Contains(string(data), `"audioStreamEnd":true`):
			// One turn: audio and a transcript out, usage cumulative within the turn. As
			// the Live API does, JSON comes in binary frames.
			_ = conn.WriteMessage(websocket.BinaryMessage, []byte(`{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm;rate=24000","data":"`+audioChunk+`"}}]},"outputTranscription":{"text":"hello there"}},"usageMetadata":{"promptTokenCount":100,"responseTokenCount":50,"totalTokenCount":150,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":80},{"modality":"TEXT","tokenCount":20}],"responseTokensDetails":[{"modality":"AUDIO","tokenCount":50}]}}`))
			_ = conn.WriteMessage(websocket.BinaryMessage, []byte(`{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":100,"responseTokenCount":120,"totalTokenCount":220,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":80},{"modality":"TEXT","tokenCount":20}],"responseTokensDetails":[{"modality":"AUDIO","tokenCount":120}]}}`))
		}
	}
}

func (f *fakeRealtimeUpstream) serveOpenAI(conn *websocket.Conn) {
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"session.created","event_id":"e0","session":{"type":"realtime","model":"gpt-realtime"}}`))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		f.note(len(data))
		var ev struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(data, &ev)
		switch ev.Type {
		case "echo.big": // not an OpenAI event: the test's way to get a 16 MiB message back
			_ = conn.WriteMessage(websocket.TextMessage, data)
		case "response.create":
			_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.created","event_id":"e1","response":{"id":"r1","status":"in_progress"}}`))
			_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"conversation.item.input_audio_transcription.completed","event_id":"e1b","item_id":"i1","content_index":0,"transcript":"my card is 4111 1111 1111 1111"}`))
			_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.output_audio.delta","event_id":"e2","response_id":"r1","delta":"`+audioChunk+`"}`))
			if f.holdDone != nil {
				<-f.holdDone
			}
			_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.done","event_id":"e3","response":{"id":"r1","status":"completed","usage":{"total_tokens":450,"input_tokens":300,"output_tokens":150,"input_token_details":{"cached_tokens":100,"text_tokens":50,"audio_tokens":250},"output_token_details":{"text_tokens":30,"audio_tokens":120}}}}`))
		}
	}
}

var realtimePricing = &gw.Pricing{InputPerMillionTokens: "1.00", OutputPerMillionTokens: "2.00", CachedInputPerMillionTokens: "0.10",
	AudioInputPerMillionTokens: "3.00", AudioOutputPerMillionTokens: "12.00"}

func startRealtimeGateway(t *testing.T, provider string, mutate func(*gw.Config)) (*testGateway, *fakeRealtimeUpstream) {
	t.Helper()
	up := newFakeRealtimeUpstream(t)
	tg := startGateway(t, provider, func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Models[0].Endpoint = up.URL
		if provider == "openai" {
			c.Models[0].Endpoint += "/v1"
			c.Models[0].Name = "gpt-realtime"
		}
		c.Models[0].Pricing = realtimePricing
		if mutate != nil {
			mutate(c)
		}
	})
	return tg, up
}

func wsURL(httpURL string) string { return "ws" + strings.TrimPrefix(httpURL, "http") }

// TestGeminiLiveSDKThroughTheGateway: the official Go SDK's Live client, pointed at
// the gateway, holds a session with audio both ways; the fake sees the mounted key
// only; every turn is charged once, by modality.
func TestGeminiLiveSDKThroughTheGateway(t *testing.T) {
	tg, up := startRealtimeGateway(t, "gemini", nil)
	ctx := context.Background()
	// The SDK turns an http:// base URL into wss://; a plain-HTTP gateway is named ws://.
	client, err := genai.NewClient(ctx, &genai.ClientConfig{APIKey: agentKey, Backend: genai.BackendGeminiAPI,
		HTTPOptions: genai.HTTPOptions{BaseURL: wsURL(tg.URL) + "/model/", APIVersion: "v1beta"}})
	if err != nil {
		t.Fatal(err)
	}
	session, err := client.Live.Connect(ctx, "gemini-2.5-flash", &genai.LiveConnectConfig{ResponseModalities: []genai.Modality{genai.ModalityAudio}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := session.Receive(); err != nil { // setupComplete
		t.Fatal(err)
	}
	var audio, transcript int
	for turn := 0; turn < 2; turn++ {
		if err := session.SendRealtimeInput(genai.LiveRealtimeInput{Audio: &genai.Blob{MIMEType: "audio/pcm;rate=16000", Data: make([]byte, 640)}}); err != nil {
			t.Fatal(err)
		}
		if err := session.SendRealtimeInput(genai.LiveRealtimeInput{AudioStreamEnd: true}); err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := session.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if sc := msg.ServerContent; sc != nil {
				if sc.ModelTurn != nil {
					for _, p := range sc.ModelTurn.Parts {
						if p.InlineData != nil {
							audio += len(p.InlineData.Data)
						}
					}
				}
				if sc.OutputTranscription != nil {
					transcript++
				}
				if sc.TurnComplete {
					break
				}
			}
		}
	}
	session.Close()
	if audio != 2*640 || transcript != 2 {
		t.Errorf("agent got %d bytes of audio and %d transcripts, want 1280 and 2", audio, transcript)
	}
	recs := sessionRecords(t, tg)
	r := recs[len(recs)-1]
	// Per turn: 100 in (80 audio), 120 out (audio); two turns.
	if r.InputTokens != 200 || r.OutputToks != 240 || r.Session == nil || r.Session.AudioInTokens != 160 || r.Session.AudioOutTokens != 240 {
		t.Errorf("session record %+v (session %+v)", r, r.Session)
	}
	// (20 text at 1.00 + 80 audio at 3.00 + 120 audio out at 12.00) per million, twice.
	if r.CostUSD != "0.003400" {
		t.Errorf("cost %s, want 0.003400", r.CostUSD)
	}
	if r.Session.ClosedBy != "agent" || r.Operation != "live" {
		t.Errorf("closed by %q, operation %q", r.Session.ClosedBy, r.Operation)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, k := range up.keys {
		if k != mountedKey {
			t.Errorf("the provider saw key %q", k)
		}
	}
	if len(up.setups) != 1 || !strings.Contains(up.setups[0], "models/gemini-2.5-flash") {
		t.Errorf("setups %q", up.setups)
	}
	waitForCond(t, "no session left open", func() bool {
		return strings.Contains(getAdmin(t, tg.Gateway, "/metrics"), "voiceagent_gateway_active_sessions 0")
	})
}

// sessionRecords waits for a session's end record and returns the records of route
// model with a session.
func sessionRecords(t *testing.T, tg *testGateway) []auditRecord {
	t.Helper()
	var out []auditRecord
	waitForCond(t, "the session's end record", func() bool {
		out = out[:0]
		for _, r := range tg.audit.allRecords(t) {
			if r.Session != nil {
				out = append(out, r)
			}
		}
		return len(out) > 0
	})
	return out
}

// dialAgent opens a realtime session as an agent would with a hand-written client
// speaking the documented OpenAI Realtime events (the Go SDK has no realtime client).
func dialAgent(t *testing.T, tg *testGateway, query string, header http.Header, protocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(wsURL(tg.URL)+"/model/realtime?"+query, header)
	if conn != nil {
		conn.SetReadLimit(maxRealtimeMessage)
		t.Cleanup(func() { conn.Close() })
	}
	return conn, resp, err
}

func readUntil(t *testing.T, conn *websocket.Conn, eventType string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", eventType, err)
		}
		if strings.Contains(string(data), `"type":"`+eventType+`"`) {
			return
		}
	}
}

// TestOpenAIRealtimeThroughTheGateway: keys the agent sends (a Bearer header, the
// browser subprotocol form) are stripped and the mounted key injected; subprotocols
// pass; a 16 MiB message passes both ways; response.done usage is charged by modality.
func TestOpenAIRealtimeThroughTheGateway(t *testing.T) {
	tg, up := startRealtimeGateway(t, "openai", nil)
	conn, resp, err := dialAgent(t, tg, "model=gpt-realtime", http.Header{"Authorization": {"Bearer " + agentKey}},
		"realtime", "openai-insecure-api-key."+agentKey)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	if conn.Subprotocol() != "realtime" {
		t.Errorf("subprotocol %q, want realtime", conn.Subprotocol())
	}
	readUntil(t, conn, "session.created")
	big := `{"type":"echo.big","audio":"` + strings.Repeat("A", 16<<20) + `"}`
	if err := conn.WriteMessage(websocket.TextMessage, []byte(big)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, data, err := conn.ReadMessage(); err != nil || len(data) != len(big) {
		t.Fatalf("16 MiB message back: %d bytes, %v", len(data), err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.create"}`)); err != nil {
		t.Fatal(err)
	}
	readUntil(t, conn, "response.done")
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	r := sessionRecords(t, tg)[0]
	// 300 in: 100 cached, 250 audio (the rest text), 150 out: 120 audio.
	if r.InputTokens != 300 || r.OutputToks != 150 || r.CachedInputTokens != 100 || r.Session.AudioInTokens != 250 || r.Session.AudioOutTokens != 120 {
		t.Errorf("record %+v session %+v", r, r.Session)
	}
	if r.Session.CloseCode != websocket.CloseNormalClosure || r.Session.ClosedBy != "agent" || r.Session.BytesFromAgent < 16<<20 {
		t.Errorf("session %+v", r.Session)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.keys) != 1 || up.keys[0] != mountedKey {
		t.Errorf("provider saw keys %q", up.keys)
	}
	if strings.Contains(up.protocols[0], "insecure") || !strings.Contains(up.protocols[0], "realtime") {
		t.Errorf("provider offered subprotocols %q", up.protocols[0])
	}
	if up.bigSeen < 16<<20 {
		t.Errorf("largest message the provider got: %d bytes", up.bigSeen)
	}
}

// TestRealtimeLimits: session limits refuse the handshake with 429 and Retry-After;
// the duration cap and a spent Block budget close the session with 1008 and a reason.
func TestRealtimeLimits(t *testing.T) {
	t.Run("concurrent sessions", func(t *testing.T) {
		tg, _ := startRealtimeGateway(t, "openai", func(c *gw.Config) { c.Voice.MaxConcurrentSessions = 1 })
		first, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
		if err != nil {
			t.Fatal(err)
		}
		readUntil(t, first, "session.created")
		_, resp, err := dialAgent(t, tg, "model=gpt-realtime", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("second session: %v %+v, want 429 with Retry-After", err, resp)
		}
	})
	t.Run("sessions per minute", func(t *testing.T) {
		tg, _ := startRealtimeGateway(t, "openai", func(c *gw.Config) { c.Voice.SessionsPerMinute = 2 })
		for i := 0; i < 2; i++ {
			conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
			if err != nil {
				t.Fatalf("session %d: %v", i, err)
			}
			conn.Close()
		}
		if _, resp, err := dialAgent(t, tg, "model=gpt-realtime", nil); err == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("third session in a minute: %v", err)
		}
	})
	t.Run("another model", func(t *testing.T) {
		tg, up := startRealtimeGateway(t, "openai", nil)
		if _, resp, err := dialAgent(t, tg, "model=gpt-4o-realtime-preview", nil); err == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("session with another model: %v", err)
		}
		if len(up.keys) != 0 {
			t.Errorf("the provider was dialled")
		}
	})
	t.Run("duration cap", func(t *testing.T) {
		tg, _ := startRealtimeGateway(t, "openai", func(c *gw.Config) { c.Voice.MaxSessionDuration = gw.Duration{Duration: 300 * time.Millisecond} })
		conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
		if err != nil {
			t.Fatal(err)
		}
		readUntil(t, conn, "session.created")
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err = conn.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "maxSessionDuration") {
			t.Fatalf("at the cap: %v, want close 1008 naming maxSessionDuration", err)
		}
	})
	t.Run("budget spent mid-session", func(t *testing.T) {
		tg, _ := startRealtimeGateway(t, "openai", func(c *gw.Config) {
			c.Budget = &gw.Budget{Daily: "0.001", OnExceeded: "Block", AlertAtPercent: 80}
		})
		conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
		if err != nil {
			t.Fatal(err)
		}
		readUntil(t, conn, "session.created")
		// One response costs 0.00209 USD: past the day's 0.001.
		_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.create"}`))
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var closeErr error
		for closeErr == nil {
			_, _, closeErr = conn.ReadMessage()
		}
		var ce *websocket.CloseError
		if !errors.As(closeErr, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "budget") {
			t.Fatalf("after the budget was spent: %v, want close 1008 naming the budget", closeErr)
		}
		r := sessionRecords(t, tg)[0]
		if r.Session.ClosedBy != "gateway" || !strings.Contains(r.Reason, "budget") {
			t.Errorf("record %+v", r)
		}
		if _, resp, err := dialAgent(t, tg, "model=gpt-realtime", nil); err == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("a new session on a spent budget: %v", err)
		}
	})
}

// TestAgentThatHangsUpMidTurnIsCharged: the provider bills the turn it was answering.
func TestAgentThatHangsUpMidTurnIsCharged(t *testing.T) {
	tg, up := startRealtimeGateway(t, "openai", nil)
	up.holdDone = make(chan struct{})
	conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, conn, "session.created")
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.create"}`))
	readUntil(t, conn, "response.output_audio.delta")
	conn.Close() // the agent hangs up mid-answer
	close(up.holdDone)
	r := sessionRecords(t, tg)[0]
	if r.InputTokens != 300 || r.OutputToks != 150 || r.CostUSD == "" {
		t.Errorf("record after a hang-up mid-turn: %+v", r)
	}
}

// TestRealtimeFailsOverAtConnect: a provider refusing the handshake with 503 sends the
// session to the next model of the same protocol.
func TestRealtimeFailsOverAtConnect(t *testing.T) {
	second := newFakeRealtimeUpstream(t)
	tg, first := startRealtimeGateway(t, "openai", func(c *gw.Config) {
		fb := c.Models[0]
		fb.Name, fb.Endpoint = "gpt-realtime-mini", second.URL+"/v1"
		c.Models = append(c.Models, fb)
	})
	first.handshakeStatus = http.StatusServiceUnavailable
	conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, conn, "session.created")
	second.mu.Lock()
	defer second.mu.Unlock()
	if len(second.queries) != 1 || !strings.Contains(second.queries[0], "model=gpt-realtime-mini") {
		t.Errorf("fallback handshakes %q", second.queries)
	}
}

// TestStreamingIntegrationIsChargedPerMinute: a speech service's WebSocket session gets
// its auth on the handshake and is charged by the minute as it runs.
func TestStreamingIntegrationIsChargedPerMinute(t *testing.T) {
	up := newFakeRealtimeUpstream(t)
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Integrations = []gw.HTTPIntegration{{Name: "stt", Type: "rest", Endpoint: up.URL + "/v1", CredentialFile: c.Models[0].CredentialFile,
			PerMinute: "60"}} // a dollar a second, to see it in a short test
	})
	start := time.Now()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(wsURL(tg.URL)+"/integrations/stt/listen?encoding=linear16", http.Header{"Authorization": {"Token " + agentKey}})
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, conn, "session.created")
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	r := sessionRecords(t, tg)[0]
	elapsed := time.Since(start)
	cost, _ := strconv.ParseFloat(r.CostUSD, 64)
	if cost <= 0 || cost > elapsed.Seconds()+0.01 || r.Operation != "session" || r.Upstream != "stt" {
		t.Errorf("record %+v: want a cost above 0 and at most %.3f USD", r, elapsed.Seconds())
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.keys) != 1 || up.keys[0] != mountedKey || !strings.Contains(up.queries[0], "encoding=linear16") {
		t.Errorf("the speech service saw keys %q, queries %q", up.keys, up.queries)
	}
}

// TestRealtimeTranscriptsAreRecordedRedacted: with recordContent, the transcripts in the
// stream reach the record, PII-redacted; audio never does.
func TestRealtimeTranscriptsAreRecordedRedacted(t *testing.T) {
	tg, _ := startRealtimeGateway(t, "openai", func(c *gw.Config) { c.Audit.RecordContent = true })
	conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, conn, "session.created")
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.create"}`))
	readUntil(t, conn, "response.done")
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	r := sessionRecords(t, tg)[0]
	if !strings.Contains(r.Content, "caller: my card is [CARD]") || strings.Contains(r.Content, "4111") || strings.Contains(r.Content, audioChunk[:16]) {
		t.Errorf("recorded content %q", r.Content)
	}
}

// TestOpenAIRealtimeNpmSDK: the official openai npm package's Realtime WebSocket client
// (OpenAIRealtimeWS), given the gateway as its base URL and the agent's own key, holds a
// session; the provider sees the mounted key only and the session is charged. `make
// test` installs the pinned package (npm ci in test/realtime-npm) and requires the test
// to run (VOICEAGENT_REQUIRE_NPM=1); elsewhere it is skipped when Node or the package is
// missing.
func TestOpenAIRealtimeNpmSDK(t *testing.T) {
	dir, _ := filepath.Abs(filepath.Join("..", "..", "test", "realtime-npm"))
	node, err := exec.LookPath("node")
	if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil || statErr != nil {
		if os.Getenv("VOICEAGENT_REQUIRE_NPM") != "" {
			t.Fatalf("node (%v) or the npm packages of %s (%v) missing: run npm ci there", err, dir, statErr)
		}
		t.Skip("node or test/realtime-npm/node_modules missing (make test installs them)")
	}
	tg, up := startRealtimeGateway(t, "openai", nil)
	// The SDK dials wss:// whatever its base URL says, so the gateway's handler is
	// served over TLS here (as the gateway in its own pods serves it), with the test
	// CA handed to Node the way the operator hands it to agents.
	tlsGateway := httptest.NewUnstartedServer(tg.Handler())
	tlsGateway.StartTLS()
	t.Cleanup(tlsGateway.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsGateway.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "realtime.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BASE_URL="+tlsGateway.URL+"/model", "AGENT_KEY="+agentKey, "MODEL=gpt-realtime", "NODE_EXTRA_CA_CERTS="+ca)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("node: %v: %s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var got struct {
		Audio int `json:"audio"`
		Usage struct {
			InputTokens int `json:"input_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(out, &got); err != nil || got.Audio != 640 || got.Usage.InputTokens != 300 {
		t.Fatalf("the SDK's view: %s (%v)", out, err)
	}
	r := sessionRecords(t, tg)[0]
	if r.InputTokens != 300 || r.OutputToks != 150 || r.CostUSD == "" {
		t.Errorf("record %+v", r)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.keys) != 1 || up.keys[0] != mountedKey {
		t.Errorf("the provider saw keys %q", up.keys)
	}
}

// TestDrainKeepsSessionsThenClosesWithGoingAway: on SIGTERM the gateway turns
// not-ready at once, sessions in progress carry on, and those still open when the
// drain timeout passes get 1001 "going away".
func TestDrainKeepsSessionsThenClosesWithGoingAway(t *testing.T) {
	tg, _ := startRealtimeGateway(t, "openai", nil)
	conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, conn, "session.created")
	drained := make(chan struct{})
	go func() { tg.Drain(time.Second); close(drained) }()
	waitForCond(t, "readiness to fail while draining", func() bool {
		rec := httptest.NewRecorder()
		tg.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code == http.StatusServiceUnavailable && strings.Contains(rec.Body.String(), "draining")
	})
	// The session in progress still works.
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.create"}`))
	readUntil(t, conn, "response.done")
	// At the drain timeout the gateway closes it, telling the agent to reconnect.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var closeErr error
	for closeErr == nil {
		_, _, closeErr = conn.ReadMessage()
	}
	var ce *websocket.CloseError
	if !errors.As(closeErr, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("at the end of the drain: %v, want 1001", closeErr)
	}
	<-drained
	if r := sessionRecords(t, tg)[0]; r.Session.ClosedBy != "gateway" || r.Session.CloseCode != websocket.CloseGoingAway {
		t.Errorf("record %+v", r.Session)
	}
}

// TestDrainEndsWhenTheLastSessionDoes: a drain does not wait out its timeout once no
// session is left.
func TestDrainEndsWhenTheLastSessionDoes(t *testing.T) {
	tg, _ := startRealtimeGateway(t, "openai", nil)
	conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, conn, "session.created")
	drained := make(chan struct{})
	go func() { tg.Drain(time.Minute); close(drained) }()
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "call ended"))
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the drain waited on with no session left")
	}
}

// TestRealtimeHandshakeTricks: what a taken-over agent may try at a session's start.
func TestRealtimeHandshakeTricks(t *testing.T) {
	t.Run("the model named twice", func(t *testing.T) {
		tg, up := startRealtimeGateway(t, "openai", nil)
		if _, resp, err := dialAgent(t, tg, "model=gpt-realtime&model=gpt-4o-realtime-preview", nil); err == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("two models: %v", err)
		}
		if len(up.keys) != 0 {
			t.Errorf("the provider was dialled")
		}
	})
	t.Run("account and key subprotocols", func(t *testing.T) {
		tg, up := startRealtimeGateway(t, "openai", nil)
		conn, _, err := dialAgent(t, tg, "model=gpt-realtime&extra=1", nil, "realtime", "openai-organization.org-x", "openai-project.proj-y", "openai-insecure-api-key."+agentKey)
		if err != nil {
			t.Fatal(err)
		}
		readUntil(t, conn, "session.created")
		up.mu.Lock()
		defer up.mu.Unlock()
		if up.protocols[0] != "realtime" || up.queries[0] != "model=gpt-realtime" {
			t.Errorf("the provider got subprotocols %q and query %q", up.protocols[0], up.queries[0])
		}
	})
	for name, first := range map[string]string{
		"no setup first":           `{}`,
		"another model":            `{"setup":{"model":"models/gemini-2.5-pro"}}`,
		"the model named twice":    `{"setup":{"model":"models/gemini-2.5-pro","model":"models/gemini-2.5-flash"}}`,
		"a second top-level field": `{"setup":{"model":"models/gemini-2.5-flash"},"clientContent":{}}`,
	} {
		t.Run("Gemini "+name, func(t *testing.T) {
			tg, up := startRealtimeGateway(t, "gemini", nil)
			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			conn, _, err := d.Dial(wsURL(tg.URL)+"/model/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.WriteMessage(websocket.TextMessage, []byte(first))
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err = conn.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
				t.Fatalf("after %s: %v, want close 1008", first, err)
			}
			up.mu.Lock()
			defer up.mu.Unlock()
			if len(up.setups) != 0 {
				t.Errorf("the provider got setups %q", up.setups)
			}
		})
	}
}

// TestHangUpRightAfterResponseCreateIsReadOn: a hang-up before the provider's first
// event of a response is still a billed turn.
func TestHangUpRightAfterResponseCreateIsReadOn(t *testing.T) {
	tg, up := startRealtimeGateway(t, "openai", nil)
	up.holdDone = make(chan struct{})
	conn, _, err := dialAgent(t, tg, "model=gpt-realtime", nil)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, conn, "session.created")
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.create"}`))
	conn.Close()
	close(up.holdDone)
	if r := sessionRecords(t, tg)[0]; r.InputTokens != 300 {
		t.Errorf("record after a hang-up right after response.create: %+v", r)
	}
}

// TestUndeliveredRecordsAreReportedAtShutdown: what a sink has not taken when the
// gateway stops is counted in a last log line, not lost silently.
func TestUndeliveredRecordsAreReportedAtShutdown(t *testing.T) {
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Audit.Sinks = []gw.Sink{{Name: "soc", Type: "webhook", URL: "https://127.0.0.1:1/ingest"}} // nothing listens there
	})
	var logs syncBuffer
	tg.log = slog.New(slog.NewTextHandler(&logs, nil))
	tg.opts.TerminationLog = filepath.Join(t.TempDir(), "termination-log")
	for i := 0; i < 3; i++ {
		tg.post(t, "/model/chat/completions", openaiBody, nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = tg.Stop(ctx)
	tg.reportUndelivered()
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if out := logs.buf.String(); !strings.Contains(out, "audit records not delivered at shutdown") || !strings.Contains(out, "sink=soc") {
		t.Errorf("log at shutdown: %q", out)
	}
	// And in the termination message, which the operator reads from the pod's status.
	data, err := os.ReadFile(tg.opts.TerminationLog)
	if err != nil {
		t.Fatal(err)
	}
	var report gw.ShutdownReport
	if err := json.Unmarshal(data, &report); err != nil || report.AuditRecordsLost["soc"] < 3 {
		t.Errorf("termination message %s (%v), want soc with at least 3 records (the config record and 3 calls)", data, err)
	}
}
