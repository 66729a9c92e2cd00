package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/testredis"
)

// withLimitStore configures three replicas' worth of shares and the whole VoiceAgent's
// limits in the store at srv. Each OpenAI call of the fake upstream costs 0.002 USD.
func withLimitStore(srv *testredis.Server, policy, prefix string) func(*gw.Config, *fakeProviderUpstream) {
	return func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Replicas = 3
		c.Models[0].Pricing = &gw.Pricing{InputPerMillionTokens: "1.00", OutputPerMillionTokens: "2.00"}
		c.Budget = &gw.Budget{Daily: "0.007", OnExceeded: "Block", AlertAtPercent: 80} // a third of 0.020
		c.LimitStore = &gw.LimitStore{
			Redis:         gw.RedisStore{Address: srv.Addr(), TLS: gw.RedisTLS{Disabled: true}, Timeout: gw.Duration{Duration: time.Second}},
			FailurePolicy: policy,
			KeyPrefix:     prefix,
			Global:        gw.GlobalLimits{Daily: "0.020", MaxConcurrentCalls: 30},
		}
	}
}

// With a store, a VoiceAgent whose calls all land on one replica gets its whole
// budget there, not a third of it, and the other replicas see it spent.
func TestLimitStoreBudgetIsTheWholeVoiceAgents(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	prefix := "voiceagent:{callcenter/support-line-" + t.Name() + "}:"
	var gws []*testGateway
	for range 3 {
		// The day a charge counts in is the store's: on the store's clock here, as
		// replicas in one cluster are within seconds of it.
		gws = append(gws, startGatewayAt(t, time.Now(), "openai", withLimitStore(srv, gw.LimitStoreFailClosed, prefix)))
	}
	for i := range 10 { // 10 × 0.002 = the whole 0.020; the replica's share is 0.007
		if s := gws[0].post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
			t.Fatalf("call %d on the first replica: status %d", i, s)
		}
	}
	for i, g := range gws {
		resp := g.post(t, "/model/chat/completions", openaiBody, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "daily budget") {
			t.Fatalf("replica %d after the VoiceAgent's budget is spent: status %d body %s", i, resp.StatusCode, body)
		}
	}
	if n := gws[0].upstream.calls.Load(); n != 10 {
		t.Fatalf("upstream of the first replica got %d calls, want 10", n)
	}
	if r := gws[1].spendReport(); r.LimitStore == nil || r.LimitStore.State != "Ready" || r.LimitStore.Reason != "Connected" {
		t.Fatalf("spend report's limit store: %+v", r.LimitStore)
	}
}

// With the store gone, FailClosed refuses with 503 and FailOpen serves on the
// replica's shares; both say so in the spend report and recover by themselves.
func TestLimitStoreFailurePolicies(t *testing.T) {
	for _, policy := range []string{gw.LimitStoreFailClosed, gw.LimitStoreFailOpen} {
		t.Run(policy, func(t *testing.T) {
			srv := testredis.Start(t, testredis.Options{})
			tg := startGateway(t, "openai", withLimitStore(srv, policy, "voiceagent:{callcenter/"+policy+"}:"))
			if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
				t.Fatalf("with the store up: status %d", s)
			}
			srv.Stop()
			resp := tg.post(t, "/model/chat/completions", openaiBody, nil)
			body, _ := io.ReadAll(resp.Body)
			r := tg.spendReport()
			if r.LimitStore == nil || r.LimitStore.State != "Unavailable" || r.LimitStore.Reason != "Unreachable" {
				t.Fatalf("spend report with the store down: %+v", r.LimitStore)
			}
			switch policy {
			case gw.LimitStoreFailClosed:
				if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "FailClosed") || resp.Header.Get("Retry-After") == "" {
					t.Fatalf("FailClosed with the store down: status %d body %s", resp.StatusCode, body)
				}
				if n := tg.upstream.calls.Load(); n != 1 {
					t.Fatalf("upstream got %d calls, want 1: a refused call must not reach it", n)
				}
			case gw.LimitStoreFailOpen:
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("FailOpen with the store down: status %d body %s", resp.StatusCode, body)
				}
				if r.LimitStore.FallbackCalls != 1 {
					t.Fatalf("fallback calls %d, want 1", r.LimitStore.FallbackCalls)
				}
				// The replica's share (0.007) holds meanwhile: 0.002 spent twice here.
				for range 2 {
					tg.post(t, "/model/chat/completions", openaiBody, nil)
				}
				if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusTooManyRequests {
					t.Fatalf("FailOpen past the replica's share: status %d, want 429", s)
				}
			}
			srv.Resume()
			deadline := time.Now().Add(10 * time.Second)
			for {
				r := tg.spendReport()
				if r.LimitStore != nil && r.LimitStore.State == "Ready" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the store did not come back in the report: %+v", r.LimitStore)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != http.StatusOK {
				t.Fatalf("after the store is back: status %d", s)
			}
		})
	}
}
