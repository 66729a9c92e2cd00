package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/limitstore"
)

// Realtime sessions: a WebSocket carrying a call's audio both ways for its whole
// length (Gemini Live's BidiGenerateContent, the OpenAI Realtime API). The gateway
// dials the provider with the mounted key, accepts the agent's upgrade only once the
// provider has, and relays frames both ways without holding whole messages, reading
// usage as it passes and charging it as it arrives: a session that spends past a
// Block budget is closed mid-call, not billed at its end.

const (
	// maxRealtimeMessage bounds one message: OpenAI's base64 audio events run to
	// megabytes, and 16 MiB of payload with its JSON framing must pass.
	maxRealtimeMessage = 17 << 20
	// maxSetupMessage bounds the first message of a Gemini Live session, read whole to
	// check (and for a fallback, set) the model it names.
	maxSetupMessage     = 1 << 20
	realtimeHandshake   = 15 * time.Second
	defaultMaxSession   = time.Hour
	closeWriteWait      = time.Second
	closePolicyViolated = websocket.ClosePolicyViolation // 1008
	closeGoingAway      = websocket.CloseGoingAway       // 1001
	closeTryAgainLater  = websocket.CloseTryAgainLater   // 1013
)

func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// sessionRecord is what the audit record of a session adds to a call's.
type sessionRecord struct {
	DurationMs      float64 `json:"durationMs"`
	FramesFromAgent int64   `json:"framesFromAgent"`
	FramesToAgent   int64   `json:"framesToAgent"`
	BytesFromAgent  int64   `json:"bytesFromAgent"`
	BytesToAgent    int64   `json:"bytesToAgent"`
	AudioInTokens   int64   `json:"audioInputTokens,omitempty"`
	AudioOutTokens  int64   `json:"audioOutputTokens,omitempty"`
	CloseCode       int     `json:"closeCode"`
	CloseReason     string  `json:"closeReason,omitempty"`
	// ClosedBy is agent, upstream or gateway (a limit, the duration cap, a drain).
	ClosedBy string `json:"closedBy"`
}

// sessionMeter turns the usage reports of a session into charges, counting nothing
// twice. OpenAI sends one report per response (response.done) and per input
// transcription: each is charged whole. Gemini Live reports usageMetadata for the turn
// in progress, cumulatively, and starts again after turnComplete: within a turn the
// difference to what was charged already is charged.
type sessionMeter struct {
	perTurn bool
	turn    usage
	charged usage
}

func (m *sessionMeter) observe(u usage, turnComplete bool) usage {
	if !m.perTurn {
		return u
	}
	m.turn.maxMerge(u)
	d := usage{Seen: u.Seen,
		Input: m.turn.Input - m.charged.Input, Output: m.turn.Output - m.charged.Output,
		CachedInput: m.turn.CachedInput - m.charged.CachedInput, CacheWrite: m.turn.CacheWrite - m.charged.CacheWrite,
		AudioInput: m.turn.AudioInput - m.charged.AudioInput, AudioOutput: m.turn.AudioOutput - m.charged.AudioOutput}
	m.charged = m.turn
	if turnComplete {
		m.turn, m.charged = usage{}, usage{}
	}
	return d.clamped()
}

// session is one relayed realtime session.
type session struct {
	c        *call
	model    gw.Model
	agent    *websocket.Conn
	upstream *websocket.Conn
	meter    sessionMeter

	mu       sync.Mutex // guards the totals below and rec
	total    usage
	cost     budget.Micros
	rec      sessionRecord
	stopOnce sync.Once
	stopped  chan struct{}
	fromAg   atomic.Int64
	toAg     atomic.Int64
	// inTurn: the provider is answering (a response or a turn has begun and not
	// ended); agentGone: the agent hung up, and the gateway reads on to the turn's usage.
	inTurn    atomic.Bool
	agentGone atomic.Bool
	scanUsage bool

	bytesFromAgent, bytesToAgent atomic.Int64

	// With audit.recordContent, the transcripts the provider sends (never audio).
	recordContent bool
	transcript    strings.Builder
}

// maxTranscriptMessage: messages longer than this are audio, not transcripts, and are
// not held to look for one.
const maxTranscriptMessage = 64 << 10

type boundedBuffer struct {
	b     []byte
	limit int
	over  bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if !b.over {
		if len(b.b)+len(p) > b.limit {
			b.over, b.b = true, nil
		} else {
			b.b = append(b.b, p...)
		}
	}
	return len(p), nil
}

// collectTranscript keeps the transcripts of one provider message: Gemini Live's
// inputTranscription and outputTranscription, OpenAI Realtime's completed input
// transcription and output audio transcript events.
func (s *session) collectTranscript(data []byte) {
	if s.transcript.Len() >= 4*contentSample {
		return
	}
	var m struct {
		Type          string `json:"type"`
		Transcript    string `json:"transcript"`
		ServerContent *struct {
			In  *struct{ Text string } `json:"inputTranscription"`
			Out *struct{ Text string } `json:"outputTranscription"`
		} `json:"serverContent"`
	}
	if json.Unmarshal(data, &m) != nil {
		return
	}
	add := func(who, text string) {
		if text != "" {
			s.transcript.WriteString(who + ": " + text + "\n")
		}
	}
	switch m.Type {
	case "conversation.item.input_audio_transcription.completed":
		add("caller", m.Transcript)
	case "response.output_audio_transcript.done", "response.audio_transcript.done":
		add("agent", m.Transcript)
	}
	if sc := m.ServerContent; sc != nil {
		if sc.In != nil {
			add("caller", sc.In.Text)
		}
		if sc.Out != nil {
			add("agent", sc.Out.Text)
		}
	}
}

// hangUpGrace bounds how long the gateway reads on after an agent hung up mid-turn,
// waiting for the usage the provider bills.
const hangUpGrace = 10 * time.Second

var errTurnRead = errors.New("the agent hung up; the turn was read to its usage")

// agentSideWriter writes a message to the agent; once the agent is gone it swallows
// the rest, so that the gateway can keep reading the provider's answer for its usage.
type agentSideWriter struct {
	w      io.WriteCloser
	s      *session
	failed bool
}

func (a *agentSideWriter) Write(p []byte) (int, error) {
	if !a.failed && a.w != nil {
		if _, err := a.w.Write(p); err != nil {
			a.failed = true
			a.s.agentGone.Store(true)
		}
	}
	return len(p), nil
}

func (a *agentSideWriter) Close() error {
	if !a.failed && a.w != nil {
		if err := a.w.Close(); err != nil {
			a.s.agentGone.Store(true)
		}
	}
	return nil
}

// serveRealtime admits, dials and relays one realtime session. The handshake is
// refused with an HTTP status (429 with Retry-After over a limit) before any upgrade.
func (g *Gateway) serveRealtime(w http.ResponseWriter, r *http.Request, c *call, op operation, suffix string) {
	cfg := c.cfg
	primary := cfg.Models[0]
	if !c.admitAudit(w) {
		return
	}
	if op.Name == "realtime" {
		if ms := r.URL.Query()["model"]; len(ms) != 1 || ms[0] != primary.Name {
			c.deny(w, http.StatusForbidden, "model_not_allowed", fmt.Sprintf("the session must name model %q (spec.model.name) once, not %s", primary.Name, clip(strings.Join(ms, ","))), 0)
			return
		}
	}
	if !c.admitModelSession(w) {
		return
	}
	family := wireFamily(primary.Provider)
	protocols := agentSubprotocols(r.Header)
	var lastErr string
	for i, m := range cfg.Models {
		if wireFamily(m.Provider) != family {
			continue // a realtime protocol is not translated
		}
		up, ok := c.dialRealtime(w, r, m, i > 0, suffix, protocols, &lastErr)
		if up == nil {
			if ok {
				return // answered: an upstream refusal the agent must see
			}
			continue
		}
		c.rec.Upstream = m.Provider + "/" + m.Name
		g.relaySession(w, r, c, up, sessionOptions{model: m, scanUsage: true, fallback: i > 0})
		return
	}
	c.rec.Decision, c.rec.Reason, c.rec.Status = "failed", lastErr, http.StatusBadGateway
	writeError(w, http.StatusBadGateway, "upstream_unavailable", "no model upstream accepted the realtime session: "+lastErr, c.rec.RequestID)
}

// admitModelSession applies the limits of a realtime model session: requests, tokens
// per minute, the session limits and the budgets, in the limit store or on this
// replica's shares.
func (c *call) admitModelSession(w http.ResponseWriter) bool {
	if decided, ok := c.admitShared(w, limitstore.Session); decided {
		return ok
	}
	return c.admitCommon(w) && c.admitTokensShare(w) && c.admitSession(w) && c.admitBudgetShare(w)
}

// admitIntegrationSession applies the limits of a streaming integration's session:
// requests, the session limits and, when it is priced, the budgets.
func (c *call) admitIntegrationSession(w http.ResponseWriter, priced bool) bool {
	kind := limitstore.IntegrationSession
	if priced {
		kind = limitstore.PricedSession
	}
	if decided, ok := c.admitShared(w, kind); decided {
		return ok
	}
	return c.admitCommon(w) && c.admitSession(w) && (!priced || c.admitBudgetShare(w))
}

// admitSession applies this replica's share of spec.voice's session limits to a
// handshake: 429 with Retry-After over either, and the session's slot held until the
// call ends.
func (c *call) admitSession(w http.ResponseWriter) bool {
	g := c.g
	if ok, wait := g.sessionRate.Allow(); !ok {
		c.deny(w, http.StatusTooManyRequests, "sessions_per_minute", msgSessionsPerMinute, wait)
		return false
	}
	if !g.sessions.TryAcquire() {
		c.deny(w, http.StatusTooManyRequests, "concurrent_sessions", msgConcurrentSessions, time.Second)
		return false
	}
	c.release = g.sessions.Release
	return true
}

// agentSubprotocols are the WebSocket subprotocols the agent offered that name a
// protocol.
func agentSubprotocols(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			// Only the protocol names pass: OpenAI also reads a key, an organisation and
			// a project from subprotocols ("openai-insecure-api-key.<key>",
			// "openai-organization.<org>", "openai-project.<project>").
			if allowedSubprotocols[strings.ToLower(p)] {
				out = append(out, p)
			}
		}
	}
	return out
}

var allowedSubprotocols = map[string]bool{"realtime": true, "openai-beta.realtime-v1": true}

// handshakeHeaders are the agent's headers that may go on to the provider's handshake:
// none that carry a key, none the WebSocket handshake itself sets.
func handshakeHeaders(in http.Header) http.Header {
	out := http.Header{}
	for k, vs := range in {
		switch http.CanonicalHeaderKey(k) {
		case "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions",
			"Sec-Websocket-Protocol", "Host", "Origin", "Content-Length":
			continue
		}
		out[k] = append([]string(nil), vs...)
	}
	stripRequestHeaders(out)
	return out
}

// dialRealtime opens the provider's side. A nil conn with answered true means the
// agent got the provider's refusal (sanitised); with answered false the caller fails
// over.
func (c *call) dialRealtime(w http.ResponseWriter, r *http.Request, m gw.Model, fallback bool, suffix string, protocols []string, lastErr *string) (conn *websocket.Conn, answered bool) {
	br := c.g.breaker(m.Endpoint)
	ticket, ok := br.Allow()
	if !ok {
		*lastErr = host(m.Endpoint) + ": circuit open"
		return nil, false
	}
	key, err := c.g.credential(m.CredentialFile).Value()
	if err != nil {
		br.Failure(ticket)
		*lastErr = host(m.Endpoint) + ": credential unavailable"
		return nil, false
	}
	// Only the model goes on in the query: the agent's other parameters mean nothing
	// the gateway has checked.
	q := url.Values{}
	if r.URL.Query().Has("model") {
		q.Set("model", m.Name)
	}
	target, ok := upstreamURL(m.Endpoint, suffix, q.Encode())
	if !ok {
		*lastErr = "bad upstream URL"
		return nil, false
	}
	c.rec.Path = target.Path
	target.Scheme = "wss"
	h := handshakeHeaders(r.Header)
	injectModelAuth(m.Provider, h, key)
	h.Set("X-Request-ID", c.rec.RequestID)
	dialer := c.g.realtimeDialer(protocols)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), realtimeHandshake)
	defer cancel()
	conn, resp, err := dialer.DialContext(ctx, target.String(), h)
	c.rec.Attempts++
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
			_ = resp.Body.Close()
		}
		if status == 0 || status >= 500 || status == http.StatusTooManyRequests {
			br.Failure(ticket)
			*lastErr = host(m.Endpoint) + ": handshake failed"
			if status != 0 {
				*lastErr = fmt.Sprintf("%s: status %d", host(m.Endpoint), status)
			}
			return nil, false
		}
		br.Success(ticket)
		c.rec.Decision, c.rec.Status, c.rec.Reason = "allowed", status, "upstream refused the realtime handshake"
		writeError(w, status, "upstream_refused", "the model provider refused the realtime session ("+strconv.Itoa(status)+")", c.rec.RequestID)
		return nil, true
	}
	br.Success(ticket)
	return conn, false
}

// realtimeDialer dials providers over HTTP/1.1 (a WebSocket handshake cannot run over
// HTTP/2) with the gateway's TLS settings.
func (g *Gateway) realtimeDialer(protocols []string) *websocket.Dialer {
	var tlsConfig *tls.Config
	if t, ok := g.opts.Transport.(*http.Transport); ok && t.TLSClientConfig != nil {
		tlsConfig = t.TLSClientConfig.Clone()
		tlsConfig.NextProtos = nil
	}
	return &websocket.Dialer{
		NetDialContext:   (&net.Dialer{Timeout: upstreamDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:  tlsConfig,
		HandshakeTimeout: realtimeHandshake,
		Subprotocols:     protocols,
		ReadBufferSize:   wsBufferSize,
		WriteBufferSize:  wsBufferSize,
		WriteBufferPool:  wsWriteBuffers,
	}
}

// A session holds a read buffer per side; write buffers come from a pool and are held
// only while a message is written, so an idle session costs little memory.
const wsBufferSize = 4 << 10

var wsWriteBuffers = &sync.Pool{}

var realtimeUpgrader = websocket.Upgrader{
	HandshakeTimeout: realtimeHandshake,
	ReadBufferSize:   wsBufferSize,
	WriteBufferSize:  wsBufferSize,
	WriteBufferPool:  wsWriteBuffers,
	// The agent is a server process, not a browser page; it is admitted by the network
	// (and the agent token), not by an Origin header.
	CheckOrigin: func(*http.Request) bool { return true },
}

// sessionOptions say what is relayed: a model session (usage read from the stream) or
// a streaming integration (charged by the minute, if priced).
type sessionOptions struct {
	model     gw.Model
	scanUsage bool
	fallback  bool
	perMinute budget.Micros
}

// perMinuteTick is how often a per-minute price is charged while a session runs.
const perMinuteTick = 5 * time.Second

// relaySession upgrades the agent's connection and relays until either side ends,
// a limit stops the session, or its duration cap passes.
func (g *Gateway) relaySession(w http.ResponseWriter, r *http.Request, c *call, up *websocket.Conn, o sessionOptions) {
	m, fallback := o.model, o.fallback
	respHeader := http.Header{"X-Request-Id": {c.rec.RequestID}}
	if p := up.Subprotocol(); p != "" {
		respHeader.Set("Sec-WebSocket-Protocol", p)
	}
	agent, err := realtimeUpgrader.Upgrade(w, r, respHeader)
	if err != nil {
		_ = up.Close()
		c.rec.Decision, c.rec.Reason, c.rec.Status = "failed", "agent upgrade failed", http.StatusBadRequest
		return // Upgrade answered the agent
	}
	agent.SetReadLimit(maxRealtimeMessage)
	up.SetReadLimit(maxRealtimeMessage)
	s := &session{c: c, model: m, agent: agent, upstream: up, stopped: make(chan struct{}), scanUsage: o.scanUsage,
		recordContent: o.scanUsage && c.cfg.Audit.RecordContent,
		meter:         sessionMeter{perTurn: wireFamily(m.Provider) == "gemini"}}
	c.rec.Decision, c.rec.Status = "allowed", http.StatusSwitchingProtocols
	g.sessionsMu.Lock()
	g.liveSessions[s] = struct{}{}
	g.sessionsMu.Unlock()
	defer func() {
		g.sessionsMu.Lock()
		delete(g.liveSessions, s)
		g.sessionsMu.Unlock()
	}()
	g.recordSessionOpened(c)
	g.metrics.activeSessions.Inc()
	start := g.opts.Clock.Now()
	wallStart := time.Now()
	defer func() {
		g.metrics.activeSessions.Dec()
		g.metrics.sessionDuration.Observe(time.Since(wallStart).Seconds())
	}()

	forward := func(from, to *websocket.Conn) {
		from.SetPingHandler(func(data string) error {
			return to.WriteControl(websocket.PingMessage, []byte(data), time.Now().Add(closeWriteWait))
		})
		from.SetPongHandler(func(data string) error {
			return to.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(closeWriteWait))
		})
	}
	forward(agent, up)
	forward(up, agent)

	errc := make(chan sideErr, 2)
	go func() { errc <- sideErr{"agent", s.pump(agent, up, true, fallback)} }()
	go func() { errc <- sideErr{"upstream", s.pump(up, agent, false, false)} }()

	maxDur := c.cfg.Voice.MaxSessionDuration.Duration
	if maxDur <= 0 {
		maxDur = defaultMaxSession
	}
	timer := time.NewTimer(maxDur)
	defer timer.Stop()
	var tick <-chan time.Time
	lastCharge := time.Now()
	chargeTime := func(now time.Time) {
		if o.perMinute > 0 {
			s.chargeCost(budget.Micros(int64(o.perMinute) * now.Sub(lastCharge).Microseconds() / 60e6))
			lastCharge = now
		}
	}
	if o.perMinute > 0 {
		t := time.NewTicker(perMinuteTick)
		defer t.Stop()
		tick = t.C
	}
	ended := 0
wait:
	for {
		select {
		case e := <-errc:
			ended++
			if e.side == "agent" && s.inTurn.Load() {
				// The agent hung up mid-turn: the provider bills the turn, so the gateway
				// reads on (discarding) to its usage before it closes the provider's side.
				s.agentGone.Store(true)
				grace := time.NewTimer(hangUpGrace)
				select {
				case <-errc:
					ended++
				case <-grace.C:
				case <-s.stopped:
				}
				grace.Stop()
			}
			s.endFrom(e)
			break wait
		case <-timer.C:
			s.stop(closePolicyViolated, "the session reached its maximum duration (spec.voice.maxSessionDuration)")
			break wait
		case <-s.stopped:
			break wait
		case now := <-tick:
			chargeTime(now)
		}
	}
	_ = agent.Close()
	_ = up.Close()
	for ; ended < 2; ended++ {
		<-errc
	}
	chargeTime(time.Now())
	s.mu.Lock()
	s.rec.DurationMs = float64(g.opts.Clock.Now().Sub(start).Microseconds()) / 1000
	s.rec.FramesFromAgent, s.rec.FramesToAgent = s.fromAg.Load(), s.toAg.Load()
	s.rec.BytesFromAgent, s.rec.BytesToAgent = s.bytesFromAgent.Load(), s.bytesToAgent.Load()
	s.rec.AudioInTokens, s.rec.AudioOutTokens = s.total.AudioInput, s.total.AudioOutput
	rec := s.rec
	c.rec.InputTokens, c.rec.OutputToks = s.total.Input, s.total.Output
	c.rec.CachedInputTokens = s.total.CachedInput + s.total.CacheWrite
	if m.Pricing != nil || o.perMinute > 0 {
		c.rec.CostUSD = s.cost.String()
	}
	s.mu.Unlock()
	c.rec.Session = &rec
	if s.recordContent {
		c.recordContent([]byte(s.transcript.String()))
	}
	c.rec.Reason = "session ended: " + rec.ClosedBy + " closed it"
	if rec.CloseReason != "" {
		c.rec.Reason += " (" + rec.CloseReason + ")"
	}
	g.metrics.sessionCloses.WithLabelValues(rec.ClosedBy, strconv.Itoa(rec.CloseCode)).Inc()
}

type sideErr struct {
	side string
	err  error
}

// endFrom passes the close of one side on to the other, with its code and reason.
func (s *session) endFrom(e sideErr) {
	var code int
	var reason string
	var ce *websocket.CloseError
	if errors.As(e.err, &ce) {
		code, reason = ce.Code, ce.Text
	} else {
		code, reason = websocket.CloseAbnormalClosure, "connection lost"
	}
	s.mu.Lock()
	if s.rec.ClosedBy == "" {
		s.rec.ClosedBy, s.rec.CloseCode, s.rec.CloseReason = e.side, code, reason
	}
	s.mu.Unlock()
	other := s.agent
	if e.side == "agent" {
		other = s.upstream
	}
	// Codes that must not be sent on the wire (1005, 1006, 1015) become 1011 for the
	// agent (reconnect) and 1000 for the provider.
	switch code {
	case websocket.CloseNoStatusReceived, websocket.CloseAbnormalClosure, websocket.CloseTLSHandshake:
		if e.side == "upstream" {
			code, reason = websocket.CloseInternalServerErr, "the model provider's connection ended; reconnect"
		} else {
			code, reason = websocket.CloseNormalClosure, ""
		}
	}
	_ = other.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeWriteWait))
}

// stop ends the session from the gateway's side: both sides get code and reason.
func (s *session) stop(code int, reason string) {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		if s.rec.ClosedBy == "" {
			s.rec.ClosedBy, s.rec.CloseCode, s.rec.CloseReason = "gateway", code, reason
		}
		s.mu.Unlock()
		msg := websocket.FormatCloseMessage(code, reason)
		_ = s.agent.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeWriteWait))
		_ = s.upstream.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeWriteWait))
		close(s.stopped)
	})
}

// pump relays messages from src to dst as they come, frame by frame: a message is
// never held whole (but a Gemini session's first, its setup, which names the model).
// Messages from the provider are scanned for usage on their way.
func (s *session) pump(src, dst *websocket.Conn, fromAgent, fallback bool) error {
	first := true
	var scan usageScanner
	buf := make([]byte, 8<<10) // one copy buffer for the session's life, not one per message
	toAgent := &agentSideWriter{s: s}
	frames, bytesCount := s.c.g.metrics.framesToAgent, &s.bytesToAgent
	if fromAgent {
		frames, bytesCount = s.c.g.metrics.framesFromAgent, &s.bytesFromAgent
	}
	for {
		typ, rd, err := src.NextReader()
		if err != nil {
			return err
		}
		var wr io.WriteCloser
		switch {
		case fromAgent:
			if wr, err = dst.NextWriter(typ); err != nil {
				return err
			}
		case s.agentGone.Load():
			toAgent.w, toAgent.failed = nil, true
			wr = toAgent
		default:
			w, err := dst.NextWriter(typ)
			toAgent.w, toAgent.failed = w, err != nil
			if err != nil {
				s.agentGone.Store(true)
			}
			wr = toAgent
		}
		var n int64
		switch {
		case fromAgent && first && s.meter.perTurn && s.scanUsage:
			n, err = s.checkSetup(wr, rd, fallback)
		case fromAgent:
			// The agent's events are copied as they are; one that starts a billed turn is
			// noted, so that a hang-up right after it is still read on to the usage.
			scan.reset()
			n, err = io.CopyBuffer(wr, io.TeeReader(rd, &scan), buf)
			if scan.msgType == "response.create" || scan.clientTurn {
				s.inTurn.Store(true)
			}
		case !s.scanUsage:
			n, err = io.CopyBuffer(wr, rd, buf)
		// Text and binary messages alike: Gemini Live sends its JSON in binary frames.
		case s.recordContent:
			scan.reset()
			msg := &boundedBuffer{limit: maxTranscriptMessage}
			n, err = io.CopyBuffer(wr, io.TeeReader(rd, io.MultiWriter(&scan, msg)), buf)
			if err == nil && !msg.over {
				s.collectTranscript(msg.b)
			}
		default:
			scan.reset()
			n, err = io.CopyBuffer(wr, io.TeeReader(rd, &scan), buf)
		}
		first = false
		if err != nil {
			return err
		}
		if err := wr.Close(); err != nil {
			return err
		}
		bytesCount.Add(n)
		frames.Inc()
		if fromAgent {
			s.fromAg.Add(1)
			continue
		}
		s.toAg.Add(1)
		if scan.total.Seen || scan.turnComplete {
			s.charge(s.meter.observe(scan.total, scan.turnComplete))
		}
		s.trackTurn(&scan)
		if s.agentGone.Load() && !s.inTurn.Load() {
			return errTurnRead
		}
	}
}

// trackTurn follows whether the provider is in the middle of an answer: OpenAI's
// response.* events up to response.done, Gemini's serverContent up to turnComplete.
func (s *session) trackTurn(scan *usageScanner) {
	if s.meter.perTurn {
		switch {
		case scan.turnComplete:
			s.inTurn.Store(false)
		case scan.serverContent:
			s.inTurn.Store(true)
		}
		return
	}
	switch {
	case scan.msgType == "response.done":
		s.inTurn.Store(false)
	case strings.HasPrefix(scan.msgType, "response."):
		s.inTurn.Store(true)
	}
}

// checkSetup reads a Gemini Live session's setup message, refuses a model other than
// the VoiceAgent's and names the fallback's own model when the session runs on one.
func (s *session) checkSetup(wr io.Writer, rd io.Reader, fallback bool) (int64, error) {
	data, err := io.ReadAll(io.LimitReader(rd, maxSetupMessage+1))
	if err != nil {
		return 0, err
	}
	if len(data) > maxSetupMessage {
		s.stop(websocket.CloseMessageTooBig, "the setup message is too large")
		return 0, errors.New("setup too large")
	}
	// The first message must be a setup naming this VoiceAgent's model once: anything
	// else (no setup, a model named twice, another model) is refused, and what goes on
	// is the setup as checked, re-encoded, never the agent's own bytes.
	var msg map[string]json.RawMessage
	var setup map[string]json.RawMessage
	primary := s.c.cfg.Models[0].Name
	if json.Unmarshal(data, &msg) != nil || len(msg) != 1 || msg["setup"] == nil || json.Unmarshal(msg["setup"], &setup) != nil {
		s.stop(closePolicyViolated, "the first message of a Live session must be its setup")
		return 0, errors.New("no setup")
	}
	if model := bodyModel(msg["setup"]); strings.TrimPrefix(model, "models/") != primary {
		s.stop(closePolicyViolated, fmt.Sprintf("the setup's model %s is not this VoiceAgent's model %q (spec.model.name)", clip(model), primary))
		return 0, errors.New("model not allowed")
	}
	name := primary
	if fallback {
		name = s.model.Name
	}
	setup["model"], _ = json.Marshal("models/" + name)
	msg["setup"], _ = json.Marshal(setup)
	data, _ = json.Marshal(msg)
	n, err := wr.Write(data)
	return int64(n), err
}

// charge puts one usage report on the budget and the tokens-per-minute bucket as it
// arrives, and stops the session once a Block budget is spent.
func (s *session) charge(u usage) {
	if u.total() == 0 {
		return
	}
	g := s.c.g
	g.tokenCount.add(g.opts.Clock.Now(), u.total())
	g.tokens.Charge(float64(u.total()))
	g.chargeShared(u.total(), 0)
	g.metrics.tokens.WithLabelValues("input").Add(float64(u.Input))
	g.metrics.tokens.WithLabelValues("output").Add(float64(u.Output))
	cost := usageCost(u, s.model.Pricing)
	s.mu.Lock()
	s.total.Seen = true
	s.total.Input += u.Input
	s.total.Output += u.Output
	s.total.CachedInput += u.CachedInput
	s.total.CacheWrite += u.CacheWrite
	s.total.AudioInput += u.AudioInput
	s.total.AudioOutput += u.AudioOutput
	s.mu.Unlock()
	s.chargeCost(cost)
}

// chargeCost puts spend on the budget and stops the session once a Block budget is
// spent.
func (s *session) chargeCost(cost budget.Micros) {
	g := s.c.g
	s.mu.Lock()
	s.cost += cost
	s.mu.Unlock()
	if cost > 0 {
		g.chargeShared(0, cost)
		if err := g.budget.Add(cost); err != nil {
			g.log.Error("spend not persisted", "error", err.Error())
		}
		g.metrics.spendUSD.Add(float64(cost) / 1e6)
	}
	d := g.budgetNow()
	g.setBudgetGauges(d)
	if !d.Allowed {
		s.stop(closePolicyViolated, "budget exceeded: "+d.Reason)
	}
}

// recordSessionOpened writes the record of a session's start; its end is the call's
// own record.
func (g *Gateway) recordSessionOpened(c *call) {
	rec := c.rec
	rec.Reason = "session opened"
	_, err := g.trail.AppendValue(&rec, false)
	if err != nil {
		g.log.Error("audit record of a session's start not kept", "requestId", c.rec.RequestID, "error", err.Error())
	}
}

// serveIntegrationSession relays a WebSocket session to a streaming integration (a
// speech-to-text or text-to-speech service) with its auth injected on the handshake,
// under the session limits, charged by the minute when the integration is priced.
func (g *Gateway) serveIntegrationSession(w http.ResponseWriter, r *http.Request, c *call, in *gw.HTTPIntegration, target *url.URL) {
	if !c.admitAudit(w) {
		return
	}
	g.mu.Lock()
	bucket := g.integBuckets[in.Name]
	g.mu.Unlock()
	if ok, wait := bucket.Allow(); !ok {
		c.deny(w, http.StatusTooManyRequests, "integration_rate_limit", "the rate limit of integration "+in.Name+" is reached", wait)
		return
	}
	perMinute := priceOr(in.PerMinute, "")
	if !c.admitIntegrationSession(w, perMinute > 0) {
		return
	}
	br := g.breaker(in.Endpoint)
	ticket, ok := br.Allow()
	if !ok {
		c.deny(w, http.StatusServiceUnavailable, "circuit_open", "integration "+in.Name+" is failing; its circuit is open", time.Second)
		return
	}
	secret, err := g.credential(in.CredentialFile).Value()
	if err != nil {
		c.deny(w, http.StatusServiceUnavailable, "credential_unavailable", "the integration's credential is not available", time.Second)
		return
	}
	h := handshakeHeaders(r.Header)
	injectIntegrationAuth(in, h, secret)
	h.Set("X-Request-ID", c.rec.RequestID)
	u := *target
	u.Scheme = "wss"
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), realtimeHandshake)
	defer cancel()
	up, resp, err := g.realtimeDialer(agentSubprotocols(r.Header)).DialContext(ctx, u.String(), h)
	c.rec.Attempts++
	if err != nil {
		status := http.StatusBadGateway
		if resp != nil {
			_ = resp.Body.Close()
			if resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
				status = resp.StatusCode
			}
		}
		br.Report(ticket, status != http.StatusBadGateway)
		c.rec.Decision, c.rec.Status, c.rec.Reason = "failed", status, "integration handshake failed"
		writeError(w, status, "upstream_unavailable", "integration "+in.Name+" refused or failed the session", c.rec.RequestID)
		return
	}
	br.Success(ticket)
	c.rec.Upstream = in.Name
	g.relaySession(w, r, c, up, sessionOptions{perMinute: perMinute})
}
