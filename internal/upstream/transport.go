// Package upstream is the gateway's HTTP client for model providers and integrations:
// an http.RoundTripper that runs each exchange on the caller's goroutine over a pool of
// keep-alive HTTP/1.1 connections.
//
// net/http's Transport gives every connection a reader and a writer goroutine and hands
// each request and each response between them and the caller. On a small or
// virtualised node every handoff can cost a thread wake-up, and a sidecar pays that on
// every call: measured on the 2-core test machine, it was most of what the gateway
// added to a call (docs/performance.md). Here the caller writes the request and reads
// the response itself, with net/http's own wire code (Request.Write, ReadResponse).
//
// What it does not do, it leaves to net/http: requests for a proxy from the
// environment (HTTPS_PROXY) and anything but https go to Fallback.
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// Transport is safe for concurrent use. The zero value is not; use New.
type Transport struct {
	tlsConfig          *tls.Config
	maxIdlePerHost     int
	idleTimeout        time.Duration
	livenessCheckAfter time.Duration
	dialer             net.Dialer
	proxy              func(*http.Request) (*url.URL, error)
	fallback           http.RoundTripper
	now                func() time.Time

	mu   sync.Mutex
	idle map[string][]*conn // by host:port, most recently used last
}

// Options configure a Transport; zero values take the defaults.
type Options struct {
	// TLSConfig for upstream connections; nil verifies against the system roots.
	TLSConfig *tls.Config
	// MaxIdlePerHost bounds the kept-alive connections per upstream: 256.
	MaxIdlePerHost int
	// IdleTimeout closes a kept-alive connection unused for this long: 90s.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting and the TLS handshake: 10s.
	DialTimeout time.Duration
	// LivenessCheckAfter: a connection idle this long is checked (one non-blocking peek)
	// before it is reused, so that one the server has closed meanwhile is not used:
	// 100ms. Connections reused sooner, under load, are not checked.
	LivenessCheckAfter time.Duration
	// Fallback serves requests through a proxy and non-https requests: an
	// http.Transport with the same TLS configuration by default.
	Fallback http.RoundTripper
}

// New returns a Transport.
func New(o Options) *Transport {
	if o.MaxIdlePerHost == 0 {
		o.MaxIdlePerHost = 256
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 90 * time.Second
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.LivenessCheckAfter == 0 {
		o.LivenessCheckAfter = 100 * time.Millisecond
	}
	tc := o.TLSConfig.Clone()
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	// This client speaks HTTP/1.1 only; say so, or a server may pick h2.
	tc.NextProtos = []string{"http/1.1"}
	if o.Fallback == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = o.TLSConfig.Clone()
		t.MaxIdleConnsPerHost = o.MaxIdlePerHost
		o.Fallback = t
	}
	return &Transport{
		tlsConfig: tc, maxIdlePerHost: o.MaxIdlePerHost, idleTimeout: o.IdleTimeout, livenessCheckAfter: o.LivenessCheckAfter,
		dialer: net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second},
		proxy:  http.ProxyFromEnvironment, fallback: o.Fallback, now: time.Now,
		idle: map[string][]*conn{},
	}
}

// conn is one kept-alive connection to an upstream.
type conn struct {
	addr      string
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	reused    bool
	idleSince time.Time
}

// RoundTrip sends req and returns the response with its body unread; closing the body
// at its end gives the connection back to the pool.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" || req.URL.Host == "" {
		return t.fallback.RoundTrip(req)
	}
	if p, err := t.proxy(req); err != nil || p != nil {
		return t.fallback.RoundTrip(req)
	}
	addr := hostPort(req.URL)
	ctx := req.Context()
	for {
		c, err := t.get(ctx, addr, req.URL.Hostname())
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := t.exchange(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		// A kept-alive connection the server had already closed shows up as EOF before
		// any byte of an answer: the request was never read. It is sent again on a new
		// connection when that is safe, with net/http's rule for it.
		if c.reused && errors.Is(err, errServerClosedIdle) && ctx.Err() == nil && replayable(req) {
			if req.GetBody != nil {
				body, gerr := req.GetBody()
				if gerr != nil {
					return nil, err
				}
				req = cloneWithBody(req, body)
			}
			continue
		}
		closeBody(req)
		return nil, err
	}
}

var errServerClosedIdle = errors.New("upstream closed an idle connection")

// exchange writes req on c and reads the response head. On error c is closed.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request) (*http.Response, error) {
	// A cancelled or expired context closes the connection, which ends any read or
	// write in progress with an error; the connection is then never reused.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = c.nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	// Waiting for the first byte tells "closed before answering" (EOF or a reset with
	// nothing read) from an answer cut short.
	if _, err := c.br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("%w: %w", errServerClosedIdle, err)
		}
		return fail(err)
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err)
		}
		// 1xx answers other than 101 come before the real one.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		break
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("upstream switched protocols; not supported"))
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		if stop() && keep {
			t.put(c)
		} else {
			_ = c.nc.Close()
		}
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, c: c, t: t, stop: stop, keep: keep}
	return resp, nil
}

// body gives the connection back to the pool once the response is read to its end, and
// closes it if the reader stops early.
type body struct {
	rc   io.ReadCloser
	c    *conn
	t    *Transport
	stop func() bool
	keep bool
	done bool
	mu   sync.Mutex
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *body) Close() error {
	b.finish(false)
	return nil
}

func (b *body) finish(atEOF bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	// stop is false once the context's AfterFunc ran: the connection is closed.
	if b.stop() && atEOF && b.keep && b.c.br.Buffered() == 0 {
		b.t.put(b.c)
		return
	}
	_ = b.c.nc.Close()
}

// get returns a kept-alive connection to addr, or dials one.
func (t *Transport) get(ctx context.Context, addr, serverName string) (*conn, error) {
	now := t.now()
	t.mu.Lock()
	for pool := t.idle[addr]; len(pool) > 0; pool = t.idle[addr] {
		c := pool[len(pool)-1]
		pool[len(pool)-1] = nil
		t.idle[addr] = pool[:len(pool)-1]
		idle := now.Sub(c.idleSince)
		if idle >= t.idleTimeout {
			_ = c.nc.Close()
			continue
		}
		if idle >= t.livenessCheckAfter {
			t.mu.Unlock()
			if alive(c) {
				c.reused = true
				return c, nil
			}
			_ = c.nc.Close()
			t.mu.Lock()
			continue
		}
		t.mu.Unlock()
		c.reused = true
		return c, nil
	}
	t.mu.Unlock()
	cfg := t.tlsConfig
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = serverName
	}
	d := tls.Dialer{NetDialer: &t.dialer, Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{addr: addr, nc: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 16<<10)}, nil
}

// alive reports whether an idle connection is still open: a server that closed it has
// sent a TLS close_notify and a FIN, which show up as readable input (an idle HTTP/1.1
// connection has none otherwise). It peeks without blocking and without consuming.
func alive(c *conn) bool {
	if c.br.Buffered() > 0 {
		return false
	}
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return true
	}
	sc, ok := tc.NetConn().(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	open := true
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read (EAGAIN) is the only sign of an open, idle connection.
		open = n < 0 && errors.Is(err, syscall.EAGAIN)
		return true
	})
	return open
}

func (t *Transport) put(c *conn) {
	c.idleSince = t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.idle[c.addr]) >= t.maxIdlePerHost {
		_ = c.nc.Close()
		return
	}
	t.idle[c.addr] = append(t.idle[c.addr], c)
}

// CloseIdleConnections closes every kept-alive connection, as http.Transport's does.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*conn{}
	t.mu.Unlock()
	for _, pool := range idle {
		for _, c := range pool {
			_ = c.nc.Close()
		}
	}
	if f, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

// hostPort is the address to dial for a URL: its host and port, 443 by default.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// replayable is net/http's rule: no body or a body that can be had again, and a method
// that is idempotent or a request that carries an idempotency key.
func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

func cloneWithBody(req *http.Request, body io.ReadCloser) *http.Request {
	r := *req
	r.Body = body
	return &r
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
