package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// webhookReceiver is a real HTTPS receiver that checks the bearer token and the body
// signature the way docs/audit.md tells a SIEM to, and keeps every record it accepts.
type webhookReceiver struct {
	*httptest.Server
	signingKey []byte
	token      atomic.Value // string
	down       atomic.Bool
	mu         sync.Mutex
	lines      [][]byte
	batches    int
	rejected   int
}

func newWebhookReceiver(t *testing.T, ca *testCA, signingKey []byte, token string) *webhookReceiver {
	r := &webhookReceiver{signingKey: signingKey}
	r.token.Store(token)
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	r.TLS = &tls.Config{Certificates: []tls.Certificate{ca.server}, MinVersion: tls.VersionTLS12}
	r.StartTLS()
	t.Cleanup(r.Close)
	return r
}

func (r *webhookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	if r.down.Load() {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Header.Get("Authorization") != "Bearer "+r.token.Load().(string) {
		r.rejected++
		http.Error(w, "unauthorised", http.StatusUnauthorized)
		return
	}
	if err := VerifyWebhook(r.signingKey, req.Header.Get(SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
		r.rejected++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var batch []json.RawMessage
	if err := json.Unmarshal(body, &batch); err != nil || len(batch) == 0 {
		r.rejected++
		http.Error(w, "bad batch", http.StatusBadRequest)
		return
	}
	for _, rec := range batch {
		r.lines = append(r.lines, append(bytes.Clone(rec), '\n'))
	}
	r.batches++
	w.WriteHeader(http.StatusNoContent)
}

func (r *webhookReceiver) stream() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Join(r.lines, nil)
}

func (r *webhookReceiver) counts() (lines, batches, rejected int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines), r.batches, r.rejected
}

// lockedBuffer is a log destination tests can search for leaked credentials.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestWebhookSinkOutageRotationAndRecovery(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	signingKey := []byte("whsec-0123456789abcdef")
	rcv := newWebhookReceiver(t, ca, signingKey, "token-one-secret")
	tokenFile := writeFile(t, dir, "token", []byte("token-one-secret\n"))
	sink, err := NewSink(SinkConfig{Name: "soc", Type: SinkWebhook, URL: rcv.URL + "/ingest", CAFile: ca.caFile,
		BearerTokenFile: tokenFile, SigningKeyFile: writeFile(t, dir, "signing", signingKey)})
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	l := openLog(t, t.TempDir(), func(o *Options) {
		o.BatchRecords = 7
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	}, NamedSink{"soc", sink})

	appendN(t, l, 0, 10)
	waitFor(t, "the first records", func() bool { n, _, _ := rcv.counts(); return n == 12 })

	// The token is rotated in its mounted file: the next request uses the new one.
	if err := os.WriteFile(tokenFile, []byte("token-two-secret-rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rcv.token.Store("token-two-secret-rotated")

	// Outage: records queue up, delivery keeps failing and retrying.
	rcv.down.Store(true)
	appendN(t, l, 10, 20)
	waitFor(t, "failed attempts during the outage", func() bool { return l.Status().Sinks[0].Failures >= 3 })
	if st := l.Status().Sinks[0]; st.Backlog == 0 {
		t.Fatalf("nothing queued during the outage: %+v", st)
	}
	rcv.down.Store(false)
	appendN(t, l, 30, 5)
	shutdown(t, l)

	_, batches, rejected := rcv.counts()
	if rejected != 0 {
		t.Errorf("the receiver rejected %d requests (token or signature)", rejected)
	}
	if batches < 5 {
		t.Errorf("%d batches: records were not batched as configured", batches)
	}
	st := l.Status()
	if st.Sinks[0].Backlog != 0 || st.Sinks[0].LastSuccess == nil || st.Sinks[0].Delivered < 42 {
		t.Errorf("status after recovery %+v", st)
	}
	verifyStream(t, dedupBySeq(t, rcv.stream()), 35)
	for _, secret := range []string{"token-one-secret", "token-two-secret-rotated", string(signingKey)} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a credential reached the log:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "status 503") {
		t.Errorf("the outage was not logged:\n%s", logs.String())
	}
}

// syslogReceiver is a TLS listener that parses octet-counted RFC 5424 frames.
type syslogReceiver struct {
	ln    net.Listener
	mu    sync.Mutex
	msgs  []string
	conns []net.Conn
	bad   []string
}

func newSyslogReceiver(t *testing.T, ca *testCA) *syslogReceiver {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{ca.server}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	r := &syslogReceiver{ln: ln}
	t.Cleanup(func() { ln.Close(); r.dropConnections() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, c)
			r.mu.Unlock()
			go r.read(c)
		}
	}()
	return r
}

func (r *syslogReceiver) read(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		n, err := br.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
		if err != nil || size <= 0 || size > 1<<20 {
			r.mu.Lock()
			r.bad = append(r.bad, "bad frame length "+n)
			r.mu.Unlock()
			return
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(br, msg); err != nil {
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, string(msg))
		r.mu.Unlock()
	}
}

func (r *syslogReceiver) dropConnections() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

func (r *syslogReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

var rfc5424 = regexp.MustCompile(`^<110>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (support-line-0) voiceagent-gateway (\d+) (record|checkpoint) - (\{.*\})$`)

func TestSyslogSinkOverTLS(t *testing.T) {
	ca := newTestCA(t)
	rcv := newSyslogReceiver(t, ca)
	sink, err := NewSink(SinkConfig{Name: "siem", Type: SinkSyslog, Address: rcv.ln.Addr().String(), CAFile: ca.caFile, Hostname: "support-line-0"})
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, t.TempDir(), func(o *Options) { o.BatchRecords = 4 }, NamedSink{"siem", sink})
	appendN(t, l, 0, 10) // and 2 checkpoints
	waitFor(t, "syslog messages", func() bool { return rcv.count() == 12 })

	// The receiver restarts its side: the sink notices the closed connection and
	// reconnects instead of writing into it.
	rcv.dropConnections()
	appendN(t, l, 10, 5)
	shutdown(t, l)

	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.bad) > 0 {
		t.Fatalf("bad frames: %v", rcv.bad)
	}
	var stream bytes.Buffer
	for _, m := range rcv.msgs {
		parts := rfc5424.FindStringSubmatch(m)
		if parts == nil {
			t.Fatalf("not an RFC 5424 message of the expected shape: %q", m)
		}
		h, err := parseHeader([]byte(parts[5]))
		if err != nil || string(h.time) != parts[1] || h.kind != parts[4] {
			t.Fatalf("header does not match the record: %q", m)
		}
		stream.WriteString(parts[5] + "\n")
	}
	verifyStream(t, dedupBySeq(t, stream.Bytes()), 15)
}

func TestSinkConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  SinkConfig
		want string
	}{
		{"plain http webhook", SinkConfig{Name: "a", Type: SinkWebhook, URL: "http://siem.example.com/in"}, "https"},
		{"syslog without port", SinkConfig{Name: "a", Type: SinkSyslog, Address: "siem.example.com"}, "host:port"},
		{"unknown type", SinkConfig{Name: "a", Type: "kafka"}, "unknown type"},
		{"missing CA file", SinkConfig{Name: "a", Type: SinkWebhook, URL: "https://x", CAFile: "/nonexistent/ca.pem"}, "CA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewSink(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

func TestWebhookSignatureCheck(t *testing.T) {
	key := []byte("k")
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`[{"seq":1}]`)
	h := SignWebhook(key, now, body)
	tests := []struct {
		name   string
		key    []byte
		header string
		body   []byte
		now    time.Time
		ok     bool
	}{
		{"valid", key, h, body, now, true},
		{"body changed", key, h, []byte(`[{"seq":2}]`), now, false},
		{"other key", []byte("x"), h, body, now, false},
		{"replayed later", key, h, body, now.Add(10 * time.Minute), false},
		{"malformed", key, "v1=00", body, now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyWebhook(tt.key, tt.header, tt.body, tt.now, 5*time.Minute)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
		})
	}
	// Deliver fails cleanly when the signing key file disappears: never sends unsigned.
	s, err := NewSink(SinkConfig{Name: "a", Type: SinkWebhook, URL: "https://127.0.0.1:1/", SigningKeyFile: "/nonexistent/key"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Deliver(context.Background(), [][]byte{body}); err == nil || !strings.Contains(err.Error(), "signing key") {
		t.Fatalf("err %v", err)
	}
}
