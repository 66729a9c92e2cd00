package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tlsUpstream is a real HTTPS server speaking HTTP/1.1 that counts the connections it
// accepted and closed.
type tlsUpstream struct {
	*httptest.Server
	opened, closed atomic.Int64
}

func newTLSUpstream(t *testing.T, h http.HandlerFunc, configure func(*http.Server)) *tlsUpstream {
	t.Helper()
	u := &tlsUpstream{}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = false
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			u.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			u.closed.Add(1)
		}
	}
	if configure != nil {
		configure(srv.Config)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u.Server = srv
	return u
}

func (u *tlsUpstream) transport(t *testing.T, opts ...func(*Options)) *Transport {
	o := Options{TLSConfig: u.Client().Transport.(*http.Transport).TLSClientConfig}
	for _, f := range opts {
		f(&o)
	}
	tr := New(o)
	tr.proxy = func(*http.Request) (*url.URL, error) { return nil, nil } // the machine's proxy settings do not apply
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func do(t *testing.T, tr http.RoundTripper, req *http.Request) (int, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b)
}

func newReq(t *testing.T, ctx context.Context, method, u, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExchangesOfAllShapesReuseOneConnection(t *testing.T) {
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			fmt.Fprintf(w, "%s %s %s", r.Method, r.Header.Get("X-Test"), body)
		case "/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/early-hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "after hints")
		}
	}, nil)
	tr := up.transport(t)
	ctx := context.Background()
	for i := range 20 {
		req := newReq(t, ctx, http.MethodPost, up.URL+"/echo", fmt.Sprintf(`{"n":%d}`, i))
		req.Header.Set("X-Test", "h")
		if code, body := do(t, tr, req); code != 200 || body != fmt.Sprintf(`POST h {"n":%d}`, i) {
			t.Fatalf("echo %d: %d %q", i, code, body)
		}
	}
	for _, tc := range []struct{ path, method, want string }{
		{"/chunked", http.MethodGet, "part0;part1;part2;"},
		{"/empty", http.MethodGet, ""},
		{"/early-hints", http.MethodGet, "after hints"},
		{"/echo", http.MethodHead, ""},
		{"/echo", http.MethodGet, "GET  "},
	} {
		code, body := do(t, tr, newReq(t, ctx, tc.method, up.URL+tc.path, ""))
		if body != tc.want || code >= 300 {
			t.Errorf("%s %s: %d %q, want %q", tc.method, tc.path, code, body, tc.want)
		}
	}
	if n := up.opened.Load(); n != 1 {
		t.Errorf("the upstream accepted %d connections for sequential calls, want 1 kept alive", n)
	}
}

func TestConcurrentCallsGetTheirOwnAnswers(t *testing.T) {
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	}, nil)
	tr := up.transport(t)
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				want := fmt.Sprintf("worker %d call %d", w, i)
				resp, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodPost, up.URL+"/", want))
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != want {
					errs <- fmt.Errorf("got %q (%v), want %q", got, err, want)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := up.opened.Load(); n > workers {
		t.Errorf("%d connections for %d concurrent callers: connections are not reused", n, workers)
	}
}

func TestConnectionNotReusedWhenTheAnswerSaysCloseOrIsNotReadToTheEnd(t *testing.T) {
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		_, _ = io.WriteString(w, strings.Repeat("x", 64<<10))
	}, nil)
	tr := up.transport(t)
	ctx := context.Background()
	do(t, tr, newReq(t, ctx, http.MethodGet, up.URL+"/close", ""))
	waitFor(t, "the upstream to see its connection closed", func() bool { return up.closed.Load() == 1 })

	resp, err := tr.RoundTrip(newReq(t, ctx, http.MethodGet, up.URL+"/partial", ""))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = resp.Body.Read(make([]byte, 10))
	resp.Body.Close() // early: the rest of the answer is still on the wire
	waitFor(t, "the half-read connection to be closed", func() bool { return up.closed.Load() == 2 })

	do(t, tr, newReq(t, ctx, http.MethodGet, up.URL+"/full", ""))
	if n := up.opened.Load(); n != 3 {
		t.Errorf("%d connections opened, want 3 (none of the first two could be reused)", n)
	}
}

// idleClosingUpstream answers "ok" and closes a connection idle for 20 ms.
func idleClosingUpstream(t *testing.T) *tlsUpstream {
	return newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}, func(s *http.Server) { s.IdleTimeout = 20 * time.Millisecond })
}

func TestIdleConnectionClosedByTheUpstream(t *testing.T) {
	up := idleClosingUpstream(t)
	// Without the liveness check, to see the replay rule at work.
	tr := up.transport(t, func(o *Options) { o.LivenessCheckAfter = time.Hour })
	ctx := context.Background()

	// Replayable (GET, or POST with an idempotency key): sent again on a new connection.
	staleConn(t, tr, up)
	if code, body := do(t, tr, newReq(t, ctx, http.MethodGet, up.URL+"/", "")); code != 200 || body != "ok" {
		t.Fatalf("GET over a stale connection: %d %q", code, body)
	}
	staleConn(t, tr, up)
	req := newReq(t, ctx, http.MethodPost, up.URL+"/", `{"a":1}`)
	req.Header.Set("Idempotency-Key", "k1")
	if code, _ := do(t, tr, req); code != 200 {
		t.Fatalf("POST with an idempotency key over a stale connection: %d", code)
	}

	// Not replayable: the error goes to the caller, whose own retry policy decides.
	staleConn(t, tr, up)
	_, err := tr.RoundTrip(newReq(t, ctx, http.MethodPost, up.URL+"/", `{"a":1}`))
	if !errors.Is(err, errServerClosedIdle) {
		t.Fatalf("POST over a stale connection: %v, want errServerClosedIdle", err)
	}
	if code, _ := do(t, tr, newReq(t, ctx, http.MethodPost, up.URL+"/", `{"a":1}`)); code != 200 {
		t.Fatalf("the next POST: %d", code)
	}
}

func TestCancelledCallEndsPromptlyAndItsConnectionIsDropped(t *testing.T) {
	release := make(chan struct{})
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow-head" {
			<-release
		}
		if r.URL.Path == "/slow-body" {
			_, _ = io.WriteString(w, "first;")
			w.(http.Flusher).Flush()
			<-release
		}
	}, nil)
	defer close(release)
	tr := up.transport(t)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := tr.RoundTrip(newReq(t, ctx, http.MethodGet, up.URL+"/slow-head", ""))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for a head past the deadline: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the call outlived its deadline by %s", d)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	resp, err := tr.RoundTrip(newReq(t, ctx2, http.MethodGet, up.URL+"/slow-body", ""))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first;" {
		t.Fatalf("first part: %q %v", buf, err)
	}
	cancel2()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("reading past a cancel succeeded")
	}
	resp.Body.Close()
	tr.mu.Lock()
	u, _ := url.Parse(up.URL)
	idle := len(tr.idle[hostPort(u)])
	tr.mu.Unlock()
	if idle != 0 {
		t.Errorf("%d idle connections after two cancelled calls, want 0", idle)
	}
}

func TestProxiedAndPlainRequestsGoToTheFallback(t *testing.T) {
	fb := &recordingRoundTripper{}
	tr := New(Options{Fallback: fb})
	tr.proxy = func(r *http.Request) (*url.URL, error) {
		if r.URL.Host == "via-proxy.example:443" {
			return url.Parse("http://proxy.example:3128")
		}
		return nil, nil
	}
	for _, u := range []string{"https://via-proxy.example:443/v1", "http://plain.example/v1"} {
		if _, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, u, "")); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(fb.hosts, ","); got != "via-proxy.example:443,plain.example" {
		t.Errorf("fallback served %q", got)
	}
}

type recordingRoundTripper struct{ hosts []string }

func (r *recordingRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	r.hosts = append(r.hosts, req.URL.Host)
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
}

func TestUnverifiedUpstreamIsRefused(t *testing.T) {
	up := newTLSUpstream(t, func(http.ResponseWriter, *http.Request) {}, nil)
	tr := New(Options{TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}) // system roots: the test CA is not among them
	tr.proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	_, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, up.URL+"/", ""))
	var unknown x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &unknown) {
		t.Fatalf("call to an upstream with an unknown CA: %v, want a certificate error", err)
	}
}

// staleConn leaves tr one kept-alive connection that the upstream has since closed.
func staleConn(t *testing.T, tr *Transport, up *tlsUpstream) {
	t.Helper()
	do(t, tr, newReq(t, context.Background(), http.MethodGet, up.URL+"/", ""))
	opened := up.opened.Load()
	waitFor(t, "the upstream to close the idle connection", func() bool { return up.closed.Load() == opened })
}

// With the liveness check (the default after 100ms idle), a connection the upstream
// closed while idle is not used: even a POST, which is never replayed, goes through.
func TestClosedIdleConnectionIsNotReused(t *testing.T) {
	up := idleClosingUpstream(t)
	tr := up.transport(t, func(o *Options) { o.LivenessCheckAfter = time.Nanosecond })
	ctx := context.Background()
	for i := range 3 {
		staleConn(t, tr, up)
		if code, body := do(t, tr, newReq(t, ctx, http.MethodPost, up.URL+"/", `{"n":1}`)); code != 200 || body != "ok" {
			t.Fatalf("POST %d after the upstream closed the idle connection: %d %q", i, code, body)
		}
	}
	// A live idle connection passes the check and is reused.
	before := up.opened.Load()
	do(t, tr, newReq(t, ctx, http.MethodGet, up.URL+"/", ""))
	if up.opened.Load() != before {
		t.Error("a live kept-alive connection was not reused")
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.openai.com/v1":  "api.openai.com:443",
		"https://llm.internal:8443/": "llm.internal:8443",
		"https://[::1]/v1":           "[::1]:443",
		"https://[fd00::7]:9443/x":   "[fd00::7]:9443",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := hostPort(u); got != want {
			t.Errorf("hostPort(%s) = %s, want %s", in, got, want)
		}
	}
}
