package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// These tests hold the gateway's HTTP stack to net/http's defences on both sides: the
// provider-side client against upstreams that misbehave on the wire, and the agent-side
// and inbound servers against oversized heads and requests that must not be routed.

const hsChatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

// hsRawUpstream is a TLS listener that speaks HTTP by hand, so that it can answer in ways
// net/http's own server never would. It uses httptest's certificate, which the
// gateways of startGateway trust (upstreamTransport trusts httptest's CA, and every
// httptest TLS server presents the same certificate).
type hsRawUpstream struct {
	URL   string
	cert  []byte // DER
	ln    net.Listener
	conns atomic.Int64

	mu   sync.Mutex
	open []net.Conn
	wg   sync.WaitGroup
}

// hsTestCertificate is the certificate httptest's TLS servers present.
func hsTestCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	s := httptest.NewUnstartedServer(http.NotFoundHandler())
	s.StartTLS()
	defer s.Close()
	return s.TLS.Certificates[0]
}

// hsStartRawUpstream serves each accepted connection with serve; conn is its 1-based
// index in accept order.
func hsStartRawUpstream(t *testing.T, serve func(c net.Conn, br *bufio.Reader, conn int)) *hsRawUpstream {
	t.Helper()
	cert := hsTestCertificate(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"}, // no h2: the bytes below are HTTP/1.1
	})
	if err != nil {
		t.Fatal(err)
	}
	u := &hsRawUpstream{URL: "https://" + ln.Addr().String(), cert: cert.Certificate[0], ln: ln}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(u.conns.Add(1))
			u.mu.Lock()
			u.open = append(u.open, c)
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c), n)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		u.mu.Lock()
		for _, c := range u.open {
			_ = c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// hsReadRequest reads one request and its body; nil when the client went away.
func hsReadRequest(br *bufio.Reader) *http.Request {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil
	}
	_, _ = io.Copy(io.Discard, req.Body)
	_ = req.Body.Close()
	return req
}

// hsStartGatewayAt starts a gateway whose only model is served by the raw upstream.
func hsStartGatewayAt(t *testing.T, up *hsRawUpstream) *testGateway {
	t.Helper()
	tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
		c.Models[0].Endpoint = up.URL + "/v1"
	})
	if !bytes.Equal(tg.upstream.Certificate().Raw, up.cert) {
		t.Fatal("the test gateway's transport does not trust the raw upstream's certificate")
	}
	return tg
}

// hsChatAnswer is a complete OpenAI chat answer whose id names the request it answers.
func hsChatAnswer(id string) string {
	body := fmt.Sprintf(`{"id":%q,"object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`, id)
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// hsAgentAnswer is what the agent got from one call through the gateway.
type hsAgentAnswer struct {
	status int
	body   string
	got1xx int // informational answers the agent saw
}

// hsAgentCall posts a chat completion to the gateway as the agent would, counting any
// informational answer that reaches it.
func hsAgentCall(t *testing.T, tg *testGateway, requestID string) hsAgentAnswer {
	t.Helper()
	var a hsAgentAnswer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error { a.got1xx++; return nil },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tg.URL+"/model/chat/completions", strings.NewReader(hsChatBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", requestID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("call %s: %v", requestID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("call %s: reading the answer: %v", requestID, err)
	}
	a.status, a.body = resp.StatusCode, string(body)
	return a
}

// hsCountingConn counts the bytes read from a connection.
type hsCountingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *hsCountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// hsCountUpstreamReads makes the gateway's own provider-side transport count the raw
// bytes (TLS records included) it reads from its upstream connections.
func hsCountUpstreamReads(t *testing.T, tg *testGateway) *atomic.Int64 {
	t.Helper()
	tr, ok := tg.client.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("the gateway's upstream transport is %T, not *http.Transport", tg.client.Transport)
	}
	if tr.MaxResponseHeaderBytes != upstreamMaxResponseHeaderBytes {
		t.Fatalf("the test gateway's transport is not the gateway's own: MaxResponseHeaderBytes %d", tr.MaxResponseHeaderBytes)
	}
	var n atomic.Int64
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &hsCountingConn{Conn: c, n: &n}, nil
	}
	return &n
}

// An upstream whose answer's head never ends (48 MiB and counting) gets the agent a
// 502, and the gateway reads about its 64 KiB head limit of it, not the rest.
func TestHTTPStackUpstreamHeadIsBounded(t *testing.T) {
	const (
		offered = 48 << 20 // what the upstream is ready to write
		maxRead = 1 << 20  // what the gateway may read of it
	)
	for _, tt := range []struct {
		name   string
		prefix string
		filler string // repeated until offered bytes are written or the gateway hangs up
		want   int
	}{
		{name: "a normal answer (control)", prefix: hsChatAnswer("control"), want: http.StatusOK},
		{name: "a header line that never ends", prefix: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: ", filler: "a", want: http.StatusBadGateway},
		{name: "header lines that never end", prefix: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n", filler: "X-Padding: " + strings.Repeat("b", 100) + "\r\n", want: http.StatusBadGateway},
		{name: "a status line that never ends", prefix: "HTTP/1.1 200 ", filler: "c", want: http.StatusBadGateway},
	} {
		t.Run(tt.name, func(t *testing.T) {
			type result struct {
				written int64
				err     error
			}
			done := make(chan result, 4)
			up := hsStartRawUpstream(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if hsReadRequest(br) == nil {
					return
				}
				var r result
				n, err := io.WriteString(c, tt.prefix)
				r.written, r.err = int64(n), err
				if tt.filler != "" {
					chunk := []byte(strings.Repeat(tt.filler, (64<<10)/len(tt.filler)))
					for r.err == nil && r.written < offered {
						n, err := c.Write(chunk)
						r.written, r.err = r.written+int64(n), err
					}
				}
				done <- r
				if tt.filler == "" {
					hsReadRequest(br) // keep the connection until the client is done
				}
			})
			tg := hsStartGatewayAt(t, up)
			read := hsCountUpstreamReads(t, tg)

			a := hsAgentCall(t, tg, "head-1")
			if a.status != tt.want {
				t.Fatalf("status %d, want %d (body %s)", a.status, tt.want, a.body)
			}
			if tt.want == http.StatusOK {
				if !strings.Contains(a.body, `"control"`) {
					t.Errorf("control answer not relayed: %s", a.body)
				}
				return
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the upstream is still writing: the gateway did not hang up")
			}
			if r.err == nil {
				t.Errorf("the upstream wrote all %d MiB of its head without the gateway hanging up", r.written>>20)
			}
			if got := read.Load(); got > maxRead {
				t.Errorf("the gateway read %d bytes of an endless head, want at most %d", got, maxRead)
			}
			if up.conns.Load() != 1 {
				t.Errorf("%d upstream connections, want 1 (a POST whose head was written is not retried)", up.conns.Load())
			}
			t.Logf("upstream wrote %d bytes before the gateway hung up; the gateway read %d", r.written, read.Load())
		})
	}
}

// Informational answers before the final one are bounded as net/http bounds them: all
// heads (1xx and final) count towards the 64 KiB head limit. Past it the agent gets a
// 502; within it, the final answer and no 1xx reach the agent.
//
// net/http once refused a sixth 1xx answer; since golang/go#65035 (Go 1.24; this module
// is on go 1.26) it counts their bytes instead, so 100 bare 103s (2.7 KB) are accepted.
// The hand-written client's defect (1xx heads without end) is the 3000 case.
func TestHTTPStackUpstreamInformationalAnswersAreBounded(t *testing.T) {
	bare := "HTTP/1.1 103 Early Hints\r\n\r\n"
	linked := "HTTP/1.1 103 Early Hints\r\nLink: </" + strings.Repeat("s", 1000) + ".css>; rel=preload; as=style\r\n\r\n"
	for _, tt := range []struct {
		name string
		hint string
		n    int
		want int
	}{
		{name: "no early hints (control)", hint: bare, n: 0, want: http.StatusOK},
		{name: "100 early hints with 1 KiB Link headers (100 KiB of heads)", hint: linked, n: 100, want: http.StatusBadGateway},
		{name: "3000 bare early hints (81 KB of heads)", hint: bare, n: 3000, want: http.StatusBadGateway},
		{name: "two early hints pass", hint: bare, n: 2, want: http.StatusOK},
		// net/http (since Go 1.24) bounds the bytes of 1xx heads, not their number; the
		// gateway also bounds the number (maxInformational).
		{name: "100 bare early hints (2.7 KB of heads, within net/http's byte limit)", hint: bare, n: 100, want: http.StatusBadGateway},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := hsStartRawUpstream(t, func(c net.Conn, br *bufio.Reader, _ int) {
				for {
					req := hsReadRequest(br)
					if req == nil {
						return
					}
					w := bufio.NewWriterSize(c, 64<<10)
					for i := 0; i < tt.n; i++ {
						_, _ = w.WriteString(tt.hint)
					}
					_, _ = w.WriteString(hsChatAnswer("final-" + req.Header.Get("X-Request-ID")))
					if w.Flush() != nil {
						return
					}
				}
			})
			tg := hsStartGatewayAt(t, up)
			a := hsAgentCall(t, tg, "hints-1")
			if a.status != tt.want {
				t.Fatalf("status %d, want %d (body %s)", a.status, tt.want, a.body)
			}
			if a.got1xx != 0 {
				t.Errorf("the agent got %d informational answers from the gateway", a.got1xx)
			}
			if tt.want == http.StatusOK && !strings.Contains(a.body, `"final-hints-1"`) {
				t.Errorf("the final answer was not relayed: %s", a.body)
			}
			if tt.want != http.StatusOK && strings.Contains(a.body, "final-") {
				t.Errorf("the final answer after too many 1xx heads reached the agent: %s", a.body)
			}
		})
	}
}

// Bytes an upstream sends after a complete answer on a kept-alive connection are never
// taken for the answer to the next call: the gateway closes that connection (net/http
// watches idle connections), and the next call gets its own answer on a fresh one.
// The stale bytes come with the answer (in the same write) or later, while the
// connection is idle between two calls: the hand-written client checked only the first.
func TestHTTPStackUpstreamStaleBytesAreNotTheNextAnswer(t *testing.T) {
	stale := hsChatAnswer("stale")
	short := func(id string) string { // an answer whose body ends where it says
		return fmt.Sprintf(`{"id":%q,"object":"chat.completion","model":"gpt-4o-mini","choices":[]}`, id)
	}
	for _, tt := range []struct {
		name  string
		first func(id string) string // the first answer, with what follows it, in one write
		later string                 // written once the agent has the first answer
	}{
		{name: "an unsolicited second response in the same write", first: func(id string) string { return hsChatAnswer(id) + stale }},
		{name: "bytes beyond the declared Content-Length", first: func(id string) string {
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(short(id)), short(id)) + stale
		}},
		{name: "an unsolicited response after a chunked answer", first: func(id string) string {
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(short(id)), short(id)) + stale
		}},
		{name: "an unsolicited response while the connection is idle", first: hsChatAnswer, later: stale},
		{name: "stray bytes while the connection is idle", first: hsChatAnswer, later: "\r\n\r\nHTTP/1.1 200 OK\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu     sync.Mutex
				served []string // "<request id>@<connection>"
			)
			var requests atomic.Int64
			goLater, quit := make(chan struct{}), make(chan struct{})
			closed := make(chan int, 8) // connections the gateway closed
			up := hsStartRawUpstream(t, func(c net.Conn, br *bufio.Reader, conn int) {
				for {
					req := hsReadRequest(br)
					if req == nil {
						closed <- conn
						return
					}
					id := req.Header.Get("X-Request-ID")
					mu.Lock()
					served = append(served, fmt.Sprintf("%s@%d", id, conn))
					mu.Unlock()
					first := requests.Add(1) == 1
					answer := hsChatAnswer("answer-to-" + id)
					if first {
						answer = tt.first("answer-to-" + id)
					}
					if _, err := io.WriteString(c, answer); err != nil {
						return
					}
					if first && tt.later != "" {
						select {
						case <-goLater:
						case <-quit:
							return
						}
						if _, err := io.WriteString(c, tt.later); err != nil {
							return
						}
					}
				}
			})
			t.Cleanup(func() { close(quit) }) // runs before the upstream's cleanup
			tg := hsStartGatewayAt(t, up)

			first := hsAgentCall(t, tg, "call-1")
			if first.status != http.StatusOK || !strings.Contains(first.body, `"answer-to-call-1"`) {
				t.Fatalf("first call: status %d, body %s", first.status, first.body)
			}
			close(goLater)
			select {
			case n := <-closed:
				if n != 1 {
					t.Errorf("connection %d closed, want 1", n)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("the gateway kept the connection with unsolicited bytes open for 5s")
			}
			second := hsAgentCall(t, tg, "call-2")
			if strings.Contains(second.body, "stale") {
				t.Fatalf("the second call got the stale bytes of the first exchange as its answer: status %d, body %s", second.status, second.body)
			}
			if second.status != http.StatusOK || !strings.Contains(second.body, `"answer-to-call-2"`) {
				t.Fatalf("second call: status %d, body %s, want its own answer", second.status, second.body)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := []string{"call-1@1", "call-2@2"}; fmt.Sprint(served) != fmt.Sprint(want) {
				t.Errorf("upstream served %v, want %v (the second call on a fresh connection)", served, want)
			}
		})
	}
}

// hsRawHTTP writes raw to addr and reads one answer. The write runs on its own so that
// a server that answers before reading everything (431) is still heard.
func hsRawHTTP(t *testing.T, addr, method, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	go func() { _, _ = io.WriteString(c, raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("no answer to %.60q: %v", raw, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func hsHostOf(t *testing.T, rawURL string) string {
	t.Helper()
	return strings.TrimPrefix(strings.TrimPrefix(rawURL, "http://"), "https://")
}

// The agent-side server refuses a head over 64 KiB with 431 before any handler runs,
// and serves one under it.
func TestHTTPStackAgentServerBoundsHeads(t *testing.T) {
	srv := newAgentServer(http.NotFoundHandler())
	if srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 64<<10 {
		t.Errorf("MaxHeaderBytes %d, want within (0, 64 KiB]", srv.MaxHeaderBytes)
	}
	if srv.ReadHeaderTimeout <= 0 || srv.ReadHeaderTimeout > 30*time.Second {
		t.Errorf("ReadHeaderTimeout %v, want within (0, 30s]", srv.ReadHeaderTimeout)
	}
	if srv.IdleTimeout <= 0 || srv.IdleTimeout > 5*time.Minute {
		t.Errorf("IdleTimeout %v, want within (0, 5m]", srv.IdleTimeout)
	}

	var handled atomic.Int64
	addr := hsHostOf(t, serveProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "handled")
	})))
	manyLines := strings.Repeat("X-Pad: "+strings.Repeat("p", 90)+"\r\n", 80<<10/100)
	for _, tt := range []struct {
		name string
		raw  string
		want int
	}{
		{name: "a 60 KiB header (control)", raw: "GET /x HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 60<<10) + "\r\n\r\n", want: http.StatusOK},
		{name: "an 80 KiB header line", raw: "GET /x HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", want: http.StatusRequestHeaderFieldsTooLarge},
		{name: "80 KiB of header lines", raw: "GET /x HTTP/1.1\r\nHost: gw\r\n" + manyLines + "\r\n", want: http.StatusRequestHeaderFieldsTooLarge},
		{name: "an 80 KiB request line", raw: "GET /" + strings.Repeat("u", 80<<10) + " HTTP/1.1\r\nHost: gw\r\n\r\n", want: http.StatusRequestHeaderFieldsTooLarge},
		{name: "a 1 MiB header line", raw: "POST /x HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n", want: http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := handled.Load()
			resp, body := hsRawHTTP(t, addr, http.MethodGet, tt.raw)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.want, body)
			}
			reached := handled.Load() - before
			if tt.want == http.StatusOK && reached != 1 {
				t.Errorf("handler ran %d times for an acceptable head", reached)
			}
			if tt.want != http.StatusOK && reached != 0 {
				t.Errorf("handler ran for a %d head", tt.want)
			}
		})
	}
}

// hsDeadlineRecorder is a ResponseWriter that records the read deadlines set through
// http.ResponseController.
type hsDeadlineRecorder struct {
	*httptest.ResponseRecorder
	deadlines []time.Time
}

func (d *hsDeadlineRecorder) SetReadDeadline(t time.Time) error {
	d.deadlines = append(d.deadlines, t)
	return nil
}

// guardBody bounds the reading of a body and lifts the bound once the body is read,
// so that a long answer after it is not cut as if the client had gone. (bodyReadTimeout
// is a constant of 60s: its expiry is not waited for here.)
func TestHTTPStackGuardBodyLiftsDeadlineAfterBody(t *testing.T) {
	for _, tt := range []struct {
		name       string
		body       io.Reader
		read       int // bytes the handler reads; -1 for all
		wantSet    bool
		wantLifted bool
	}{
		{name: "no body", body: nil, read: -1, wantSet: false},
		{name: "body read to its end", body: strings.NewReader(`{"hello":"world"}`), read: -1, wantSet: true, wantLifted: true},
		{name: "body read in part", body: strings.NewReader(`{"hello":"world"}`), read: 3, wantSet: true, wantLifted: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &hsDeadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
			var atEOF []time.Time
			h := guardBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.read < 0 {
					if _, err := io.ReadAll(r.Body); err != nil {
						t.Errorf("read: %v", err)
					}
					atEOF = append([]time.Time(nil), rec.deadlines...)
					_, _ = r.Body.Read(make([]byte, 8)) // reads after the end change nothing
				} else {
					_, _ = io.ReadFull(r.Body, make([]byte, tt.read))
				}
			}))
			req := httptest.NewRequest(http.MethodPost, "/model/chat/completions", tt.body)
			if tt.body == nil {
				req.Body = http.NoBody
			}
			start := time.Now()
			h.ServeHTTP(rec, req)
			if !tt.wantSet {
				if len(rec.deadlines) != 0 {
					t.Errorf("deadlines %v set for a request without a body", rec.deadlines)
				}
				return
			}
			if len(rec.deadlines) == 0 {
				t.Fatal("no read deadline for the body")
			}
			first := rec.deadlines[0]
			if d := first.Sub(start); d <= 0 || d > bodyReadTimeout+time.Second {
				t.Errorf("body deadline %v from the start, want about %v", d, bodyReadTimeout)
			}
			lifted := len(rec.deadlines) == 2 && rec.deadlines[1].IsZero()
			if lifted != tt.wantLifted || len(rec.deadlines) > 2 {
				t.Errorf("deadlines %v, want lifted=%v (and once)", rec.deadlines, tt.wantLifted)
			}
			if tt.wantLifted && (len(atEOF) != 2 || !atEOF[1].IsZero()) {
				t.Errorf("the deadline was still in place when the handler had the whole body: %v", atEOF)
			}
		})
	}
}

// The deadline is lifted on a real connection too: a handler that has read the body
// and then streams on is not cut off, and the request's context stays alive while the
// client keeps the connection open.
func TestHTTPStackGuardBodyKeepsStreamsAlive(t *testing.T) {
	release := make(chan struct{})
	addr := hsHostOf(t, serveProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
			_, _ = io.WriteString(w, "second\n")
		case <-r.Context().Done():
		}
	})))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, "POST /s HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	// The body was read and the stream started: only the handler's own end finishes it.
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest of the stream %q, %v (the call was cut after its body was read)", rest, err)
	}
}

// hsWriteSelfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func hsWriteSelfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "support-line.callcenter.svc"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// The inbound TLS server (the only port reachable from the network) bounds header
// reads, idle connections and heads, and refuses a head over 64 KiB without passing it
// to the agent: with 431 over HTTP/1.1; over HTTP/2 (which ServeTLS offers) with 431
// or, as net/http's HTTP/2 server does for a header string or a header block far over
// the limit, by ending the connection with GOAWAY.
func TestHTTPStackInboundBoundsHeads(t *testing.T) {
	var agentCalls atomic.Int64
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agentCalls.Add(1)
		_, _ = io.WriteString(w, "agent:"+r.URL.Path)
	}))
	t.Cleanup(agent.Close)
	certFile, keyFile, pool := hsWriteSelfSigned(t, t.TempDir())
	srv, err := newInbound(&gw.Inbound{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, Upstream: agent.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if srv.ReadHeaderTimeout <= 0 || srv.ReadHeaderTimeout > 30*time.Second {
		t.Errorf("ReadHeaderTimeout %v, want within (0, 30s]", srv.ReadHeaderTimeout)
	}
	if srv.IdleTimeout <= 0 || srv.IdleTimeout > 5*time.Minute {
		t.Errorf("IdleTimeout %v, want within (0, 5m]", srv.IdleTimeout)
	}
	if srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 64<<10 {
		t.Errorf("MaxHeaderBytes %d, want within (0, 64 KiB]", srv.MaxHeaderBytes)
	}
	if srv.TLSConfig == nil || srv.TLSConfig.MinVersion < tls.VersionTLS12 {
		t.Errorf("TLS config %+v, want TLS 1.2 at least", srv.TLSConfig)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "https://" + ln.Addr().String()

	for _, tt := range []struct {
		name   string
		client string // "h1", "h2" (Go's client) or "h2raw" (one that ignores the server's limit)
		header int    // bytes of one header's value
		fields int    // header fields of that size (1 when 0)
		ok     bool
	}{
		{name: "HTTP/1.1, a 1 KiB header (control)", client: "h1", header: 1 << 10, ok: true},
		{name: "HTTP/1.1, an 80 KiB header", client: "h1", header: 80 << 10},
		{name: "HTTP/2, a 1 KiB header (control)", client: "h2", header: 1 << 10, ok: true},
		{name: "HTTP/2, an 80 KiB header", client: "h2", header: 80 << 10},
		{name: "raw HTTP/2, a 1 KiB header (control)", client: "h2raw", header: 1 << 10, ok: true},
		{name: "raw HTTP/2, an 80 KiB header past the advertised limit", client: "h2raw", header: 80 << 10},
		{name: "raw HTTP/2, 80 KiB of headers past the advertised limit", client: "h2raw", header: 100, fields: 800},
		{name: "raw HTTP/2, 66 KiB of headers just past the advertised limit", client: "h2raw", header: 100, fields: 680},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := agentCalls.Load()
			var status int
			var ended string // how the connection was ended instead of an answer
			if tt.client == "h2raw" {
				status, ended = hsRawH2Status(t, ln.Addr().String(), pool, "/voice/incoming", tt.header, max(tt.fields, 1))
			} else {
				tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: tt.client == "h2"}
				defer tr.CloseIdleConnections()
				req, err := http.NewRequest(http.MethodGet, base+"/voice/incoming", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("X-Big", strings.Repeat("a", tt.header))
				resp, err := (&http.Client{Transport: tr, Timeout: 15 * time.Second}).Do(req)
				switch {
				case err == nil:
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
					if tt.ok && string(body) != "agent:/voice/incoming" {
						t.Errorf("control: body %q", body)
					}
					if got := resp.ProtoMajor == 2; got != (tt.client == "h2") {
						t.Errorf("protocol %s", resp.Proto)
					}
				case tt.client == "h2" && !tt.ok:
					// Go's HTTP/2 client refuses to send a head over the limit the server
					// advertised, or sends it before it has the server's settings and the
					// server ends the connection.
					ended = err.Error()
					if !strings.Contains(ended, "GOAWAY") && !strings.Contains(ended, "larger than peer's advertised limit") {
						t.Fatalf("no answer, for another reason: %v", err)
					}
				default:
					t.Fatalf("no answer: %v", err)
				}
			}
			reached := agentCalls.Load() - before
			if tt.ok {
				if status != http.StatusOK || reached != 1 {
					t.Fatalf("control: status %d, agent reached %d times", status, reached)
				}
				return
			}
			switch {
			case ended != "":
				t.Logf("refused without an answer: %s", ended)
			case status != http.StatusRequestHeaderFieldsTooLarge:
				t.Errorf("status %d, want 431", status)
			}
			if reached != 0 {
				t.Errorf("the agent got a request with an %d KiB header", tt.header>>10)
			}
		})
	}
}

// hsRawH2Status sends one HTTP/2 GET with fields X-Big-<i> headers of the given size,
// whatever limit the server advertises, and returns the answer's status, or how the
// server ended the connection instead (GOAWAY, RST_STREAM).
func hsRawH2Status(t *testing.T, addr string, pool *x509.CertPool, path string, header, fields int) (status int, ended string) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	head := [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", addr}, {":path", path}}
	for i := 0; i < fields; i++ {
		head = append(head, [2]string{"x-big-" + strconv.Itoa(i), strings.Repeat("a", header)})
	}
	for _, f := range head {
		// Never indexed: each field costs its full size, as a hostile client would send it.
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true}); err != nil {
			t.Fatal(err)
		}
	}
	errc := make(chan error, 1)
	go func() { // written on its own: the server may answer before it has read it all
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			errc <- err
			return
		}
		fw := http2.NewFramer(c, nil)
		if err := fw.WriteSettings(); err != nil {
			errc <- err
			return
		}
		frag := block.Bytes()
		for first := true; first || len(frag) > 0; first = false {
			n := min(len(frag), 16<<10) // the default SETTINGS_MAX_FRAME_SIZE
			var err error
			if first {
				err = fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag[:n], EndStream: true, EndHeaders: n == len(frag)})
			} else {
				err = fw.WriteContinuation(1, n == len(frag), frag[:n])
			}
			if err != nil {
				errc <- err
				return
			}
			frag = frag[n:]
		}
		errc <- nil
	}()
	fr := http2.NewFramer(io.Discard, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no answer (write: %v): %v", <-errc, err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			status, err := strconv.Atoi(f.PseudoValue("status"))
			if err != nil {
				t.Fatalf("status %q", f.PseudoValue("status"))
			}
			return status, ""
		case *http2.GoAwayFrame:
			return 0, "GOAWAY " + f.ErrCode.String()
		case *http2.RSTStreamFrame:
			return 0, "RST_STREAM " + f.ErrCode.String()
		}
	}
}

// Requests a proxy must never pass (CONNECT, TRACE, absolute-form targets) and paths
// that could mean another path to some parser between the agent and an upstream are
// refused before routing, with a 4xx, and reach no upstream; a plain path does.
func TestHTTPStackRefusesBeforeRouting(t *testing.T) {
	tg := startGateway(t, "openai", func(c *gw.Config, up *fakeProviderUpstream) {
		c.Integrations = []gw.HTTPIntegration{{Name: "crm", Type: "rest", Endpoint: up.URL + "/crm", AuthType: "header",
			HeaderName: "X-Api-Key", CredentialFile: c.Models[0].CredentialFile}}
	})
	addr := hsHostOf(t, tg.URL)
	request := func(method, target string) string {
		if method == http.MethodConnect {
			return fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		}
		return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			method, target, addr, len(hsChatBody), hsChatBody)
	}
	for _, tt := range []struct{ method, target string }{
		{http.MethodConnect, "example.com:443"},
		{http.MethodTrace, "/model/chat/completions"},
		{http.MethodPost, "http://evil.example/model/chat/completions"},
		{http.MethodPost, "http://" + "127.0.0.1/integrations/crm/contacts/42"},
		{http.MethodPost, "/integrations/crm/%2e%2e/%2e%2e/admin/users"},
		{http.MethodPost, "/integrations/crm/%2E%2E/admin"},
		{http.MethodPost, "/integrations/crm/..%2f..%2fadmin"},
		{http.MethodPost, "/integrations/crm/a%5c..%5cadmin"},
		{http.MethodPost, "/integrations/crm/a\\..\\admin"},
		{http.MethodPost, "/integrations/crm/./x"},
		{http.MethodPost, "/integrations/crm/a//b"},
		{http.MethodPost, "/integrations/crm/%252e%252e/admin"},
		{http.MethodPost, "/integrations/crm/a;b/.."},
		{http.MethodPost, "/integrations/crm/x%00y"},
		{http.MethodPost, "/model/../integrations/crm/x"},
	} {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			before := tg.upstream.calls.Load()
			resp, body := hsRawHTTP(t, addr, tt.method, request(tt.method, tt.target))
			t.Logf("%d %s", resp.StatusCode, body)
			switch resp.StatusCode {
			case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
			default:
				t.Errorf("status %d, want 400, 403, 404 or 405 (%s)", resp.StatusCode, body)
			}
			if n := tg.upstream.calls.Load() - before; n != 0 {
				t.Errorf("the upstream got %d requests", n)
			}
		})
	}

	if n := tg.upstream.calls.Load(); n != 0 {
		t.Fatalf("the upstream got %d requests from refused calls", n)
	}
	// Control: a plain integration path reaches the integration, under its endpoint.
	resp, body := hsRawHTTP(t, addr, http.MethodPost, request(http.MethodPost, "/integrations/crm/contacts/42"))
	if n := tg.upstream.calls.Load(); n != 1 {
		t.Fatalf("control: the upstream got %d requests, want 1 (status %d, %s)", n, resp.StatusCode, body)
	}
	tg.upstream.mu.Lock()
	paths := append([]string(nil), tg.upstream.paths...)
	tg.upstream.mu.Unlock()
	if len(paths) != 1 || paths[0] != "/crm/contacts/42" {
		t.Errorf("control: upstream paths %v, want [/crm/contacts/42]", paths)
	}
	if strings.Contains(body, mountedKey) {
		t.Errorf("control: the answer carries the injected key: %s", body)
	}
}
