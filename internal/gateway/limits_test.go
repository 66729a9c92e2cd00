package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

const openaiBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

// TestRateLimitUnderTenfoldOverload sends ten times what the bucket allows from
// concurrent clients. With the clock frozen the bucket admits exactly its burst; every
// other request is answered 429 with Retry-After at once, none waits.
func TestRateLimitUnderTenfoldOverload(t *testing.T) {
	const burst = 50
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Limits = gw.Limits{RequestsPerSecond: 2, Burst: burst}
	})
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(10 * time.Second)
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < burst*10/20; i++ {
				req, _ := http.NewRequest(http.MethodPost, tg.URL+"/model/chat/completions", strings.NewReader(openaiBody))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					admitted.Add(1)
				case http.StatusTooManyRequests:
					if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 {
						t.Errorf("429 without a usable Retry-After: %q", resp.Header.Get("Retry-After"))
					}
					refused.Add(1)
				default:
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	if time.Now().After(deadline) {
		t.Error("requests waited past their deadline")
	}
	if admitted.Load() != burst || refused.Load() != burst*9 {
		t.Errorf("admitted %d refused %d, want %d and %d", admitted.Load(), refused.Load(), burst, burst*9)
	}
	// Two seconds later exactly four more are admitted (2/s sustained).
	tg.clock.Step(2 * time.Second)
	ok := 0
	for i := 0; i < 10; i++ {
		if tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode == http.StatusOK {
			ok++
		}
	}
	if ok != 4 {
		t.Errorf("after 2s, %d admitted, want 4", ok)
	}
}

func TestDailyBudgetBlocksSurvivesRestartAndResetsNextUTCDay(t *testing.T) {
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		// Each call costs 1000*1.00/M + 500*2.00/M = 0.002 USD; the budget allows 3.
		c.Models[0].Pricing = &gw.Pricing{InputPerMillionTokens: "1.00", OutputPerMillionTokens: "2.00"}
		c.Budget = &gw.Budget{Daily: "0.006", Monthly: "100", OnExceeded: "Block", AlertAtPercent: 50}
	})
	for i := 0; i < 3; i++ {
		if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
			t.Fatalf("call %d: status %d", i, s)
		}
	}
	resp := tg.post(t, "/model/chat/completions", openaiBody, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "budget") {
		t.Fatalf("over budget: status %d body %s", resp.StatusCode, body)
	}
	calls := tg.upstream.calls.Load()
	if calls != 3 {
		t.Errorf("upstream got %d calls, want 3: a blocked call must not reach it", calls)
	}
	recs := tg.audit.records(t)
	if last := recs[len(recs)-1]; last.Decision != "denied" || !strings.Contains(last.Reason, "budget") {
		t.Errorf("last record %+v", last)
	}
	// The third call starts with 0.004 of 0.006 spent: past alertAtPercent (50).
	if recs[1].BudgetAlert || !recs[2].BudgetAlert {
		t.Errorf("alert flags %v %v, want false true", recs[1].BudgetAlert, recs[2].BudgetAlert)
	}

	// A restarted gateway (same state dir) still refuses.
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	g2, err := New(Options{ConfigPath: tg.opts.ConfigPath, Clock: tg.clock, AuditOut: io.Discard, Transport: upstreamTransport(tg.upstream.Server)})
	if err != nil {
		t.Fatal(err)
	}
	// Stopped before the temp dir is removed: its audit queue writes there until then.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g2.Stop(ctx)
	})
	if d := g2.budget.Check(); d.Allowed {
		t.Errorf("after restart the spent budget allows calls: %+v", d)
	}
	// The next UTC day resets the daily budget, not the monthly spend.
	tg.clock.Step(12 * time.Hour)
	if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
		t.Errorf("next UTC day: status %d", s)
	}
	day, month := tg.budget.Spent()
	if day.String() != "0.002000" || month.String() != "0.008000" {
		t.Errorf("spent day %s month %s", day, month)
	}
}

func TestAlertOnlyBudgetAllowsAndFlags(t *testing.T) {
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Models[0].Pricing = &gw.Pricing{InputPerMillionTokens: "1.00", OutputPerMillionTokens: "2.00"}
		c.Budget = &gw.Budget{Daily: "0.001", OnExceeded: "AlertOnly", AlertAtPercent: 80}
	})
	for i := 0; i < 3; i++ {
		if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
			t.Fatalf("AlertOnly refused call %d: %d", i, s)
		}
	}
	recs := tg.audit.records(t)
	if !recs[2].BudgetAlert {
		t.Errorf("over-budget call not flagged: %+v", recs[2])
	}
}

func TestBreakerOpensFailsOverAndRecovers(t *testing.T) {
	var fallback *fakeProviderUpstream
	tg := startGateway(t, "openai", func(c *gw.Config, up *fakeProviderUpstream) {
		fallback = newFakeProviderUpstream(t, mountedKey)
		c.Models = append(c.Models, gw.Model{Provider: "openai-compatible", Name: "fallback", Endpoint: fallback.URL + "/v1",
			Timeout: gw.Duration{Duration: 5 * time.Second}, CredentialFile: c.Models[0].CredentialFile})
		c.Breaker = gw.Breaker{FailureThreshold: 2, OpenDuration: gw.Duration{Duration: 30 * time.Second}}
	})
	// Both test servers share one CA-trusting transport: use the primary's for both.
	tg.upstream.failNext.Store(1000)
	for i := 0; i < 4; i++ {
		resp := tg.post(t, "/model/chat/completions", openaiBody, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("call %d: status %d, want the fallback's 200", i, resp.StatusCode)
		}
	}
	primaryCalls := tg.upstream.calls.Load()
	// Two failing calls open the breaker: 2 upstream calls. A 503 without Retry-After
	// is not retried on the same upstream (the provider may have billed the call).
	if primaryCalls != 2 {
		t.Errorf("primary got %d calls, want 2 (then the open circuit keeps traffic away)", primaryCalls)
	}
	if fallback.calls.Load() != 4 {
		t.Errorf("fallback got %d calls, want 4", fallback.calls.Load())
	}
	recs := tg.audit.records(t)
	if recs[3].Upstream != "openai-compatible/fallback" {
		t.Errorf("record upstream %q", recs[3].Upstream)
	}
	// After openDuration one half-open probe goes to the healed primary and closes it.
	tg.upstream.failNext.Store(0)
	tg.clock.Step(31 * time.Second)
	if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
		t.Fatalf("probe: %d", s)
	}
	if tg.upstream.calls.Load() != primaryCalls+1 {
		t.Errorf("half-open probe did not reach the primary")
	}
	if s := tg.breaker(tg.cfg.Models[0].Endpoint).State().String(); !strings.EqualFold(s, "closed") {
		t.Errorf("breaker %s after a good probe", s)
	}
}

func TestRetriesHonourRetryAfterAndErrorsAreSanitised(t *testing.T) {
	tg := startGateway(t, "openai", nil)
	tg.upstream.failStatus = http.StatusTooManyRequests
	tg.upstream.retryAfter = "0"
	tg.upstream.failNext.Store(2)
	if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
		t.Fatalf("two 429s then success: got %d", s)
	}
	if r := tg.audit.records(t)[0]; r.Attempts != 3 {
		t.Errorf("attempts %d, want 3", r.Attempts)
	}
	// An upstream 4xx is passed on with its status but none of its body.
	if err := os.WriteFile(tg.keyFile, []byte("wrong-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg.clock.Step(credentialRecheck) // the file is looked at again
	resp := tg.post(t, "/model/chat/completions", openaiBody, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, leak := range []string{"wrong-key", "internal-host-7", "8443", "not valid"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("error body leaks %q: %s", leak, body)
		}
	}
	var e struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Type != "UNAUTHENTICATED" {
		t.Errorf("error body %s: want the provider's error kind only", body)
	}
}

// rotateKey swaps the mounted key file as the kubelet does (a new file renamed over
// the old one), and makes the upstream accept only the new key.
func (tg *testGateway) rotateKey(t *testing.T, key string) {
	t.Helper()
	tg.upstream.wantKey = key
	if err := os.WriteFile(tg.keyFile+".new", []byte(key), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tg.keyFile+".new", tg.keyFile); err != nil {
		t.Fatal(err)
	}
}

func TestCredentialRotationWithoutRestart(t *testing.T) {
	tg := startGateway(t, "anthropic", nil)
	body := `{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	if s := tg.post(t, "/model/v1/messages", body, nil).StatusCode; s != http.StatusOK {
		t.Fatalf("status %d", s)
	}
	// Rotate: the Secret volume now holds a new key and the upstream only accepts it.
	tg.rotateKey(t, "rotated-key-0002")
	// The file is looked at once per credentialRecheck: the next call after it has the
	// new key.
	tg.clock.Step(credentialRecheck)
	if s := tg.post(t, "/model/v1/messages", body, nil).StatusCode; s != http.StatusOK {
		t.Fatalf("after rotation: status %d", s)
	}
	keys := tg.upstream.keys()
	if keys[len(keys)-1] != "rotated-key-0002" {
		t.Errorf("keys seen %v", keys)
	}
}

// Within credentialRecheck the file is not looked at, unless the upstream refused the
// key: then the next call reads it again, rather than failing for up to a second.
func TestCredentialRereadAfterTheUpstreamRefusedIt(t *testing.T) {
	tg := startGateway(t, "anthropic", nil)
	body := `{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	if s := tg.post(t, "/model/v1/messages", body, nil).StatusCode; s != http.StatusOK {
		t.Fatalf("status %d", s)
	}
	tg.rotateKey(t, "rotated-key-0003")
	// The clock has not moved: the cached key goes, and the provider refuses it.
	if s := tg.post(t, "/model/v1/messages", body, nil).StatusCode; s != http.StatusUnauthorized {
		t.Fatalf("first call after rotation: status %d, want the provider's 401", s)
	}
	if s := tg.post(t, "/model/v1/messages", body, nil).StatusCode; s != http.StatusOK {
		t.Fatalf("second call after rotation: status %d, want the new key used", s)
	}
	keys := tg.upstream.keys()
	if got := keys[len(keys)-1]; got != "rotated-key-0003" {
		t.Errorf("last key seen %q", got)
	}
}

func TestAgentKeysAreStripped(t *testing.T) {
	tg := startGateway(t, "gemini", nil)
	resp := tg.post(t, "/model/v1beta/models/gemini-2.5-flash:generateContent?key=agent-key", `{"contents":[{"parts":[{"text":"hi"}]}]}`,
		map[string]string{"X-Goog-Api-Key": "agent-key", "Authorization": "Bearer agent-key"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, k := range tg.upstream.keys() {
		if k != mountedKey {
			t.Errorf("upstream saw %q", k)
		}
	}
}

// An agent that asks for compression (every SDK on net/http, httpx, fetch does) must
// not get its spend uncounted: the gateway asks the provider for the plain answer.
func TestUsageCountedWhenTheAgentAsksForCompression(t *testing.T) {
	tg := startGateway(t, "openai", nil)
	resp := tg.post(t, "/model/chat/completions", openaiBody, map[string]string{"Accept-Encoding": "gzip, deflate, br"})
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !json.Valid(body) {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	recs := tg.audit.waitRecords(t, 1)
	if r := recs[0]; r.InputTokens != fakeInputTokens || r.OutputToks == 0 {
		t.Fatalf("audit record %+v: usage not counted", r)
	}
}

func TestConfigReloadChangesLimitsLive(t *testing.T) {
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Limits = gw.Limits{RequestsPerSecond: 1, Burst: 1}
	})
	codes := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "%d ", tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode)
		}
		return b.String()
	}
	if got := codes(2); got != "200 429 " {
		t.Fatalf("before reload: %s", got)
	}
	tg.cfg.Limits = gw.Limits{RequestsPerSecond: 1, Burst: 3}
	writeConfig(t, tg.dir, tg.cfg)
	if err := tg.Reload(); err != nil {
		t.Fatal(err)
	}
	tg.clock.Step(3 * time.Second)
	if got := codes(4); got != "200 200 200 429 " {
		t.Errorf("after reload: %s", got)
	}
	// An invalid file is refused and the running configuration stays.
	if err := os.WriteFile(tg.opts.ConfigPath, []byte(`{"version":1,"listen":{"proxy":"0.0.0.0:1"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tg.Reload(); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("invalid config accepted: %v", err)
	}
	if tg.Gateway.cfg.Load().VoiceAgent != "support-line" {
		t.Error("running configuration lost")
	}
}

// Every configuration the gateway puts in force for a new VoiceAgent generation is a
// record in the audit trail, naming who changed the spec: the operator's changes reach
// the sinks through the gateway, which holds their credentials.
func TestConfigurationChangesAreAudited(t *testing.T) {
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Generation, c.SpecManagers = 1, []string{"kubectl-client-side-apply"}
	})
	// A reload with the same generation (a limit tuned by hand in the file) is not a
	// new VoiceAgent generation and adds no configuration record.
	tg.cfg.Limits.Burst++
	writeConfig(t, tg.dir, tg.cfg)
	if err := tg.Reload(); err != nil {
		t.Fatal(err)
	}
	tg.cfg.Generation, tg.cfg.SpecManagers = 2, []string{"argocd-controller (apply)", "kubectl-client-side-apply"}
	tg.cfg.Breaker.FailureThreshold++
	writeConfig(t, tg.dir, tg.cfg)
	if err := tg.Reload(); err != nil {
		t.Fatal(err)
	}
	recs := tg.audit.configRecords(t)
	if len(recs) != 2 {
		t.Fatalf("%d configuration records, want 2 (start, generation 2): %+v", len(recs), recs)
	}
	if recs[0].Generation != 1 || recs[0].Decision != "applied" || len(recs[0].SpecManagers) != 1 {
		t.Errorf("start record %+v", recs[0])
	}
	if recs[1].Generation != 2 || !strings.Contains(recs[1].Reason, "generation 2") || recs[1].SpecManagers[0] != "argocd-controller (apply)" ||
		!reflect.DeepEqual(recs[1].Changed, []string{"circuitBreaker"}) {
		t.Errorf("reload record %+v", recs[1])
	}
}

func TestIntegrationAuthAndRateLimit(t *testing.T) {
	var seen atomic.Value
	tg := startGateway(t, "openai", func(c *gw.Config, up *fakeProviderUpstream) {
		c.Integrations = []gw.HTTPIntegration{{Name: "crm", Type: "rest", Endpoint: up.URL + "/crm", AuthType: "header",
			HeaderName: "X-Api-Key", CredentialFile: c.Models[0].CredentialFile, RequestsPerMinute: 60, Burst: 2}}
	})
	_ = seen
	codes := ""
	for i := 0; i < 3; i++ {
		codes += strconv.Itoa(tg.post(t, "/integrations/crm/customers", `{}`, map[string]string{"X-Api-Key": agentKey}).StatusCode) + " "
	}
	// The fake answers 404 for /crm paths after checking the key (401 otherwise).
	if codes != "404 404 429 " {
		t.Errorf("codes %s", codes)
	}
	if s := tg.post(t, "/integrations/nope/x", `{}`, nil).StatusCode; s != http.StatusNotFound {
		t.Errorf("unknown integration: %d", s)
	}
}

// A fallback of the same format gets its own model name, not the one the agent asked
// the primary for; the primary keeps the agent's.
func TestSameFormatFallbackGetsItsOwnModelName(t *testing.T) {
	for _, tt := range []struct {
		provider, path, body, wantPrimary, wantFallback string
		fromPath                                        bool
	}{
		{"openai", "/model/chat/completions", openaiBody, `"model":"gpt-4o-mini"`, `"model":"fallback-model"`, false},
		{"anthropic", "/model/v1/messages", `{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`,
			`"model":"claude-haiku-4-5"`, `"model":"fallback-model"`, false},
		{"gemini", "/model/v1beta/models/gemini-2.5-flash:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`,
			"/v1beta/models/gemini-2.5-flash:generateContent", "/v1beta/models/fallback-model:generateContent", true},
	} {
		t.Run(tt.provider, func(t *testing.T) {
			var fallback *fakeProviderUpstream
			tg := startGateway(t, tt.provider, func(c *gw.Config, primary *fakeProviderUpstream) {
				fallback = newFakeProviderUpstream(t, mountedKey)
				fm := c.Models[0]
				fm.Name, fm.Endpoint = "fallback-model", strings.Replace(fm.Endpoint, primary.URL, fallback.URL, 1)
				c.Models = append(c.Models, fm)
			})
			tg.upstream.failNext.Store(1) // the first call's one try on the primary (a 503 is not retried)
			for i := 0; i < 2; i++ {
				if resp := tg.post(t, tt.path, tt.body, nil); resp.StatusCode != http.StatusOK {
					t.Fatalf("call %d: %d", i, resp.StatusCode)
				}
			}
			seen := func(u *fakeProviderUpstream) string {
				u.mu.Lock()
				defer u.mu.Unlock()
				if tt.fromPath {
					return strings.Join(u.paths, " ")
				}
				return strings.Join(u.bodies, " ")
			}
			if got := seen(fallback); !strings.Contains(got, tt.wantFallback) {
				t.Errorf("fallback got %s, want %s", got, tt.wantFallback)
			}
			if got := seen(tg.upstream); !strings.Contains(got, tt.wantPrimary) || strings.Contains(got, "fallback-model") {
				t.Errorf("primary got %s, want %s", got, tt.wantPrimary)
			}
		})
	}
}

func TestWithModel(t *testing.T) {
	for _, tt := range []struct {
		family, path, body, model, wantPath, wantBody string
	}{
		{"gemini", "/v1beta/models/gemini-2.5-pro:generateContent", `{}`, "gemini-2.5-flash", "/v1beta/models/gemini-2.5-flash:generateContent", `{}`},
		{"gemini", "/v1beta/models/gemini-2.5-pro:generateContent", `{}`, "tuned x/y", "/v1beta/models/gemini-2.5-pro:generateContent", `{}`},
		{"openai", "/chat/completions", `{"model":"gpt-4o","n":1}`, "llama-3", "/chat/completions", `{"model":"llama-3","n":1}`},
		{"anthropic", "/v1/messages", `{"max_tokens":5}`, "claude-haiku-4-5", "/v1/messages", `{"max_tokens":5,"model":"claude-haiku-4-5"}`},
		{"openai", "/chat/completions", `not json`, "llama-3", "/chat/completions", `not json`},
	} {
		path, body := withModel(tt.family, tt.path, []byte(tt.body), tt.model)
		if path != tt.wantPath || string(body) != tt.wantBody {
			t.Errorf("withModel(%s, %s, %s, %q) = %s %s, want %s %s", tt.family, tt.path, tt.body, tt.model, path, body, tt.wantPath, tt.wantBody)
		}
	}
}
