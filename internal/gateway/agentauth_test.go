package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/gorilla/websocket"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// The agent token of the tests: what the renderer puts in the Secret both pods mount.
const (
	agentToken1 = "agent-token-first-0123456789abcdef0123456789abcdef"
	agentToken2 = "agent-token-second-fedcba9876543210fedcba9876543210"
)

// withAgentToken turns agentAuth on with token in its file (a trailing newline, as a
// file written by hand has).
func withAgentToken(t *testing.T, token string, more func(*gw.Config, *fakeProviderUpstream)) func(*gw.Config, *fakeProviderUpstream) {
	return func(c *gw.Config, up *fakeProviderUpstream) {
		file := filepath.Join(c.StateDir, "agent-token")
		if token != "" {
			if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		c.AgentAuth = &gw.AgentAuth{TokenFile: file}
		if more != nil {
			more(c, up)
		}
	}
}

// rewriteToken replaces the token file as the kubelet does: a new file renamed over it.
func rewriteToken(t *testing.T, tg *testGateway, token string) {
	t.Helper()
	tmp := tg.cfg.AgentAuth.TokenFile + ".new"
	if err := os.WriteFile(tmp, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, tg.cfg.AgentAuth.TokenFile); err != nil {
		t.Fatal(err)
	}
}

// serve runs one request through the proxy handler from the given source address.
func (tg *testGateway) serve(method, target, remoteAddr string, header http.Header) *httptest.ResponseRecorder {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(openaiBody)
	}
	req := httptest.NewRequest(method, target, body)
	req.RemoteAddr = remoteAddr
	for k, vs := range header {
		req.Header[k] = vs
	}
	rec := httptest.NewRecorder()
	tg.Handler().ServeHTTP(rec, req)
	return rec
}

func errorType(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not the gateway's JSON: %s", body)
	}
	return e.Error.Type
}

// assertNoToken fails if a token appears in anything the upstream, the audit trail or
// the metrics saw.
func assertNoToken(t *testing.T, tg *testGateway, tokens ...string) {
	t.Helper()
	tg.audit.allRecords(t) // delivered in full
	tg.audit.mu.Lock()
	trail := tg.audit.buf.String()
	tg.audit.mu.Unlock()
	seen := map[string]string{"the audit trail": trail, "the metrics": getAdmin(t, tg.Gateway, "/metrics"),
		"the upstream": strings.Join(tg.upstream.heads(), "\n")}
	for where, s := range seen {
		for _, tok := range tokens {
			if strings.Contains(s, tok) {
				t.Errorf("%s saw the agent token", where)
			}
		}
	}
}

func TestAgentTokenCandidates(t *testing.T) {
	tests := []struct {
		name       string
		header     http.Header
		query      string
		want       []string
		wantQuery  string
		wantNoneOf []string
	}{
		{"nothing", nil, "", nil, "", nil},
		{"openai bearer", http.Header{"Authorization": {"Bearer tok"}}, "", []string{"tok"}, "", nil},
		{"bearer any case and spacing", http.Header{"Authorization": {"  bEaReR   tok  "}}, "", []string{"tok"}, "", nil},
		{"basic is not a token", http.Header{"Authorization": {"Basic dG9rOg=="}}, "", nil, "", nil},
		{"bearer without value", http.Header{"Authorization": {"Bearer "}}, "", nil, "", nil},
		{"anthropic", http.Header{"X-Api-Key": {"tok"}}, "", []string{"tok"}, "", nil},
		{"gemini header", http.Header{"X-Goog-Api-Key": {" tok "}}, "", []string{"tok"}, "", nil},
		{"gemini query", nil, "alt=sse&key=tok", []string{"tok"}, "alt=sse", nil},
		{"query key escaped", nil, "k%65y=t%6Fk&alt=sse", []string{"tok"}, "alt=sse", nil},
		{"every place", http.Header{"Authorization": {"Bearer a"}, "X-Api-Key": {"b"}, "X-Goog-Api-Key": {"c", "d"}}, "key=e&key=f",
			[]string{"a", "b", "c", "d", "e", "f"}, "", nil},
		{"empty key", nil, "key=&model=m", nil, "model=m", nil},
		{"other params keep their spelling", nil, "model=gpt-realtime&x=%41", nil, "model=gpt-realtime&x=%41", nil},
		{"semicolon piece dropped", nil, "model=m&x=1;key=tok", nil, "model=m", []string{"tok"}},
		{"undecodable piece dropped", nil, "a=%zz&key=%zztok&b=1", nil, "b=1", []string{"tok"}},
		{"KEY is not key", nil, "KEY=tok", nil, "KEY=tok", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, q := agentTokenCandidates(tt.header, tt.query)
			if !slices.Equal(got, tt.want) || q != tt.wantQuery {
				t.Errorf("got %q, query %q; want %q, %q", got, q, tt.want, tt.wantQuery)
			}
			for _, s := range tt.wantNoneOf {
				if strings.Contains(q, s) {
					t.Errorf("query %q keeps %q", q, s)
				}
			}
		})
	}
}

// TestAgentAuthGuardsEveryRoute: with agentAuth, a call is admitted with the token in
// any of the places the SDKs put their key and refused without it, on every route, and
// the token reaches no upstream, record or metric.
func TestAgentAuthGuardsEveryRoute(t *testing.T) {
	tests := []struct {
		name     string
		provider string
		method   string
		target   string
		header   http.Header
		status   int
		kind     string // the error type, for refusals
	}{
		{"openai bearer", "openai", "POST", "/model/chat/completions", http.Header{"Authorization": {"Bearer " + agentToken1}}, 200, ""},
		{"anthropic x-api-key", "anthropic", "POST", "/model/v1/messages", http.Header{"X-Api-Key": {agentToken1}}, 200, ""},
		{"gemini x-goog-api-key", "gemini", "POST", "/model/v1beta/models/gemini-2.5-flash:generateContent", http.Header{"X-Goog-Api-Key": {agentToken1}}, 200, ""},
		{"gemini key query", "gemini", "POST", "/model/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=" + agentToken1, nil, 200, ""},
		{"one right among wrong ones", "openai", "POST", "/model/chat/completions?key=wrong",
			http.Header{"Authorization": {"Bearer wrong"}, "X-Api-Key": {agentToken1}}, 200, ""},
		{"integration", "openai", "GET", "/integrations/crm/contacts?key=" + agentToken1, http.Header{"Authorization": {"Bearer " + agentToken1}}, 404, ""},
		{"unknown route with token", "openai", "GET", "/elsewhere", http.Header{"Authorization": {"Bearer " + agentToken1}}, 404, "not_found"},
		{"no token", "openai", "POST", "/model/chat/completions", nil, 401, "agent_token_missing"},
		{"basic is no token", "openai", "POST", "/model/chat/completions", http.Header{"Authorization": {"Basic " + agentToken1}}, 401, "agent_token_missing"},
		{"wrong token", "openai", "POST", "/model/chat/completions", http.Header{"Authorization": {"Bearer " + agentToken2}}, 401, "agent_token_invalid"},
		{"token prefix", "openai", "POST", "/model/chat/completions", http.Header{"Authorization": {"Bearer " + agentToken1[:20]}}, 401, "agent_token_invalid"},
		{"token with a suffix", "anthropic", "POST", "/model/v1/messages", http.Header{"X-Api-Key": {agentToken1 + "x"}}, 401, "agent_token_invalid"},
		{"unknown route without token", "openai", "GET", "/elsewhere", nil, 401, "agent_token_missing"},
		{"integration without token", "openai", "GET", "/integrations/crm/contacts", nil, 401, "agent_token_missing"},
		{"bad method without token", "openai", "TRACE", "/model/chat/completions", nil, 401, "agent_token_missing"},
		{"realtime without token", "openai", "GET", "/model/realtime?model=gpt-realtime",
			http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, 401, "agent_token_missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := startGateway(t, tt.provider, withAgentToken(t, agentToken1, func(c *gw.Config, up *fakeProviderUpstream) {
				c.Integrations = []gw.HTTPIntegration{{Name: "crm", Type: "rest", Endpoint: up.URL + "/crm", AuthType: "header",
					HeaderName: "X-Api-Key", CredentialFile: c.Models[0].CredentialFile}}
			}))
			body := ""
			if tt.method == http.MethodPost {
				switch tt.provider {
				case "anthropic":
					body = `{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
				case "gemini":
					body = `{"contents":[{"parts":[{"text":"hi"}]}]}`
				default:
					body = openaiBody
				}
			}
			req, _ := http.NewRequest(tt.method, tg.URL+tt.target, strings.NewReader(body))
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, got)
			}
			if strings.Contains(string(got)+fmt.Sprint(resp.Header), agentToken1) {
				t.Errorf("the answer holds the token: %s", got)
			}
			if tt.kind != "" && errorType(t, got) != tt.kind {
				t.Errorf("error type %q, want %q: %s", errorType(t, got), tt.kind, got)
			}
			if resp.StatusCode == http.StatusUnauthorized {
				if h := resp.Header.Get("WWW-Authenticate"); h != `Bearer realm="voiceagent-gateway"` {
					t.Errorf("WWW-Authenticate %q", h)
				}
				if n := tg.upstream.calls.Load(); n != 0 {
					t.Errorf("a refused call reached the upstream (%d calls)", n)
				}
				recs := tg.audit.waitRecords(t, 1)
				if len(recs) != 1 || recs[0].Route != "agent_auth" || recs[0].Decision != "denied" || recs[0].Status != 401 ||
					!strings.HasPrefix(recs[0].Reason, tt.kind+": ") || recs[0].Target != "127.0.0.1" {
					t.Errorf("records of the refusal: %+v", recs)
				}
				reason := strings.TrimPrefix(tt.kind, "agent_token_")
				if m := getAdmin(t, tg.Gateway, "/metrics"); !strings.Contains(m, `voiceagent_gateway_agent_auth_failures_total{reason="`+reason+`"} 1`) {
					t.Errorf("failure not counted as %s", reason)
				}
			} else if tg.upstream.calls.Load() == 0 && tt.kind == "" {
				t.Error("an admitted call never reached the upstream")
			}
			assertNoToken(t, tg, agentToken1)
		})
	}
}

// TestAgentTokenRotation: a token written to the file is accepted at once (the file is
// re-read when a token does not match); the one it replaced stays accepted for the
// grace, then is refused.
func TestAgentTokenRotation(t *testing.T) {
	tg := startGateway(t, "openai", withAgentToken(t, agentToken1, func(c *gw.Config, _ *fakeProviderUpstream) {
		c.AgentAuth.PreviousTokenGrace = gw.Duration{Duration: time.Minute}
	}))
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	call := func(tok string) int {
		return tg.serve(http.MethodPost, "/model/chat/completions", "10.0.0.5:40000", bearer(tok)).Code
	}
	if c := call(agentToken1); c != 200 {
		t.Fatalf("first token: %d", c)
	}
	rewriteToken(t, tg, agentToken2+"\n")
	if c := call(agentToken2); c != 200 {
		t.Fatalf("new token right after the rewrite: %d", c)
	}
	tg.clock.Step(59 * time.Second)
	if c := call(agentToken1); c != 200 {
		t.Fatalf("replaced token within the grace: %d", c)
	}
	tg.clock.Step(2 * time.Second)
	if c := call(agentToken1); c != 401 {
		t.Fatalf("replaced token after the grace: %d, want 401", c)
	}
	if c := call(agentToken2); c != 200 {
		t.Fatalf("new token after the grace: %d", c)
	}
	// A file that is emptied or unreadable keeps the token in force, and readiness says
	// which file is wrong.
	tg.clock.Step(time.Second)
	rewriteToken(t, tg, "\n")
	if err := tg.checkReady(); err == nil || !strings.Contains(err.Error(), tg.cfg.AgentAuth.TokenFile) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("readiness with an empty token file: %v", err)
	}
	if c := call(agentToken2); c != 200 {
		t.Errorf("token in force while the file is empty: %d", c)
	}
	assertNoToken(t, tg, agentToken1, agentToken2)
}

// TestAgentTokenAnnouncedBeforeUse: a rotation first announces the new token in the
// next file, which the gateway accepts beside the current one, before any agent pod uses
// it; once it becomes the token, the old one is accepted for the grace only.
func TestAgentTokenAnnouncedBeforeUse(t *testing.T) {
	var next string
	tg := startGateway(t, "openai", withAgentToken(t, agentToken1, func(c *gw.Config, _ *fakeProviderUpstream) {
		next = filepath.Join(c.StateDir, "agent-token-next")
		c.AgentAuth.NextTokenFile = next
		c.AgentAuth.PreviousTokenGrace = gw.Duration{Duration: time.Minute}
	}))
	call := func(tok string) int {
		return tg.serve(http.MethodPost, "/model/chat/completions", "10.0.0.5:40000", http.Header{"Authorization": {"Bearer " + tok}}).Code
	}
	if c := call(agentToken2); c != 401 {
		t.Fatalf("a token nobody announced: %d, want 401", c)
	}
	tg.clock.Step(2 * time.Second) // past the re-read throttle
	if err := os.WriteFile(next, []byte(agentToken2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := call(agentToken2); c != 200 {
		t.Fatalf("the announced token: %d", c)
	}
	if c := call(agentToken1); c != 200 {
		t.Fatalf("the current token while a rotation is announced: %d", c)
	}
	// Phase two: the announced token becomes the token, next goes.
	tg.clock.Step(2 * time.Second)
	rewriteToken(t, tg, agentToken2+"\n")
	if err := os.Remove(next); err != nil {
		t.Fatal(err)
	}
	if err := tg.checkReady(); err != nil {
		t.Fatal(err)
	}
	if c := call(agentToken2); c != 200 {
		t.Fatalf("the new token: %d", c)
	}
	tg.clock.Step(61 * time.Second)
	if c := call(agentToken1); c != 401 {
		t.Fatalf("the old token after the grace: %d, want 401", c)
	}
	assertNoToken(t, tg, agentToken1, agentToken2)
}

// TestAgentTokenFileMissing: without its token file the gateway starts, is not ready
// (naming the file), answers every call 503, and serves once the file appears.
func TestAgentTokenFileMissing(t *testing.T) {
	tg := startGateway(t, "openai", withAgentToken(t, "", nil))
	err := tg.checkReady()
	if err == nil || !strings.Contains(err.Error(), tg.cfg.AgentAuth.TokenFile) {
		t.Fatalf("readiness without the token file: %v", err)
	}
	rec := tg.serve(http.MethodPost, "/model/chat/completions", "10.0.0.5:40000", http.Header{"Authorization": {"Bearer " + agentToken1}})
	if rec.Code != http.StatusServiceUnavailable || errorType(t, rec.Body.Bytes()) != "agent_token_unavailable" || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("call without a token file: %d %s", rec.Code, rec.Body)
	}
	rewriteToken(t, tg, agentToken1)
	tg.clock.Step(time.Second)
	if err := tg.checkReady(); err != nil {
		t.Fatalf("readiness once the file exists: %v", err)
	}
	if rec := tg.serve(http.MethodPost, "/model/chat/completions", "10.0.0.5:40000", http.Header{"Authorization": {"Bearer " + agentToken1}}); rec.Code != 200 {
		t.Fatalf("call once the file exists: %d %s", rec.Code, rec.Body)
	}
}

// TestAgentAuthThrottlesASource: after 10 failures a source gets 429, even with the
// right token, until its bucket refills (one attempt per 6 s); other sources are not
// affected; a success does not reset the count.
func TestAgentAuthThrottlesASource(t *testing.T) {
	tg := startGateway(t, "openai", withAgentToken(t, agentToken1, nil))
	good := http.Header{"Authorization": {"Bearer " + agentToken1}}
	bad := http.Header{"Authorization": {"Bearer " + agentToken2}}
	const attacker, agent = "10.0.0.66:5000", "10.0.0.5:40000"
	for i := range 10 {
		if rec := tg.serve(http.MethodPost, "/model/chat/completions", attacker, bad); rec.Code != 401 {
			t.Fatalf("failure %d: %d", i+1, rec.Code)
		}
		tg.clock.Step(10 * time.Millisecond)
	}
	for _, h := range []http.Header{bad, good, nil} {
		rec := tg.serve(http.MethodPost, "/model/chat/completions", attacker, h)
		if rec.Code != http.StatusTooManyRequests || errorType(t, rec.Body.Bytes()) != "agent_token_throttled" {
			t.Fatalf("attempt after 10 failures: %d %s", rec.Code, rec.Body)
		}
		if ra := rec.Header().Get("Retry-After"); ra != "6" {
			t.Errorf("Retry-After %q, want 6", ra)
		}
	}
	// The same source on another port is the same source; IPv4-mapped IPv6 too.
	if rec := tg.serve(http.MethodPost, "/model/chat/completions", "[::ffff:10.0.0.66]:6000", good); rec.Code != http.StatusTooManyRequests {
		t.Errorf("mapped spelling of the throttled source: %d", rec.Code)
	}
	if rec := tg.serve(http.MethodPost, "/model/chat/completions", agent, good); rec.Code != 200 {
		t.Fatalf("another source: %d", rec.Code)
	}
	tg.clock.Step(6 * time.Second)
	if rec := tg.serve(http.MethodPost, "/model/chat/completions", attacker, good); rec.Code != 200 {
		t.Fatalf("right token once one attempt refilled: %d %s", rec.Code, rec.Body)
	}
	// The success left the bucket as it was: the next failure uses the refilled attempt.
	if rec := tg.serve(http.MethodPost, "/model/chat/completions", attacker, bad); rec.Code != 401 {
		t.Fatalf("wrong token with an attempt left: %d", rec.Code)
	}
	if rec := tg.serve(http.MethodPost, "/model/chat/completions", attacker, good); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("right token after that failure: %d, want 429", rec.Code)
	}
	m := getAdmin(t, tg.Gateway, "/metrics")
	for _, want := range []string{`voiceagent_gateway_agent_auth_failures_total{reason="invalid"} 11`,
		`voiceagent_gateway_agent_auth_failures_total{reason="throttled"} 5`, `voiceagent_gateway_agent_auth_failures_total{reason="missing"} 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	assertNoToken(t, tg, agentToken1, agentToken2)
}

// TestAgentAuthThrottleIsBounded: a flood from more sources than the map holds keeps
// it at its bound, forgetting the sources that failed longest ago.
func TestAgentAuthThrottleIsBounded(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	th := newAuthThrottle(clock, maxAuthSources)
	for i := range maxAuthSources + 1000 {
		src := fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
		for range authFailureBurst {
			th.fail(src)
		}
		clock.Step(time.Millisecond)
	}
	if n := th.sources(); n != maxAuthSources {
		t.Fatalf("%d sources held, want %d", n, maxAuthSources)
	}
	if throttled, _ := th.throttled("10.0.0.0"); throttled {
		t.Error("the source that failed longest ago is still held")
	}
	last := maxAuthSources + 999
	if throttled, _ := th.throttled(fmt.Sprintf("10.%d.%d.%d", last>>16&0xff, last>>8&0xff, last&0xff)); !throttled {
		t.Error("the latest source is not throttled")
	}
}

// TestAgentAuthFloodDoesNotFillTheAudit: refusals of unauthenticated calls get a record
// each up to the refusal rate; the rest are counted in one summary record.
func TestAgentAuthFloodDoesNotFillTheAudit(t *testing.T) {
	tg := startGateway(t, "openai", withAgentToken(t, agentToken1, nil))
	const n = 300
	for i := range n {
		rec := tg.serve(http.MethodGet, "/model/chat/completions", fmt.Sprintf("10.1.%d.%d:1000", i>>8, i&0xff), nil)
		if rec.Code != 401 {
			t.Fatalf("call %d: %d", i, rec.Code)
		}
	}
	tg.flushRefusals()
	var own, summarized int64
	for _, r := range tg.audit.records(t) {
		switch {
		case r.Route == "agent_auth":
			own++
		case r.Route == "refusals" && r.Target == "agent_token_missing":
			summarized += r.Count
		}
	}
	if own > refusalRecordsBurst+1 || own+summarized != n {
		t.Errorf("%d records of their own and %d summarized, want at most %d and %d in all", own, summarized, refusalRecordsBurst+1, n)
	}
}

// TestAgentAuthRealtimeUpgrade: a WebSocket session is refused 401 before the upgrade
// without the token and relayed with it; the provider never sees it.
func TestAgentAuthRealtimeUpgrade(t *testing.T) {
	up := newFakeRealtimeUpstream(t)
	tg := startGateway(t, "openai", withAgentToken(t, agentToken1, func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Models[0].Endpoint, c.Models[0].Name = up.URL+"/v1", "gpt-realtime"
		c.Integrations = []gw.HTTPIntegration{{Name: "stt", Type: "rest", Endpoint: up.URL + "/v1", CredentialFile: c.Models[0].CredentialFile}}
	}))
	for _, path := range []string{"/model/realtime?model=gpt-realtime", "/integrations/stt/listen?encoding=linear16"} {
		_, resp, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial(wsURL(tg.URL)+path, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("%s without the token: %v %v", path, err, resp)
		}
		conn, resp, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial(wsURL(tg.URL)+path+"&key="+agentToken1,
			http.Header{"Authorization": {"Bearer " + agentToken1}})
		if err != nil {
			t.Fatalf("%s with the token: %v %v", path, err, resp)
		}
		readUntil(t, conn, "session.created")
		conn.Close()
	}
	up.mu.Lock()
	heads := strings.Join(up.heads, "\n")
	keys := slices.Clone(up.keys)
	up.mu.Unlock()
	if len(keys) != 2 || strings.Contains(heads, agentToken1) {
		t.Errorf("the provider saw %d handshakes, the token in them: %v", len(keys), strings.Contains(heads, agentToken1))
	}
	for _, k := range keys {
		if k != mountedKey {
			t.Errorf("the provider got key %q", k)
		}
	}
}
