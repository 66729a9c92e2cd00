package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeAgent is the agent behind the inbound role: plain HTTP on loopback, a WebSocket
// echo (a telephony provider's media stream) and a call that waits to be released.
type fakeAgent struct {
	*httptest.Server
	slowStarted atomic.Int64
	release     chan struct{}
}

func newFakeAgent(t *testing.T) *fakeAgent {
	a := &fakeAgent{release: make(chan struct{})}
	up := websocket.Upgrader{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/media":
			conn, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer conn.Close()
			for {
				kind, data, err := conn.ReadMessage()
				if err != nil {
					return
				}
				_ = conn.WriteMessage(kind, append([]byte("echo:"), data...))
			}
		case "/slow":
			a.slowStarted.Add(1)
			<-a.release
			_, _ = io.WriteString(w, "slow done")
		default:
			w.Header().Set("X-Seen-Forwarded-For", r.Header.Get("X-Forwarded-For"))
			_, _ = io.WriteString(w, "agent answered "+r.Method+" "+r.URL.RequestURI())
		}
	}))
	t.Cleanup(a.Close)
	return a
}

// startInbound runs the inbound role in front of agent with a certificate in dir (none
// issued when ca is nil).
func startInbound(t *testing.T, ca *testCA, agent *fakeAgent) (p *InboundProxy, cancel context.CancelFunc, done chan error, dir string) {
	t.Helper()
	dir = t.TempDir()
	if ca != nil {
		ca.issue(t, dir, 2)
	}
	p, err := ListenInbound(InboundOptions{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", CertFile: filepath.Join(dir, "tls.crt"),
		KeyFile: filepath.Join(dir, "tls.key"), Upstream: strings.TrimPrefix(agent.URL, "http://"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Logf("inbound role stopped: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("the inbound role did not stop")
		}
	})
	return p, cancel, done, dir
}

func adminStatus(t *testing.T, p *InboundProxy, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr().String() + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestInboundRole: a TLS client reaches the agent through the inbound role, a
// WebSocket upgrade passes through, and at the end the role turns not ready, lets the
// call in progress finish and returns nil.
func TestInboundRole(t *testing.T) {
	ca := newTestCA(t)
	agent := newFakeAgent(t)
	p, cancel, done, _ := startInbound(t, ca, agent)
	base := "https://" + p.Addr().String()
	client := clientTrusting(ca.pool)

	if code, body := adminStatus(t, p, "/readyz"); code != 200 {
		t.Fatalf("readyz: %d %s", code, body)
	}
	if code, _ := adminStatus(t, p, "/healthz"); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	resp, err := client.Post(base+"/calls/incoming?from=%2B15550100", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "agent answered POST /calls/incoming?from=%2B15550100" || resp.Header.Get("X-Seen-Forwarded-For") != "127.0.0.1" {
		t.Fatalf("through the inbound role: %d %q, forwarded for %q", resp.StatusCode, body, resp.Header.Get("X-Seen-Forwarded-For"))
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("TLS state %+v", resp.TLS)
	}

	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{RootCAs: ca.pool}}
	conn, wsResp, err := d.Dial("wss://"+p.Addr().String()+"/media", nil)
	if err != nil {
		t.Fatalf("WebSocket through the inbound role: %v %v", err, wsResp)
	}
	for _, msg := range []string{"frame one", strings.Repeat("a", 64<<10)} {
		if err := conn.WriteMessage(websocket.BinaryMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, got, err := conn.ReadMessage()
		if err != nil || string(got) != "echo:"+msg {
			t.Fatalf("echo: %v, %d bytes", err, len(got))
		}
	}
	conn.Close()

	// A call in progress at SIGTERM finishes; readiness fails meanwhile.
	slow := make(chan string, 1)
	go func() {
		resp, err := client.Get(base + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	waitForCond(t, "the slow call to reach the agent", func() bool { return agent.slowStarted.Load() == 1 })
	cancel()
	waitForCond(t, "readiness to fail", func() bool {
		code, body := adminStatus(t, p, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "shutting down")
	})
	select {
	case err := <-done:
		t.Fatalf("Serve returned with a call in progress: %v", err)
	default:
	}
	close(agent.release)
	if got := <-slow; got != "slow done" {
		t.Errorf("the call in progress at the end: %q", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	done <- nil // for the cleanup
	if _, err := net.DialTimeout("tcp", p.Addr().String(), time.Second); err == nil {
		t.Error("the TLS port still accepts connections")
	}
}

// TestInboundRoleWaitsForItsCertificate: without the certificate the role runs, not
// ready and refusing handshakes; once cert-manager has written it, it serves.
func TestInboundRoleWaitsForItsCertificate(t *testing.T) {
	ca := newTestCA(t)
	agent := newFakeAgent(t)
	p, _, _, dir := startInbound(t, nil, agent)
	if code, body := adminStatus(t, p, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "tls.crt") {
		t.Fatalf("readyz without the certificate: %d %s", code, body)
	}
	client := clientTrusting(ca.pool)
	if _, err := client.Get("https://" + p.Addr().String() + "/"); err == nil {
		t.Fatal("a handshake succeeded without a certificate")
	}
	ca.issue(t, dir, 3)
	if code, body := adminStatus(t, p, "/readyz"); code != 200 {
		t.Fatalf("readyz with the certificate: %d %s", code, body)
	}
	resp, err := client.Get("https://" + p.Addr().String() + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
}

// TestInboundRoleForwardsToLoopbackOnly: the Service's port is no relay to elsewhere.
func TestInboundRoleForwardsToLoopbackOnly(t *testing.T) {
	for _, up := range []string{"10.0.0.7:8080", "agent.example.com:80", "127.0.0.1", ""} {
		if _, err := ListenInbound(InboundOptions{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Upstream: up}); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("upstream %q: %v", up, err)
		}
	}
}
