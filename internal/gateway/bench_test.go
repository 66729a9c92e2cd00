package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// inMemoryUpstream answers every request with a fixed OpenAI completion without a
// network, so that the benchmark counts the gateway's own work and allocations.
type inMemoryUpstream struct{}

func (inMemoryUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	const answer = `{"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}`
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": []string{"application/json"}},
		Body:          io.NopCloser(strings.NewReader(answer)),
		ContentLength: int64(len(answer)), // as net/http's transport reports a Content-Length
		Request:       r,
	}, nil
}

// BenchmarkProxiedModelCall is one model call through the gateway with every control
// on: request bucket, tokens per minute, concurrency, budget, breaker, credential
// injection, usage accounting and an audit record.
func BenchmarkProxiedModelCall(b *testing.B) {
	dir := b.TempDir()
	cfg := newTestConfig(dir, "openai", "https://api.openai.com/v1")
	cfg.Models[0].Pricing = &gw.Pricing{InputPerMillionTokens: "0.15", OutputPerMillionTokens: "0.60"}
	cfg.Limits = gw.Limits{RequestsPerSecond: 1e9, Burst: 1e9, MaxConcurrentCalls: 1 << 20, TokensPerMinute: 1e15}
	cfg.Budget = &gw.Budget{Daily: "100000000", OnExceeded: "Block", AlertAtPercent: 80}
	if err := os.WriteFile(cfg.Models[0].CredentialFile, []byte("k"), 0o400); err != nil {
		b.Fatal(err)
	}
	path := writeConfigB(b, dir, cfg)
	g, err := New(Options{ConfigPath: path, AuditOut: io.Discard, Transport: inMemoryUpstream{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clock.RealClock{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Stop(ctx)
	})
	h := g.Handler()
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodPost, "/model/chat/completions", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

func writeConfigB(b *testing.B, dir string, cfg *gw.Config) string {
	data, err := cfg.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(dir, gw.FileName)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}
