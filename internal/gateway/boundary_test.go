package gateway

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// The tests in this file play the agent as an attacker would: each class of issue 11
// ("the gateway holds whatever the agent sends") has one that failed on the gateway
// before it.

var testPricing = &gw.Pricing{InputPerMillionTokens: "1.00", OutputPerMillionTokens: "2.00", CachedInputPerMillionTokens: "0.10"}

// TestEveryAnswerShapeIsCharged: usage is read from every answer shape the allowed
// operations produce, whatever the agent asked for.
func TestEveryAnswerShapeIsCharged(t *testing.T) {
	tests := []struct {
		name, provider, path, body string
		wantIn, wantOut            int64
		// The agent's view: what the answer must (not) contain.
		wantInAnswer, notInAnswer string
	}{
		{name: "OpenAI stream without include_usage (the SDKs' default)", provider: "openai", path: "/model/chat/completions",
			body: `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, wantIn: 1000, wantOut: 500,
			wantInAnswer: "from openai", notInAnswer: `"usage"`},
		{name: "OpenAI stream with include_usage keeps its usage chunk", provider: "openai", path: "/model/chat/completions",
			body:   `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			wantIn: 1000, wantOut: 500, wantInAnswer: `"usage"`},
		{name: "OpenAI Responses API", provider: "openai", path: "/model/responses",
			body: `{"model":"gpt-4o-mini","input":"hi"}`, wantIn: 1000, wantOut: 500, wantInAnswer: "hello from responses"},
		{name: "OpenAI Responses API streamed", provider: "openai", path: "/model/responses",
			body: `{"model":"gpt-4o-mini","input":"hi","stream":true}`, wantIn: 1000, wantOut: 500, wantInAnswer: "response.completed"},
		{name: "Gemini stream without alt=sse (a JSON array)", provider: "gemini",
			path: "/model/v1beta/models/gemini-2.5-flash:streamGenerateContent", body: `{"contents":[{"parts":[{"text":"hi"}]}]}`,
			wantIn: 1000, wantOut: 500, wantInAnswer: "from"},
		{name: "Gemini stream with alt=sse", provider: "gemini",
			path: "/model/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", body: `{"contents":[{"parts":[{"text":"hi"}]}]}`,
			wantIn: 1000, wantOut: 500, wantInAnswer: "from gemini"},
		{name: "Anthropic stream", provider: "anthropic", path: "/model/v1/messages",
			body: `{"model":"claude-haiku-4-5","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, wantIn: 1000, wantOut: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := startGateway(t, tt.provider, func(c *gw.Config, _ *fakeProviderUpstream) { c.Models[0].Pricing = testPricing })
			resp := tg.post(t, tt.path, tt.body, nil)
			answer, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, answer)
			}
			if tt.wantInAnswer != "" && !strings.Contains(string(answer), tt.wantInAnswer) {
				t.Errorf("answer lacks %q: %s", tt.wantInAnswer, answer)
			}
			if tt.notInAnswer != "" && strings.Contains(string(answer), tt.notInAnswer) {
				t.Errorf("answer holds %q, which the agent did not ask for: %s", tt.notInAnswer, answer)
			}
			recs := tg.audit.waitRecords(t, 1)
			r := recs[0]
			if r.InputTokens != tt.wantIn || r.OutputToks != tt.wantOut || r.UsageEstimated {
				t.Errorf("charged %d in, %d out (estimated %v), want %d and %d", r.InputTokens, r.OutputToks, r.UsageEstimated, tt.wantIn, tt.wantOut)
			}
			// 1000 at 1.00/M + 500 at 2.00/M.
			if r.CostUSD != "0.002000" {
				t.Errorf("cost %q, want 0.002000", r.CostUSD)
			}
			if r.Method != http.MethodPost || r.Path == "" || r.Operation == "" {
				t.Errorf("record has no method, path or operation: %+v", r)
			}
		})
	}
}

// cannedUpstream answers every call with one body of the given content type.
func cannedUpstream(t *testing.T, contentType, body string) *httptest.Server {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

// TestCachedTokensArePriced: cache reads and writes are counted and priced, not
// ignored (they were charged as nothing, or as plain input).
func TestCachedTokensArePriced(t *testing.T) {
	tests := []struct {
		name, provider, path, body, answer string
		wantIn, wantCached                 int64
		wantCost                           string
	}{
		{name: "Anthropic cache read and write", provider: "anthropic", path: "/model/v1/messages",
			body:   `{"model":"claude-haiku-4-5","max_tokens":10,"messages":[]}`,
			answer: `{"type":"message","content":[],"usage":{"input_tokens":100,"cache_creation_input_tokens":400,"cache_read_input_tokens":2000,"output_tokens":50}}`,
			// 100 plain at 1.00 + 400 written at 1.25 + 2000 read at 0.10 + 50 out at 2.00
			// = 0.0001 + 0.0005 + 0.0002 + 0.0001
			wantIn: 2500, wantCached: 2400, wantCost: "0.000900"},
		{name: "OpenAI cached_tokens", provider: "openai", path: "/model/chat/completions",
			body:   `{"model":"gpt-4o-mini","messages":[]}`,
			answer: `{"choices":[],"usage":{"prompt_tokens":3000,"completion_tokens":100,"prompt_tokens_details":{"cached_tokens":2000}}}`,
			// 1000 plain at 1.00 + 2000 cached at 0.10 + 100 out at 2.00
			wantIn: 3000, wantCached: 2000, wantCost: "0.001400"},
		{name: "Gemini cachedContentTokenCount", provider: "gemini", path: "/model/v1beta/models/gemini-2.5-flash:generateContent",
			body:   `{"contents":[]}`,
			answer: `{"candidates":[],"usageMetadata":{"promptTokenCount":3000,"cachedContentTokenCount":2000,"candidatesTokenCount":60,"thoughtsTokenCount":40}}`,
			wantIn: 3000, wantCached: 2000, wantCost: "0.001400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := cannedUpstream(t, "application/json", tt.answer)
			tg := startGateway(t, tt.provider, func(c *gw.Config, _ *fakeProviderUpstream) {
				c.Models[0].Endpoint, c.Models[0].Pricing = up.URL, testPricing
			})
			if resp := tg.post(t, tt.path, tt.body, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			r := tg.audit.waitRecords(t, 1)[0]
			if r.InputTokens != tt.wantIn || r.CachedInputTokens != tt.wantCached || r.CostUSD != tt.wantCost {
				t.Errorf("charged %d in (%d cached) for %s, want %d (%d) for %s", r.InputTokens, r.CachedInputTokens, r.CostUSD, tt.wantIn, tt.wantCached, tt.wantCost)
			}
		})
	}
}

// TestAnswerWithoutUsageIsChargedAnEstimate: never free.
func TestAnswerWithoutUsageIsChargedAnEstimate(t *testing.T) {
	up := cannedUpstream(t, "application/json", `{"choices":[{"message":{"content":"`+strings.Repeat("x", 3000)+`"}}]}`)
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Models[0].Endpoint, c.Models[0].Pricing = up.URL, testPricing
	})
	if resp := tg.post(t, "/model/chat/completions", openaiBody, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := tg.audit.waitRecords(t, 1)[0]
	if !r.UsageEstimated || r.OutputToks < 1000 || r.InputTokens < int64(len(openaiBody)/4) || r.CostUSD == "" || r.CostUSD == "0.000000" {
		t.Errorf("record %+v: want a flagged, non-zero estimate", r)
	}
	if m := getAdmin(t, tg.Gateway, "/metrics"); !strings.Contains(m, "voiceagent_gateway_usage_estimated_total 1") {
		t.Errorf("metric of estimated usage missing")
	}
}

// TestAgentThatHangsUpMidStreamIsCharged: the gateway reads on to the usage.
func TestAgentThatHangsUpMidStreamIsCharged(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hel\"}}]}\n\n")
		w.(http.Flusher).Flush()
		<-release // the rest comes after the agent has gone
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n")
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500}}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) })
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Models[0].Endpoint, c.Models[0].Pricing = up.URL, testPricing
	})
	resp := tg.post(t, "/model/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[]}`, nil)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, "hel") {
		t.Fatalf("first chunk: %q %v", line, err)
	}
	resp.Body.Close()     // the agent hangs up after the first chunk
	release <- struct{}{} // the upstream finishes after the agent has gone
	r := tg.audit.waitRecords(t, 1)
	if len(r) != 1 || r[0].InputTokens != 1000 || r[0].OutputToks != 500 || r[0].CostUSD != "0.002000" {
		t.Fatalf("records after a hang-up: %+v", r)
	}
}

// TestBudgetGaugesClear: a gauge that latched at 1 reported a spent budget forever.
func TestBudgetGaugesClear(t *testing.T) {
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Models[0].Pricing = testPricing
		c.Budget = &gw.Budget{Daily: "0.002", OnExceeded: "Block", AlertAtPercent: 50}
	})
	tg.post(t, "/model/chat/completions", openaiBody, nil) // spends the day's 0.002
	if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusTooManyRequests {
		t.Fatalf("over budget: %d", s)
	}
	if m := getAdmin(t, tg.Gateway, "/metrics"); !strings.Contains(m, "voiceagent_gateway_budget_exceeded 1") {
		t.Fatalf("gauge not set while the budget is spent")
	}
	tg.clock.Step(24 * time.Hour)
	if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
		t.Fatalf("next day: %d", s)
	}
	m := getAdmin(t, tg.Gateway, "/metrics")
	if !strings.Contains(m, "voiceagent_gateway_budget_exceeded 0") || !strings.Contains(m, "voiceagent_gateway_budget_alert 0") {
		t.Errorf("gauges still set the next day")
	}
}

// TestOnlyInferenceOperationsPass: the key's other powers stay in the gateway.
func TestOnlyInferenceOperationsPass(t *testing.T) {
	tests := []struct {
		provider, method, path, body string
		want                         int
	}{
		{"openai", http.MethodGet, "/model/files", "", http.StatusForbidden},
		{"openai", http.MethodPost, "/model/files", `{}`, http.StatusForbidden},
		{"openai", http.MethodPost, "/model/batches", `{}`, http.StatusForbidden},
		{"openai", http.MethodPost, "/model/fine_tuning/jobs", `{}`, http.StatusForbidden},
		{"openai", http.MethodDelete, "/model/models/ft:gpt-4o-mini:acme", "", http.StatusForbidden},
		{"openai", http.MethodGet, "/model/chat/completions", "", http.StatusForbidden},
		{"openai", http.MethodPost, "/model/realtime/client_secrets", `{}`, http.StatusForbidden},
		{"openai", http.MethodPost, "/model/chat/completions", `{"model":"o1-pro","messages":[]}`, http.StatusForbidden},
		{"gemini", http.MethodGet, "/model/v1beta/files", "", http.StatusForbidden},
		{"gemini", http.MethodPost, "/model/v1beta/cachedContents", `{}`, http.StatusForbidden},
		{"gemini", http.MethodPost, "/model/v1beta/tunedModels", `{}`, http.StatusForbidden},
		{"gemini", http.MethodPost, "/model/v1beta/models/gemini-2.5-pro:generateContent", `{}`, http.StatusForbidden},
		{"gemini", http.MethodPost, "/model/v1beta/models/gemini-2.5-flash:batchGenerateContent", `{}`, http.StatusForbidden},
		{"anthropic", http.MethodPost, "/model/v1/messages/batches", `{}`, http.StatusForbidden},
		{"anthropic", http.MethodGet, "/model/v1/models", "", http.StatusForbidden},
		{"anthropic", http.MethodPost, "/model/v1/files", `{}`, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.provider+" "+tt.method+" "+tt.path, func(t *testing.T) {
			tg := startGateway(t, tt.provider, nil)
			req, _ := http.NewRequest(tt.method, tg.URL+tt.path, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if !strings.Contains(string(body), "not_allowed") {
				t.Errorf("refusal does not say why: %s", body)
			}
			if n := tg.upstream.calls.Load(); n != 0 {
				t.Errorf("the upstream got %d calls", n)
			}
		})
	}
	// An extra operation the VoiceAgent opens explicitly passes.
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Models[0].ExtraOperations = []gw.Operation{{Method: http.MethodGet, Path: "/models"}}
	})
	req, _ := http.NewRequest(http.MethodGet, tg.URL+"/model/models", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tg.upstream.calls.Load() != 1 {
		t.Errorf("an opened extra operation did not reach the upstream (status %d)", resp.StatusCode)
	}
}

// echoingUpstream echoes the credential it was sent, as a careless API does, in a
// header and in the body of the given status.
func echoingUpstream(t *testing.T, status int) *httptest.Server {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization") + r.Header.Get("X-Api-Key")
		w.Header().Set("X-Debug-Auth", got)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		b64 := base64.StdEncoding.EncodeToString([]byte(strings.TrimPrefix(got, "Bearer ")))
		fmt.Fprintf(w, `{"error":"bad credentials","received":%q,"b64":%q}`, got, b64)
	}))
	t.Cleanup(s.Close)
	return s
}

// TestNoCredentialReturnsToTheAgent: the injected value, in any of its forms, is
// scrubbed from what goes back, on every route and status.
func TestNoCredentialReturnsToTheAgent(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusBadRequest, http.StatusOK} {
		for _, auth := range []string{"bearer", "header", "basic"} {
			t.Run(fmt.Sprintf("%s %d", auth, status), func(t *testing.T) {
				up := echoingUpstream(t, status)
				tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
					c.Integrations = []gw.HTTPIntegration{{Name: "crm", Type: "rest", Endpoint: up.URL + "/api", AuthType: auth,
						HeaderName: "X-Api-Key", CredentialFile: c.Models[0].CredentialFile}}
				})
				resp := tg.post(t, "/integrations/crm/contacts", `{}`, nil)
				body, _ := io.ReadAll(resp.Body)
				seen := string(body) + fmt.Sprint(resp.Header)
				for _, form := range []string{mountedKey, base64.StdEncoding.EncodeToString([]byte(mountedKey))} {
					if strings.Contains(seen, form) {
						t.Fatalf("the agent got the credential (%s): %s", form, seen)
					}
				}
				if resp.StatusCode != status {
					t.Errorf("status %d, want %d", resp.StatusCode, status)
				}
			})
		}
	}
	// A model answer that echoes the key is scrubbed too.
	up := cannedUpstream(t, "application/json", `{"choices":[],"note":"your key `+mountedKey+` is fine","usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) { c.Models[0].Endpoint = up.URL })
	body, _ := io.ReadAll(tg.post(t, "/model/chat/completions", openaiBody, nil).Body)
	if strings.Contains(string(body), mountedKey) || !strings.Contains(string(body), redactedCredential) {
		t.Errorf("model answer relayed with the key: %s", body)
	}
}

// blockingUpstream holds every call until released, counting those in flight.
type blockingUpstream struct {
	*httptest.Server
	inFlight atomic.Int64
	release  chan struct{}
}

func newBlockingUpstream(t *testing.T) *blockingUpstream {
	b := &blockingUpstream{release: make(chan struct{})}
	b.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		b.inFlight.Add(1)
		defer b.inFlight.Add(-1)
		<-b.release
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	t.Cleanup(b.Close)
	t.Cleanup(func() { close(b.release) })
	return b
}

// TestConcurrentCallsAreBounded: integration calls in flight and body bytes held in
// memory have bounds, so no mix of calls takes the gateway past its memory limit.
func TestConcurrentCallsAreBounded(t *testing.T) {
	t.Run("integration calls in flight", func(t *testing.T) {
		up := newBlockingUpstream(t)
		tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
			c.Integrations = []gw.HTTPIntegration{{Name: "crm", Type: "rest", Endpoint: up.URL + "/api"}}
		})
		var wg sync.WaitGroup
		for i := 0; i < maxIntegrationCalls; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, tg.URL+"/integrations/crm/x", nil)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
		}
		waitForCond(t, "the bound's worth of calls in flight", func() bool { return up.inFlight.Load() == maxIntegrationCalls })
		resp := tg.post(t, "/integrations/crm/x", `{}`, nil)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("call over the bound: %d, want 429", resp.StatusCode)
		}
		for i := 0; i < maxIntegrationCalls; i++ {
			up.release <- struct{}{}
		}
		wg.Wait()
	})
	t.Run("model request bodies in memory", func(t *testing.T) {
		up := newBlockingUpstream(t)
		tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) { c.Models[0].Endpoint = up.URL })
		// 3 MiB: one 600 KiB body takes about 2.3 (its buffer, and twice its size to
		// decode and re-encode it); a second cannot.
		tg.bodyMemory = semaphore.NewWeighted(3 << 20)
		big := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("a", 600<<10) + `"}]}`
		done := make(chan int, 1)
		go func() {
			resp, err := http.Post(tg.URL+"/model/chat/completions", "application/json", strings.NewReader(big))
			if err == nil {
				resp.Body.Close()
				done <- resp.StatusCode
			}
		}()
		waitForCond(t, "the first big call to be held upstream", func() bool { return up.inFlight.Load() == 1 })
		if s := tg.post(t, "/model/chat/completions", big, nil).StatusCode; s != http.StatusServiceUnavailable {
			t.Errorf("second big body while the first is held: %d, want 503", s)
		}
		up.release <- struct{}{}
		if s := <-done; s != http.StatusOK {
			t.Errorf("first call: %d", s)
		}
		if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s == http.StatusServiceUnavailable {
			t.Errorf("memory not given back after the call")
		}
	})
}

// TestRefusalFloodIsSummarised: a flood of bad calls cannot fill the audit queue.
func TestRefusalFloodIsSummarised(t *testing.T) {
	tg := startGateway(t, "openai", nil)
	const flood = 500
	for i := 0; i < flood; i++ {
		req, _ := http.NewRequest(http.MethodGet, tg.URL+"/model/files", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("call %d: %d", i, resp.StatusCode)
		}
	}
	tg.flushRefusals()
	var single, summarised int64
	for _, r := range tg.audit.allRecords(t) {
		if r.Decision != "denied" {
			continue
		}
		if r.Route == "refusals" {
			summarised += r.Count
			if r.Target != "operation_not_allowed" || !strings.Contains(r.Reason, "refused by operation_not_allowed") {
				t.Errorf("summary record %+v", r)
			}
		} else {
			single++
		}
	}
	if single > refusalRecordsBurst+5 || single+summarised != flood {
		t.Errorf("%d single records and %d summarised, want at most ~%d single and %d in all", single, summarised, refusalRecordsBurst, flood)
	}
}

// TestPostIsNotRetriedOnceWritten: a provider may bill a call it received; only one
// that cannot have been acted on is sent again.
func TestPostIsNotRetriedOnceWritten(t *testing.T) {
	var calls atomic.Int64
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		switch {
		case r.Header.Get("X-Test-Case") == "retry-after" && n == 1:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.Header.Get("X-Test-Case") == "retry-after":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
		default: // the request was received, then the connection dies
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
		}
	}))
	t.Cleanup(up.Close)
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) { c.Models[0].Endpoint = up.URL })
	if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusBadGateway {
		t.Errorf("status %d, want 502", s)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("a POST the upstream received was sent %d times", n)
	}
	calls.Store(0)
	if s := tg.post(t, "/model/chat/completions", openaiBody, map[string]string{"X-Test-Case": "retry-after"}).StatusCode; s != http.StatusOK {
		t.Errorf("503 with Retry-After then success: %d", s)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("503 with Retry-After: %d calls, want 2", n)
	}
}

// TestAccountHeadersAreStripped: an agent must not bill the mounted key's calls to
// another organisation or project the key can reach.
func TestAccountHeadersAreStripped(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	t.Cleanup(up.Close)
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) { c.Models[0].Endpoint = up.URL })
	tg.post(t, "/model/chat/completions", openaiBody, map[string]string{
		"OpenAI-Organization": "org-elsewhere", "OpenAI-Project": "proj-without-limits", "X-Goog-User-Project": "other"})
	h := <-seen
	for _, k := range []string{"Openai-Organization", "Openai-Project", "X-Goog-User-Project"} {
		if v := h.Get(k); v != "" {
			t.Errorf("the provider got %s: %s", k, v)
		}
	}
}

// TestProviderSideFeaturesAreRefused: tools the provider runs itself reach hosts the
// NetworkPolicy never allowed, and background runs and priority tiers escape metering.
func TestProviderSideFeaturesAreRefused(t *testing.T) {
	tests := []struct{ provider, path, body string }{
		{"openai", "/model/responses", `{"model":"gpt-4o-mini","input":"x","tools":[{"type":"mcp","server_url":"https://attacker.example/mcp"}]}`},
		{"openai", "/model/responses", `{"model":"gpt-4o-mini","input":"x","tools":[{"type":"web_search"}]}`},
		{"openai", "/model/responses", `{"model":"gpt-4o-mini","input":"x","background":true}`},
		{"openai", "/model/chat/completions", `{"model":"gpt-4o-mini","messages":[],"service_tier":"priority"}`},
		{"openai", "/model/chat/completions", `{"model":"gpt-4o-mini","messages":[],"stream":false,"stream":true}`},
		{"gemini", "/model/v1beta/models/gemini-2.5-flash:generateContent", `{"contents":[],"tools":[{"urlContext":{}}]}`},
		{"gemini", "/model/v1beta/models/gemini-2.5-flash:generateContent", `{"contents":[],"tools":[{"googleSearch":{}}]}`},
		{"anthropic", "/model/v1/messages", `{"model":"claude-haiku-4-5","max_tokens":5,"messages":[],"mcp_servers":[{"type":"url","url":"https://attacker.example"}]}`},
		{"anthropic", "/model/v1/messages", `{"model":"claude-haiku-4-5","max_tokens":5,"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.provider+" "+tt.body, func(t *testing.T) {
			tg := startGateway(t, tt.provider, nil)
			resp := tg.post(t, tt.path, tt.body, nil)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "feature_not_allowed") {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if n := tg.upstream.calls.Load(); n != 0 {
				t.Errorf("the upstream got %d calls", n)
			}
		})
	}
	// Function tools the agent runs itself pass.
	tg := startGateway(t, "openai", nil)
	if s := tg.post(t, "/model/chat/completions", `{"model":"gpt-4o-mini","messages":[],"tools":[{"type":"function","function":{"name":"lookup"}}]}`, nil).StatusCode; s != http.StatusOK {
		t.Errorf("function tools: %d", s)
	}
}

// TestQueryAndOverrideHeadersAreDropped: Google's system parameters and method
// overrides change what the upstream does behind the gateway's checks.
func TestQueryAndOverrideHeadersAreDropped(t *testing.T) {
	seen := make(chan *http.Request, 1)
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Clone(context.Background())
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}`)
	}))
	t.Cleanup(up.Close)
	tg := startGateway(t, "gemini", func(c *gw.Config, _ *fakeProviderUpstream) { c.Models[0].Endpoint = up.URL })
	tg.post(t, "/model/v1beta/models/gemini-2.5-flash:generateContent?fields=candidates&$alt=proto&alt=sse", `{"contents":[]}`,
		map[string]string{"X-Goog-FieldMask": "candidates", "X-HTTP-Method-Override": "DELETE", "Anthropic-Beta": "mcp-client-2025-04-04"})
	r := <-seen
	if r.URL.RawQuery != "alt=sse" {
		t.Errorf("query %q reached the provider, want only alt=sse", r.URL.RawQuery)
	}
	for _, h := range []string{"X-Goog-Fieldmask", "X-Http-Method-Override", "Anthropic-Beta"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("%s reached the provider: %s", h, v)
		}
	}
}

// TestSpendReport: the admin port reports this replica's spend and tokens of the UTC
// day and month, for the operator's status.spend.
func TestSpendReport(t *testing.T) {
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) { c.Models[0].Pricing = testPricing })
	tg.post(t, "/model/chat/completions", openaiBody, nil)
	tg.post(t, "/model/chat/completions", openaiBody, nil)
	var r SpendReport
	if err := json.Unmarshal([]byte(getAdmin(t, tg.Gateway, "/spend")), &r); err != nil {
		t.Fatal(err)
	}
	if r.Day != "2026-11-24" || r.Month != "2026-11" || r.DayMicros != 4000 || r.MonthMicros != 4000 || r.DayTokens != 3000 || r.MonthTokens != 3000 {
		t.Errorf("spend report %+v", r)
	}
	tg.clock.Step(24 * time.Hour) // the next UTC day: the day starts again, the month does not
	_ = json.Unmarshal([]byte(getAdmin(t, tg.Gateway, "/spend")), &r)
	if r.Day != "2026-11-25" || r.DayMicros != 0 || r.MonthMicros != 4000 || r.DayTokens != 0 || r.MonthTokens != 3000 {
		t.Errorf("next day's report %+v", r)
	}
}
