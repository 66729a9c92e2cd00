// Package proxyserver serves HTTP/1.1 on the gateway's loopback proxy listener with one
// goroutine per connection that reads a request, runs the handler and writes the
// answer, and nothing else.
//
// net/http's server also starts a background read per request, to notice a client
// that goes away, and wakes the connection's goroutine through it at the end of every
// request. On a small or virtualised node such wake-ups are most of what a Go proxy
// adds to a call (docs/performance.md). Here the connection is watched for a hang-up
// only once a call has run for watchAfter, which a model call that takes seconds does
// and a fast call never pays for. Parsing is net/http's own (http.ReadRequest), so what
// the gateway accepts on the wire does not change.
package proxyserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves one handler. Its zero value is not usable; set Handler.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's head once its first byte came: 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection with no request for this long: 2m.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's head: 1 MiB, as net/http's default.
	MaxHeaderBytes int
	Logger         *slog.Logger

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*conn]struct{}
	shutdown atomic.Bool
	wg       sync.WaitGroup
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

func (s *Server) defaults() {
	if s.ReadHeaderTimeout == 0 {
		s.ReadHeaderTimeout = 10 * time.Second
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = 2 * time.Minute
	}
	if s.MaxHeaderBytes == 0 {
		s.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
}

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.defaults()
	if s.shutdown.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.ln = ln
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff) // accept is failing for want of resources: as net/http does
				continue
			}
			return err
		}
		backoff = 0
		c := &conn{s: s, nc: nc}
		c.state.Store(stateIdle)
		s.mu.Lock()
		if s.shutdown.Load() {
			s.mu.Unlock()
			_ = nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections and waits for calls in progress
// to end, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	s.mu.Unlock()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes the listener and every connection now.
func (s *Server) Close() error {
	s.shutdown.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	s.mu.Unlock()
	s.closeAll()
	s.wg.Wait()
	return nil
}

// closeIdle closes connections between calls and reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosing) {
			_ = c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
}

const (
	stateIdle int32 = iota
	stateActive
	stateClosing
)

type conn struct {
	s     *Server
	nc    net.Conn
	state atomic.Int32
	lr    io.LimitedReader
	cr    connReader

	// A call that runs longer than watchAfter, with its body read, has the connection
	// watched for the agent hanging up (see watchForHangUp). Guarded by watchMu.
	watchMu      sync.Mutex
	watchState   int // watchIdle, watchRunning, watchStopped
	watchDone    chan struct{}
	bodyFinished atomic.Bool
	hungUp       atomic.Bool
	reqStart     time.Time          // guarded by watchMu
	reqCancel    context.CancelFunc // guarded by watchMu
	linger       bool               // end with lingeringClose
	br           *bufio.Reader
	bw           *bufio.Writer
}

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 8<<10) }}
)

func (c *conn) serve() {
	s := c.s
	c.cr.nc = c.nc
	c.lr.R = &c.cr
	c.br = readers.Get().(*bufio.Reader)
	c.br.Reset(&c.lr)
	c.bw = writers.Get().(*bufio.Writer)
	c.bw.Reset(c.nc)
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			s.Logger.Error("proxy handler panicked; connection closed", "panic", fmt.Sprint(p))
		} else if p == nil && c.linger {
			c.lingeringClose()
		}
		_ = c.nc.Close()
		c.br.Reset(nil)
		readers.Put(c.br)
		c.bw.Reset(nil)
		writers.Put(c.bw)
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	for {
		if !c.serveOne() {
			return
		}
	}
}

// serveOne serves one request; false ends the connection.
func (c *conn) serveOne() bool {
	s := c.s
	// The head's bound covers what bufio reads ahead, as net/http's does.
	c.lr.N = int64(s.MaxHeaderBytes) + 4096
	_ = c.nc.SetReadDeadline(time.Now().Add(s.IdleTimeout))
	if _, err := c.br.Peek(1); err != nil {
		return false // closed, idle too long, or shut down
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return false // Shutdown closed it
	}
	defer c.state.CompareAndSwap(stateActive, stateIdle)
	_ = c.nc.SetReadDeadline(time.Now().Add(s.ReadHeaderTimeout))
	req, err := http.ReadRequest(c.br)
	if err != nil {
		if c.lr.N <= 0 {
			c.reject(http.StatusRequestHeaderFieldsTooLarge, "request head too large")
		} else if !errors.Is(err, io.EOF) {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				c.reject(http.StatusBadRequest, "malformed request")
			}
		}
		return false
	}
	c.lr.N = 1 << 62
	_ = c.nc.SetReadDeadline(time.Time{})
	if req.ProtoMajor != 1 {
		c.reject(http.StatusHTTPVersionNotSupported, "HTTP/1.x only")
		return false
	}
	if _, ok := req.Header["Host"]; req.ProtoAtLeast(1, 1) && !ok && req.Host == "" {
		c.reject(http.StatusBadRequest, "missing Host header")
		return false
	}
	var cont *continueReader
	if exp := req.Header.Get("Expect"); exp != "" {
		if !strings.EqualFold(exp, "100-continue") || !req.ProtoAtLeast(1, 1) {
			c.reject(http.StatusExpectationFailed, "unsupported Expect header")
			return false
		}
		cont = &continueReader{ReadCloser: req.Body, c: c}
		req.Body = cont
	}
	req.RemoteAddr = c.nc.RemoteAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req = req.WithContext(ctx)
	c.bodyFinished.Store(req.Body == http.NoBody)
	req.Body = &bodyEOFNotifier{ReadCloser: req.Body, c: c}
	c.watchMu.Lock()
	c.watchState, c.reqStart, c.reqCancel = watchIdle, time.Now(), cancel
	c.watchMu.Unlock()
	watch := time.AfterFunc(watchAfter, func() { c.watchForHangUp(cancel) })
	w := &response{c: c, req: req, header: http.Header{}, status: http.StatusOK}
	s.Handler.ServeHTTP(w, req)
	watch.Stop()
	hungUp := c.stopWatching()
	// A client that waits for "100 Continue" which the handler never asked for (it
	// answered without reading the body) has not sent the body: the connection ends
	// instead of being read for it, as with net/http.
	unsentBody := cont != nil && !cont.sent
	if unsentBody {
		w.closeAfter = true
	}
	// From here a connection that ends may still have input from the client (an unread
	// body): it is closed gently, so that the answer is read before a reset.
	c.linger = true
	if !w.finish() || hungUp || unsentBody {
		return false
	}
	// What the handler left of the body is read away, up to a bound, so that the next
	// request starts where it should.
	// A body the handler closed was read to its end by Close.
	if _, err := io.CopyN(io.Discard, req.Body, 256<<10); !errors.Is(err, io.EOF) && !errors.Is(err, http.ErrBodyReadAfterClose) {
		return false
	}
	if w.closeAfter {
		return false
	}
	c.linger = false
	return true
}

// watchAfter: calls shorter than this are never watched for a hang-up, so that the
// fast path costs nothing; a model call that takes seconds is.
const watchAfter = 50 * time.Millisecond

const (
	watchIdle = iota
	watchRunning
	watchStopped
)

// watchForHangUp reads the connection while the handler works, once the request body
// is read: the end of the connection (the agent hung up) cancels the call's context, so
// that the upstream call is abandoned instead of run to its end. A byte that arrives
// instead (the next request, pipelined) is kept for the next read.
func (c *conn) watchForHangUp(cancel context.CancelFunc) {
	c.watchMu.Lock()
	if c.watchState != watchIdle || !c.bodyFinished.Load() {
		c.watchMu.Unlock()
		return
	}
	c.watchState = watchRunning
	done := make(chan struct{})
	c.watchDone = done
	c.watchMu.Unlock()
	defer close(done)
	var b [1]byte
	n, err := c.nc.Read(b[:])
	if n == 1 {
		c.cr.pending = append(c.cr.pending, b[0])
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return // stopWatching ended the read
	}
	c.hungUp.Store(true)
	cancel()
}

// stopWatching ends a watch in progress before the connection is read again, and
// reports whether the agent hung up.
func (c *conn) stopWatching() bool {
	c.watchMu.Lock()
	state, done := c.watchState, c.watchDone
	c.watchState = watchStopped
	c.watchMu.Unlock()
	if state == watchRunning {
		_ = c.nc.SetReadDeadline(time.Unix(1, 0)) // ends the pending read at once
		<-done
	}
	return c.hungUp.Load()
}

// connReader reads the connection, after a byte the hang-up watch may have taken.
type connReader struct {
	nc      net.Conn
	pending []byte
}

func (r *connReader) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.nc.Read(p)
}

// bodyEOFNotifier tells the hang-up watch that the request body has been read, and
// starts the watch then if the call has already run past watchAfter (a slow upload).
type bodyEOFNotifier struct {
	io.ReadCloser
	c *conn
}

func (b *bodyEOFNotifier) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.c.bodyFinished.Swap(true) {
		b.c.watchMu.Lock()
		late, cancel := b.c.watchState == watchIdle && time.Since(b.c.reqStart) >= watchAfter, b.c.reqCancel
		b.c.watchMu.Unlock()
		if late {
			go b.c.watchForHangUp(cancel)
		}
	}
	return n, err
}

// lingeringClose ends the sending side and reads away, for a short while, what the
// client still sends: closing a socket with unread input resets the connection, which
// can destroy the answer before the client has read it (net/http does the same).
func (c *conn) lingeringClose() {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return
	}
	_ = c.bw.Flush()
	_ = tc.CloseWrite()
	_ = tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.Copy(io.Discard, io.LimitReader(tc, 64<<20))
}

// reject answers a request that never reached the handler, and the connection ends.
func (c *conn) reject(status int, msg string) {
	body := msg + "\n"
	fmt.Fprintf(c.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	if c.bw.Flush() == nil {
		c.linger = true
	}
}

// continueReader sends "100 Continue" when the handler first reads the body.
type continueReader struct {
	io.ReadCloser
	c    *conn
	sent bool
}

func (r *continueReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		_, _ = io.WriteString(r.c.bw, "HTTP/1.1 100 Continue\r\n\r\n")
		if err := r.c.bw.Flush(); err != nil {
			return 0, err
		}
	}
	return r.ReadCloser.Read(p)
}

// response is the http.ResponseWriter. Until the handler flushes or writes more than
// bufferBytes, the body is held, so that a complete small answer goes out with its
// Content-Length in one write; otherwise it is sent chunked.
type response struct {
	c          *conn
	req        *http.Request
	header     http.Header
	status     int
	wroteHead  bool // WriteHeader was called (or implied by Write)
	committed  bool // the head is on the wire (in bw)
	chunked    bool
	closeAfter bool
	declared   int64 // Content-Length set by the handler, or -1
	written    int64
	buf        []byte
	failed     bool
}

const bufferBytes = 4 << 10

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.wroteHead {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An informational answer goes out now; the real one follows.
		fmt.Fprintf(w.c.bw, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
		_ = w.header.Write(w.c.bw)
		_, _ = io.WriteString(w.c.bw, "\r\n")
		if err := w.c.bw.Flush(); err != nil {
			w.failed = true
		}
		return
	}
	w.wroteHead, w.status = true, code
	w.declared = -1
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			w.header.Del("Content-Length")
		}
	}
}

func (w *response) bodyAllowed() bool {
	return w.req.Method != http.MethodHead && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHead {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed {
		return 0, errors.New("connection to the client failed")
	}
	if !w.bodyAllowed() {
		if w.status == http.StatusNoContent || w.status == http.StatusNotModified {
			return 0, http.ErrBodyNotAllowed
		}
		return len(p), nil // HEAD: the body is not sent
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed && len(w.buf)+len(p) <= bufferBytes {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if !w.committed {
		w.commit(-1)
	}
	return len(p), w.writeBody(p)
}

// Flush sends the head and what the body has so far: streamed answers (SSE) go out
// event by event.
func (w *response) Flush() {
	if !w.wroteHead {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(-1)
	}
	if err := w.c.bw.Flush(); err != nil {
		w.failed = true
	}
}

// commit writes the head. length is the whole body's length when it is known now.
func (w *response) commit(length int64) {
	w.committed = true
	h := w.header
	if w.req.Close || w.c.s.shutdown.Load() || strings.EqualFold(h.Get("Connection"), "close") {
		w.closeAfter = true
	}
	for _, k := range []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Proxy-Connection", "Upgrade", "Te", "Trailer"} {
		h.Del(k)
	}
	switch {
	case !w.bodyAllowed(), w.declared >= 0:
	case length >= 0:
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		h.Set("Transfer-Encoding", "chunked")
	default:
		w.closeAfter = true // HTTP/1.0 without a length: the end of the connection ends the body
	}
	if w.closeAfter {
		h.Set("Connection", "close")
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	bw := w.c.bw
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.WriteString(strconv.Itoa(w.status))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(w.status))
	_, _ = bw.WriteString("\r\n")
	_ = h.Write(bw)
	_, _ = bw.WriteString("\r\n")
	if len(w.buf) > 0 {
		buf := w.buf
		w.buf = nil
		_ = w.writeBody(buf)
	}
}

func (w *response) writeBody(p []byte) error {
	bw := w.c.bw
	if w.chunked {
		_, _ = bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
		_, _ = bw.Write(p)
		_, err := bw.WriteString("\r\n")
		return w.check(err)
	}
	_, err := bw.Write(p)
	return w.check(err)
}

func (w *response) check(err error) error {
	if err != nil {
		w.failed = true
	}
	return err
}

// finish completes the answer after the handler returned; false ends the connection.
func (w *response) finish() bool {
	if !w.wroteHead {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(int64(len(w.buf)))
	}
	if w.chunked {
		_, _ = w.c.bw.WriteString("0\r\n\r\n")
	}
	if err := w.c.bw.Flush(); err != nil || w.failed {
		return false
	}
	if w.declared >= 0 && w.written < w.declared && w.bodyAllowed() {
		return false // the answer is shorter than it said: the client must see the end
	}
	return true
}
