package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/gorilla/websocket"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"google.golang.org/genai"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// testCA stands in for the issuer cert-manager uses for the gateway's serving
// certificate; the agent's pods trust its ca.crt.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "voiceagent test gateway CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a serving certificate for the loopback addresses and the gateway's
// Service name to dir/tls.crt and dir/tls.key, as cert-manager's Secret holds them.
func (ca *testCA) issue(t *testing.T, dir string, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "support-line-gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames:    []string{"localhost", "support-line-gateway.callcenter.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	// The key first: a reader that sees the new certificate must find its key.
	writeAtomically(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	writeAtomically(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return certFile, keyFile
}

// writeAtomically renames a new file over path, with a modification time that differs
// from the old one's even on a coarse clock.
func writeAtomically(t *testing.T, path string, data []byte) {
	t.Helper()
	mtime := time.Now()
	if st, err := os.Stat(path); err == nil && !st.ModTime().Before(mtime) {
		mtime = st.ModTime().Add(time.Second)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// clientTrusting is the agent's HTTP client: the gateway's CA and nothing else.
func clientTrusting(pool *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// withProxyTLS puts the proxy on every address behind the agent token (token) and TLS
// with a certificate from ca (none issued when ca is nil).
func withProxyTLS(t *testing.T, ca *testCA, token string, more func(*gw.Config, *fakeProviderUpstream)) func(*gw.Config, *fakeProviderUpstream) {
	return withAgentToken(t, token, func(c *gw.Config, up *fakeProviderUpstream) {
		dir := filepath.Join(c.StateDir, "proxy-tls")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c.Listen.Proxy = ":0"
		c.Listen.ProxyTLS = &gw.TLSFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
		if ca != nil {
			ca.issue(t, dir, 2)
		}
		if more != nil {
			more(c, up)
		}
	})
}

// runGateway runs tg as in production (Run, its listeners, its shutdown) and returns
// the proxy's https:// URL on loopback.
func runGateway(t *testing.T, tg *testGateway) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tg.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	var addr net.Addr
	waitForCond(t, "the proxy to listen", func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		addr = tg.ProxyAddr()
		return addr != nil
	})
	_, port, _ := net.SplitHostPort(addr.String())
	return "https://127.0.0.1:" + port
}

// TestOfficialSDKsThroughTheAuthenticatedTLSProxy: a gateway in its own pods, on every
// address behind the agent token and TLS. The official SDKs, with the token as their
// API key and a client trusting the gateway's CA, get their answers; with a wrong or
// no key, a 401 whose body does not hold the token; the provider never sees the token.
func TestOfficialSDKsThroughTheAuthenticatedTLSProxy(t *testing.T) {
	ctx := context.Background()
	ca := newTestCA(t)
	client := clientTrusting(ca.pool)
	tests := []struct {
		provider string
		// call makes one SDK call with key ("" for none) and returns its text, or the
		// error's status and text.
		call func(t *testing.T, base, key string) (text string, status int, errText string)
	}{
		{"gemini", func(t *testing.T, base, key string) (string, int, string) {
			if key == "" {
				return rawCall(t, client, base+"/model/v1beta/models/gemini-2.5-flash:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`)
			}
			c, err := genai.NewClient(ctx, &genai.ClientConfig{APIKey: key, Backend: genai.BackendGeminiAPI, HTTPClient: client,
				HTTPOptions: genai.HTTPOptions{BaseURL: base + "/model/"}})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Models.GenerateContent(ctx, "gemini-2.5-flash", genai.Text("hi"), nil)
			var apiErr genai.APIError
			if errors.As(err, &apiErr) {
				return "", apiErr.Code, apiErr.Error()
			} else if err != nil {
				t.Fatal(err)
			}
			return resp.Text(), 200, ""
		}},
		{"openai", func(t *testing.T, base, key string) (string, int, string) {
			c := openai.NewClient(openaioption.WithBaseURL(base+"/model/"), openaioption.WithAPIKey(key),
				openaioption.WithHTTPClient(client), openaioption.WithMaxRetries(0))
			resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			})
			var apiErr *openai.Error
			if errors.As(err, &apiErr) {
				return "", apiErr.StatusCode, apiErr.Error() + apiErr.RawJSON()
			} else if err != nil {
				t.Fatal(err)
			}
			return resp.Choices[0].Message.Content, 200, ""
		}},
		{"anthropic", func(t *testing.T, base, key string) (string, int, string) {
			if key == "" {
				return rawCall(t, client, base+"/model/v1/messages", `{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
			}
			c := anthropic.NewClient(anthropicoption.WithBaseURL(base+"/model/"), anthropicoption.WithAPIKey(key),
				anthropicoption.WithHTTPClient(client), anthropicoption.WithMaxRetries(0))
			msg, err := c.Messages.New(ctx, anthropic.MessageNewParams{Model: "claude-haiku-4-5", MaxTokens: 100,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
			var apiErr *anthropic.Error
			if errors.As(err, &apiErr) {
				return "", apiErr.StatusCode, apiErr.Error() + apiErr.RawJSON()
			} else if err != nil {
				t.Fatal(err)
			}
			return msg.Content[0].Text, 200, ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			tg := startGateway(t, tt.provider, withProxyTLS(t, ca, agentToken1, nil))
			base := runGateway(t, tg)
			if err := tg.checkReady(); err != nil {
				t.Fatalf("not ready: %v", err)
			}
			text, status, errText := tt.call(t, base, agentToken1)
			if status != 200 || !strings.Contains(text, "hello") {
				t.Fatalf("with the token: %d %q %s", status, text, errText)
			}
			for _, key := range []string{agentToken2, ""} {
				_, status, errText := tt.call(t, base, key)
				// What every SDK shows of an error: its message.
				want := "the agent token does not match"
				if key == "" {
					want = "no agent token"
				}
				if status != http.StatusUnauthorized || !strings.Contains(errText, want) {
					t.Errorf("key %q: status %d, %s; want 401 %s", key, status, errText, want)
				}
				if strings.Contains(errText, agentToken1) {
					t.Error("the refusal holds the token")
				}
			}
			if n := tg.upstream.calls.Load(); n != 1 {
				t.Errorf("the provider got %d calls, want the one with the token", n)
			}
			for _, k := range tg.upstream.keys() {
				if k != mountedKey {
					t.Errorf("the provider got key %q", k)
				}
			}
			assertNoToken(t, tg, agentToken1)
			// Plain HTTP on the TLS port is no way around it.
			plain := strings.Replace(base, "https://", "http://", 1)
			if resp, err := http.Post(plain+"/model/chat/completions", "application/json", strings.NewReader(openaiBody)); err == nil {
				resp.Body.Close()
				if resp.StatusCode < 400 {
					t.Errorf("plain HTTP on the TLS port: %d", resp.StatusCode)
				}
			}
		})
	}
}

// rawCall posts body without any key, for the SDKs that refuse to run without one.
func rawCall(t *testing.T, client *http.Client, url, body string) (string, int, string) {
	t.Helper()
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return "", resp.StatusCode, string(b)
}

// TestRealtimeThroughTheAuthenticatedTLSProxy: realtime sessions over wss:// with the
// token (the Gemini Live SDK sends it as x-goog-api-key; a hand-written OpenAI Realtime
// client as a Bearer), refused 401 before the upgrade without it; the provider sees
// the mounted key only.
func TestRealtimeThroughTheAuthenticatedTLSProxy(t *testing.T) {
	ca := newTestCA(t)
	t.Run("openai", func(t *testing.T) {
		up := newFakeRealtimeUpstream(t)
		tg := startGateway(t, "openai", withProxyTLS(t, ca, agentToken1, func(c *gw.Config, _ *fakeProviderUpstream) {
			c.Models[0].Endpoint, c.Models[0].Name = up.URL+"/v1", "gpt-realtime"
		}))
		base := "wss" + strings.TrimPrefix(runGateway(t, tg), "https") + "/model/realtime?model=gpt-realtime"
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{RootCAs: ca.pool}, Subprotocols: []string{"realtime"}}
		for _, h := range []http.Header{nil, {"Authorization": {"Bearer " + agentToken2}}} {
			_, resp, err := d.Dial(base, h)
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("handshake with %v: %v %v, want 401", h, err, resp)
			}
			body, _ := io.ReadAll(resp.Body)
			if strings.Contains(string(body), agentToken1) || !strings.Contains(string(body), "agent_token_") {
				t.Errorf("refusal body %s", body)
			}
		}
		conn, resp, err := d.Dial(base, http.Header{"Authorization": {"Bearer " + agentToken1}})
		if err != nil {
			t.Fatalf("handshake with the token: %v %v", err, resp)
		}
		defer conn.Close()
		readUntil(t, conn, "session.created")
		if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"response.create"}`)); err != nil {
			t.Fatal(err)
		}
		readUntil(t, conn, "response.done")
		_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		r := sessionRecords(t, tg)[0]
		if r.InputTokens != 300 || r.Session.ClosedBy != "agent" {
			t.Errorf("session record %+v", r)
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		if len(up.keys) != 1 || up.keys[0] != mountedKey || strings.Contains(strings.Join(up.heads, ""), agentToken1) {
			t.Errorf("the provider saw %d handshakes, keys %q", len(up.heads), up.keys)
		}
	})
	t.Run("gemini live SDK", func(t *testing.T) {
		up := newFakeRealtimeUpstream(t)
		tg := startGateway(t, "gemini", withProxyTLS(t, ca, agentToken1, func(c *gw.Config, _ *fakeProviderUpstream) {
			c.Models[0].Endpoint = up.URL
		}))
		base := "wss" + strings.TrimPrefix(runGateway(t, tg), "https") + "/model/"
		// The SDK dials with gorilla's default dialer, which trusts the system roots: an
		// agent's pod adds the gateway's CA there; this test adds it to the dialer.
		saved := websocket.DefaultDialer.TLSClientConfig
		websocket.DefaultDialer.TLSClientConfig = &tls.Config{RootCAs: ca.pool}
		t.Cleanup(func() { websocket.DefaultDialer.TLSClientConfig = saved })
		connect := func(key string) (*genai.Session, error) {
			c, err := genai.NewClient(context.Background(), &genai.ClientConfig{APIKey: key, Backend: genai.BackendGeminiAPI,
				HTTPOptions: genai.HTTPOptions{BaseURL: base, APIVersion: "v1beta"}})
			if err != nil {
				t.Fatal(err)
			}
			return c.Live.Connect(context.Background(), "gemini-2.5-flash", &genai.LiveConnectConfig{ResponseModalities: []genai.Modality{genai.ModalityAudio}})
		}
		if _, err := connect(agentToken2); err == nil || !strings.Contains(err.Error(), "bad handshake") {
			t.Fatalf("Live with a wrong key: %v", err)
		}
		session, err := connect(agentToken1)
		if err != nil {
			t.Fatal(err)
		}
		defer session.Close()
		if msg, err := session.Receive(); err != nil || msg.SetupComplete == nil {
			t.Fatalf("setup: %v %+v", err, msg)
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		if len(up.keys) != 1 || up.keys[0] != mountedKey || strings.Contains(strings.Join(up.heads, ""), agentToken1) {
			t.Errorf("the provider saw %d handshakes, keys %q", len(up.heads), up.keys)
		}
	})
}

// TestProxyTLSReadinessAndRenewal: without its certificate the gateway runs, not ready
// and refusing handshakes; once the certificate is there it is ready; a renewed
// certificate is served to new connections without a restart.
func TestProxyTLSReadinessAndRenewal(t *testing.T) {
	ca := newTestCA(t)
	tg := startGateway(t, "openai", withProxyTLS(t, nil, agentToken1, nil))
	base := runGateway(t, tg)
	err := tg.checkReady()
	if err == nil || !strings.Contains(err.Error(), "proxy TLS certificate") || !strings.Contains(err.Error(), "tls.crt") {
		t.Fatalf("readiness without the certificate: %v", err)
	}
	client := clientTrusting(ca.pool)
	if _, err := client.Get(base + "/"); err == nil {
		t.Fatal("a handshake succeeded without a certificate")
	}
	dir := filepath.Dir(tg.cfg.Listen.ProxyTLS.CertFile)
	ca.issue(t, dir, 10)
	if err := tg.checkReady(); err != nil {
		t.Fatalf("readiness with the certificate: %v", err)
	}
	serial := func() int64 {
		t.Helper()
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "https://"))
		conn, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{RootCAs: ca.pool})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st := conn.ConnectionState()
		if st.Version < tls.VersionTLS12 || st.NegotiatedProtocol == "h2" {
			t.Errorf("TLS version %x, protocol %q", st.Version, st.NegotiatedProtocol)
		}
		return st.PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 10 {
		t.Fatalf("serving serial %d, want 10", s)
	}
	ca.issue(t, dir, 11)
	if s := serial(); s != 11 {
		t.Fatalf("after renewal: serial %d, want 11", s)
	}
	// TLS 1.1 is refused.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "https://"))
	if conn, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{RootCAs: ca.pool, MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/model/chat/completions", strings.NewReader(openaiBody))
	req.Header.Set("Authorization", "Bearer "+agentToken1)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("call after renewal: %d", resp.StatusCode)
	}
}

// TestExposedProxyKeepsAgentAuth: a gateway listening beyond loopback refuses a
// reloaded configuration that drops agentAuth, even one that moves the proxy back to
// loopback (the listener stays where it is until a restart).
func TestExposedProxyKeepsAgentAuth(t *testing.T) {
	tg := startGateway(t, "openai", withProxyTLS(t, newTestCA(t), agentToken1, nil))
	runGateway(t, tg)
	cfg := *tg.cfg
	cfg.AgentAuth, cfg.Listen.Proxy, cfg.Listen.ProxyTLS, cfg.Generation = nil, "127.0.0.1:15001", nil, 2
	writeConfig(t, tg.dir, &cfg)
	err := tg.Reload()
	if err == nil || !strings.Contains(err.Error(), "agentAuth: cannot be removed") {
		t.Fatalf("reload without agentAuth: %v", err)
	}
	if tg.Gateway.cfg.Load().AgentAuth == nil {
		t.Fatal("agentAuth dropped")
	}
	if rec := tg.serve(http.MethodPost, "/model/chat/completions", "10.0.0.5:1", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("call without the token after the refused reload: %d", rec.Code)
	}
}

// TestLoopbackProxyWithoutAgentAuth: as before, a gateway without agentAuth listens on
// loopback only, and Run refuses any other address.
func TestLoopbackProxyWithoutAgentAuth(t *testing.T) {
	tg := startGateway(t, "openai", nil)
	bad := *tg.Gateway.cfg.Load()
	bad.Listen.Proxy = "0.0.0.0:0"
	if _, err := tg.listenProxy(&bad); err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Errorf("listen %s without agentAuth: %v", bad.Listen.Proxy, err)
	}
	if tg.proxyExposed.Load() {
		t.Error("exposed without listening")
	}
}
