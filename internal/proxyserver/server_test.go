package proxyserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func start(t *testing.T, h http.Handler, configure func(*Server)) (*Server, string) {
	t.Helper()
	s := &Server{Handler: h}
	if configure != nil {
		configure(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// rawConn sends requests as bytes and reads answers with net/http's client parser.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawConn) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, raw); err != nil {
		c.t.Fatal(err)
	}
}

type answer struct {
	status int
	header http.Header
	body   string
	chunks []string // TransferEncoding of the answer
	close  bool     // the answer said Connection: close
}

func (c *rawConn) read(method string) answer {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("read body: %v", err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b), chunks: resp.TransferEncoding, close: resp.Close}
}

// closedByServer reports whether the server ended the connection (within the
// connection's deadline), after whatever it still sent.
func (c *rawConn) closedByServer() bool {
	_, err := io.Copy(io.Discard, c.br)
	return err == nil
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s %s", r.Method, r.Header.Get("X-Test"), b)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/large", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 3*bufferBytes))
	})
	mux.HandleFunc("/declared", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		_, _ = io.WriteString(w, "hello")
	})
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		_, _ = io.WriteString(w, "hello")
	})
	mux.HandleFunc("/nocontent", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "tea")
	})
	mux.HandleFunc("/ignore-body", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ignored")
	})
	mux.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) { panic("handler bug") })
	return mux
}

func TestAnswersOnOneKeptAliveConnection(t *testing.T) {
	_, addr := start(t, handler(), nil)
	c := dial(t, addr)
	for _, tc := range []struct {
		name, raw, method string
		status            int
		body              string
		chunked           bool
		header            map[string]string
	}{
		{"small answer gets a Content-Length", "POST /echo HTTP/1.1\r\nHost: gw\r\nX-Test: a\r\nContent-Length: 5\r\n\r\nhello", "POST", 200, "POST a hello", false,
			map[string]string{"Content-Length": "12", "Content-Type": "text/plain"}},
		{"chunked request body", "POST /echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "POST", 200, "POST  abcde", false, nil},
		{"flushed answer is chunked", "GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n", "GET", 200, "data: 0\n\ndata: 1\n\ndata: 2\n\n", true, nil},
		{"large answer is chunked", "GET /large HTTP/1.1\r\nHost: gw\r\n\r\n", "GET", 200, strings.Repeat("x", 3*bufferBytes), true, nil},
		{"declared length kept", "GET /declared HTTP/1.1\r\nHost: gw\r\n\r\n", "GET", 200, "hello", false, map[string]string{"Content-Length": "5"}},
		{"no content", "GET /nocontent HTTP/1.1\r\nHost: gw\r\n\r\n", "GET", 204, "", false, nil},
		{"HEAD has no body", "HEAD /echo HTTP/1.1\r\nHost: gw\r\n\r\n", "HEAD", 200, "", false, nil},
		{"informational answer first", "GET /hints HTTP/1.1\r\nHost: gw\r\n\r\n", "GET", 418, "tea", false, nil},
		{"unread body is read away", "POST /ignore-body HTTP/1.1\r\nHost: gw\r\nContent-Length: 6\r\n\r\nunread", "POST", 200, "ignored", false, nil},
		{"not found", "GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n", "GET", 404, "404 page not found\n", false, nil},
		{"expect continue", "POST /echo HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", "POST", 200, "POST  ok", false, nil},
	} {
		c.send(tc.raw)
		a := c.read(tc.method)
		if a.status == http.StatusContinue || a.status == http.StatusEarlyHints {
			a = c.read(tc.method) // net/http's ReadResponse returns 1xx answers on their own
		}
		if a.status != tc.status || a.body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.name, a.status, a.body, tc.status, tc.body)
		}
		if got := len(a.chunks) > 0; got != tc.chunked {
			t.Errorf("%s: chunked %v, want %v", tc.name, got, tc.chunked)
		}
		for k, v := range tc.header {
			if a.header.Get(k) != v {
				t.Errorf("%s: %s %q, want %q", tc.name, k, a.header.Get(k), v)
			}
		}
		if a.header.Get("Date") == "" {
			t.Errorf("%s: no Date header", tc.name)
		}
	}
}

func TestConnectionEnds(t *testing.T) {
	_, addr := start(t, handler(), func(s *Server) { s.MaxHeaderBytes = 1 << 10 })
	for _, tc := range []struct {
		name, raw, method string
		status            int // 0: no answer expected, only the end of the connection
	}{
		{"client asks to close", "GET /echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", "GET", 200},
		{"HTTP/1.0", "GET /echo HTTP/1.0\r\n\r\n", "GET", 200},
		{"malformed request line", "GARBAGE\r\n\r\n", "GET", 400},
		{"missing Host", "GET /echo HTTP/1.1\r\n\r\n", "GET", 400},
		{"head too large", "GET /echo HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\n\r\n", "GET", 431},
		{"unsupported expectation", "POST /echo HTTP/1.1\r\nHost: gw\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", "POST", 417},
		{"answer shorter than declared", "GET /short HTTP/1.1\r\nHost: gw\r\n\r\n", "GET", 0},
		{"handler panics", "GET /panic HTTP/1.1\r\nHost: gw\r\n\r\n", "GET", 0},
	} {
		c := dial(t, addr)
		c.send(tc.raw)
		if tc.status != 0 {
			if a := c.read(tc.method); a.status != tc.status {
				t.Errorf("%s: status %d, want %d", tc.name, a.status, tc.status)
			}
		}
		if !c.closedByServer() {
			t.Errorf("%s: the connection stayed open", tc.name)
		}
	}
	// The server still serves after all that.
	c := dial(t, addr)
	c.send("GET /echo HTTP/1.1\r\nHost: gw\r\n\r\n")
	if a := c.read("GET"); a.status != 200 {
		t.Fatalf("after the bad requests: %d", a.status)
	}
}

func TestNetHTTPClientConcurrently(t *testing.T) {
	_, addr := start(t, handler(), nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				want := fmt.Sprintf("w%d-%d", w, i)
				resp, err := client.Post("http://"+addr+"/echo", "text/plain", strings.NewReader(want))
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "POST  "+want {
					errs <- fmt.Errorf("got %q, want %q", b, want)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestShutdownWaitsForCallsInProgress(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	s, addr := start(t, h, nil)
	idle := dial(t, addr)
	idle.send("GET /fast HTTP/1.1\r\nHost: gw\r\n\r\n")
	idle.read("GET")
	busy := dial(t, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if !idle.closedByServer() {
		t.Fatal("the idle connection was not closed by Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a call in progress", err)
	default:
	}
	close(release)
	a := busy.read("GET")
	if a.status != 200 || a.body != "done" || !a.close {
		t.Errorf("call in progress during shutdown: %d %q, Connection: close %v", a.status, a.body, a.close)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

func TestIdleAndSlowHeadConnectionsAreClosed(t *testing.T) {
	_, addr := start(t, handler(), func(s *Server) {
		s.IdleTimeout = 50 * time.Millisecond
		s.ReadHeaderTimeout = 50 * time.Millisecond
	})
	idle := dial(t, addr)
	if !idle.closedByServer() {
		t.Error("an idle connection outlived IdleTimeout")
	}
	slow := dial(t, addr)
	slow.send("GET /echo HTTP/1.1\r\n") // and never the rest of the head
	if !slow.closedByServer() {
		t.Error("a connection with a half-sent head outlived ReadHeaderTimeout")
	}
}

// watchedConn waits until a connection of s is watched for a hang-up, and returns it.
func watchedConn(t *testing.T, s *Server) *conn {
	t.Helper()
	var found *conn
	waitFor := time.Now().Add(5 * time.Second)
	for found == nil {
		s.mu.Lock()
		for c := range s.conns {
			c.watchMu.Lock()
			if c.watchState == watchRunning {
				found = c
			}
			c.watchMu.Unlock()
		}
		s.mu.Unlock()
		if found == nil && time.Now().After(waitFor) {
			t.Fatal("no connection was watched for a hang-up")
		}
		time.Sleep(5 * time.Millisecond) // polling, with a deadline
	}
	return found
}

// waitsForCancel is a long call: it reads the body (then closes bodyRead) and reports
// on cancelled whether its context was cancelled within 5 s.
func waitsForCancel() (h http.Handler, bodyRead <-chan struct{}, cancelled <-chan bool) {
	read, result := make(chan struct{}), make(chan bool, 1)
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		close(read)
		select {
		case <-r.Context().Done():
			result <- true
		case <-time.After(5 * time.Second): // the test's bound
			result <- false
		}
	})
	return h, read, result
}

// An agent that hangs up during a long call cancels the call's context (the gateway
// then abandons the upstream call).
func TestHangUpDuringALongCallCancelsIt(t *testing.T) {
	h, _, cancelled := waitsForCancel()
	s, addr := start(t, h, nil)
	c := dial(t, addr)
	c.send("POST /long HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\nhi")
	watchedConn(t, s)
	c.nc.Close()
	if !<-cancelled {
		t.Fatal("the call's context was not cancelled when the agent hung up")
	}
}

// A byte the watch reads (the next request, pipelined behind a long call) is not lost.
func TestPipelinedRequestBehindALongCall(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, r.URL.Path)
	})
	s, addr := start(t, h, nil)
	c := dial(t, addr)
	c.send("GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
	watched := watchedConn(t, s)
	c.send("GET /next HTTP/1.1\r\nHost: gw\r\n\r\n")
	watched.watchMu.Lock()
	done := watched.watchDone
	watched.watchMu.Unlock()
	<-done // the watch has taken the first byte of /next
	close(release)
	for _, want := range []string{"/slow", "/next"} {
		if a := c.read("GET"); a.status != 200 || a.body != want {
			t.Fatalf("answer %d %q, want 200 %q", a.status, a.body, want)
		}
	}
}

// A handler that answers without reading the body of an Expect: 100-continue request
// gets no late "100 Continue": the connection ends after the answer instead.
func TestExpectContinueNotAskedForEndsTheConnection(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, "denied")
	})
	_, addr := start(t, h, nil)
	c := dial(t, addr)
	c.send("POST /x HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
	a := c.read("POST")
	if a.status != http.StatusTooManyRequests || !a.close {
		t.Fatalf("answer %d, Connection: close %v; want 429 with close", a.status, a.close)
	}
	rest, _ := io.ReadAll(c.br)
	if len(rest) != 0 {
		t.Fatalf("after the answer the server sent %q", rest)
	}
}

// A large body the handler refuses unread does not reset the connection before the
// client has its answer.
func TestRefusedLargeBodyStillGetsItsAnswer(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.CopyN(io.Discard, r.Body, 1<<20)
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	})
	_, addr := start(t, h, nil)
	body := strings.Repeat("x", 20<<20)
	for i := range 5 {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Post("http://"+addr+"/upload", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("try %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("try %d: status %d", i, resp.StatusCode)
		}
	}
}

// A call whose body arrived slowly is watched from the end of its body on.
func TestHangUpAfterASlowUploadCancelsTheCall(t *testing.T) {
	h, bodyRead, cancelled := waitsForCancel()
	s, addr := start(t, h, nil)
	c := dial(t, addr)
	c.send("POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n")
	time.Sleep(2 * watchAfter) // the upload is slow: part of the scenario
	c.send("hi")
	<-bodyRead
	watchedConn(t, s)
	c.nc.Close()
	if !<-cancelled {
		t.Fatal("a hang-up after a slow upload did not cancel the call")
	}
}
