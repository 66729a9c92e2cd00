package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

const mountedKey = "mounted-provider-key-0001"

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// auditTap reads the gateway's stdout audit sink.
type auditTap struct {
	syncBuffer
	g *Gateway
}

// waitRecords polls until at least n records were written: a streamed response can
// reach the client before its handler writes the record.
func (b *auditTap) waitRecords(t *testing.T, n int) []auditRecord {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs := b.records(t)
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// records waits until the stdout sink has delivered every record queued so far, then
// returns the payloads of the call records (checkpoints and configuration records
// left out).
func (b *auditTap) records(t *testing.T) []auditRecord {
	t.Helper()
	var out []auditRecord
	for _, r := range b.allRecords(t) {
		if r.Route != "config" {
			out = append(out, r)
		}
	}
	return out
}

// configRecords returns the records of configurations put in force.
func (b *auditTap) configRecords(t *testing.T) []auditRecord {
	t.Helper()
	var out []auditRecord
	for _, r := range b.allRecords(t) {
		if r.Route == "config" {
			out = append(out, r)
		}
	}
	return out
}

func (b *auditTap) allRecords(t *testing.T) []auditRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.g.trail.Drain(ctx); err != nil {
		t.Fatalf("audit records not delivered to stdout: %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []auditRecord
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var env struct {
			Kind    string          `json:"kind"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(sc.Bytes(), &env); err != nil {
			t.Fatalf("audit line is not JSON: %s", sc.Text())
		}
		if env.Kind != "record" {
			continue
		}
		var r auditRecord
		if err := json.Unmarshal(env.Payload, &r); err != nil {
			t.Fatalf("audit payload is not a call record: %s", sc.Text())
		}
		out = append(out, r)
	}
	return out
}

// testGateway is a gateway with its config in a temp dir, served on loopback.
type testGateway struct {
	*Gateway
	URL      string
	dir      string
	cfg      *gw.Config
	audit    *auditTap
	clock    *clocktesting.FakeClock
	keyFile  string
	upstream *fakeProviderUpstream
}

// testModelName is the configured model of a test gateway: the name the tests' calls
// and the official SDK examples use, since the gateway refuses any other.
func testModelName(provider string) string {
	switch provider {
	case "gemini":
		return "gemini-2.5-flash"
	case "anthropic":
		return "claude-haiku-4-5"
	}
	return "gpt-4o-mini"
}

// newTestConfig is a valid configuration with one model of the given provider.
func newTestConfig(dir, provider, endpoint string) *gw.Config {
	keyFile := filepath.Join(dir, "model-key")
	return &gw.Config{
		Version: gw.ContentsVersion, VoiceAgent: "support-line", Namespace: "callcenter", Replicas: 1,
		Listen:   gw.Listen{Proxy: "127.0.0.1:0", Admin: "127.0.0.1:0"},
		Models:   []gw.Model{{Provider: provider, Name: testModelName(provider), Endpoint: endpoint, Timeout: gw.Duration{Duration: 5 * time.Second}, CredentialFile: keyFile}},
		Breaker:  gw.Breaker{FailureThreshold: 3, OpenDuration: gw.Duration{Duration: 30 * time.Second}},
		Audit:    gw.Audit{RedactPII: true, FailurePolicy: "FailClosed", QueueDir: filepath.Join(dir, "audit")},
		StateDir: dir,
	}
}

func writeConfig(t *testing.T, dir string, cfg *gw.Config) string {
	t.Helper()
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, gw.FileName)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startGateway starts a gateway in front of a fake upstream for provider. mutate may
// change the configuration before it is written.
func startGateway(t *testing.T, provider string, mutate func(*gw.Config, *fakeProviderUpstream)) *testGateway {
	t.Helper()
	return startGatewayAt(t, time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC), provider, mutate)
}

// startGatewayAt is startGateway with its clock starting at now.
func startGatewayAt(t *testing.T, now time.Time, provider string, mutate func(*gw.Config, *fakeProviderUpstream)) *testGateway {
	t.Helper()
	dir := t.TempDir()
	up := newFakeProviderUpstream(t, mountedKey)
	endpoint := up.URL
	if provider == "openai" || provider == "openai-compatible" {
		endpoint += "/v1"
	}
	cfg := newTestConfig(dir, provider, endpoint)
	if mutate != nil {
		mutate(cfg, up)
	}
	if err := os.WriteFile(cfg.Models[0].CredentialFile, []byte(mountedKey+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, dir, cfg)
	clock := clocktesting.NewFakeClock(now)
	audit := &auditTap{}
	g, err := New(Options{
		ConfigPath: path, Clock: clock, AuditOut: audit, PodName: "support-line-0",
		Transport: upstreamTransport(up.Server), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		BackoffBase: time.Millisecond, AuditBackoffBase: time.Millisecond, AuditBackoffMax: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	audit.g = g
	// Registered before the server's cleanup, so it runs after it and before the temp
	// dir is removed: the audit queue is closed while its files still exist.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.Stop(ctx); err != nil {
			t.Errorf("stop audit trail: %v", err)
		}
	})
	// The agent's side is served as in production.
	url := serveProxy(t, g.Handler())
	return &testGateway{Gateway: g, URL: url, dir: dir, cfg: cfg, audit: audit, clock: clock,
		keyFile: cfg.Models[0].CredentialFile, upstream: up}
}

func (tg *testGateway) post(t *testing.T, path, body string, header map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, tg.URL+path, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// upstreamTransport is the gateway's own upstream client, trusting the test server's CA.
func upstreamTransport(s *httptest.Server) http.RoundTripper {
	return NewUpstreamTransport(s.Client().Transport.(*http.Transport).TLSClientConfig)
}

// serveProxy serves h on a loopback port with the gateway's own agent-side server.
func serveProxy(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newAgentServer(h)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}
