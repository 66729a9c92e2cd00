package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"time"
)

// The gateway's HTTP stack is net/http on both sides. Two hand-written parts (a lean
// HTTP/1.1 server for the agent's side and a caller-goroutine client for the provider
// side) were measured faster on this project's 2-core machine, but they were less
// defensive than net/http (an unbounded response head, unlimited 1xx answers, bytes
// after a complete answer read by the next call on a kept-alive connection), and the
// agent is on the wrong side of the boundary: the well-kept stack wins
// (docs/performance.md has the figures of both).

// Limits of the agent-facing and inbound servers. A header bigger than 64 KiB is no
// SDK's: it is refused with 431 before any handler runs.
const (
	serverMaxHeaderBytes  = 64 << 10
	serverReadHeaderLimit = 10 * time.Second
	serverIdleTimeout     = 90 * time.Second
	// bodyReadTimeout bounds reading a request body: a slow-loris body holds a slot.
	bodyReadTimeout = 60 * time.Second
)

// Limits of the provider-side client.
const (
	upstreamMaxResponseHeaderBytes = 64 << 10
	upstreamDialTimeout            = 10 * time.Second
	upstreamTLSHandshakeTimeout    = 10 * time.Second
	// The answer's head must come within this; the body is bounded by the call's own
	// timeout (a stream can run for minutes).
	upstreamResponseHeaderTimeout = 120 * time.Second
	upstreamIdleConnTimeout       = 90 * time.Second
)

// newUpstreamTransport is the provider-side client: net/http's Transport with bounded
// dialing, TLS handshakes and response heads, HTTP/2 where the provider offers it, and
// no proxy from the environment (the NetworkPolicy decides where the gateway goes, not
// an env var).
func newUpstreamTransport(tlsConfig *tls.Config) *http.Transport {
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            (&net.Dialer{Timeout: upstreamDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    upstreamTLSHandshakeTimeout,
		ResponseHeaderTimeout:  upstreamResponseHeaderTimeout,
		MaxResponseHeaderBytes: upstreamMaxResponseHeaderBytes,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        upstreamIdleConnTimeout,
		MaxIdleConns:           512,
		MaxIdleConnsPerHost:    256,
		ForceAttemptHTTP2:      true,
		// The gateway reads usage from the answer: it must see it uncompressed, and it
		// asks for no compression itself (stripRequestHeaders drops the agent's
		// Accept-Encoding too).
		DisableCompression: true,
	}
}

// NewUpstreamTransport is the gateway's provider-side client trusting tlsConfig's roots;
// tests and the benchmark use it to talk to their own TLS upstreams.
func NewUpstreamTransport(tlsConfig *tls.Config) http.RoundTripper {
	return newUpstreamTransport(tlsConfig)
}

// newAgentServer serves the agent's side: net/http with bounded heads, header reads
// and idle connections. There is no server-wide read or write timeout because a
// streamed answer or a realtime session lasts as long as the call: guardBody bounds
// reading each request's body instead, and the call's own timeout bounds the answer.
func newAgentServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           guardBody(h),
		ReadHeaderTimeout: serverReadHeaderLimit,
		IdleTimeout:       serverIdleTimeout,
		MaxHeaderBytes:    serverMaxHeaderBytes,
	}
}

// guardBody gives every request's body a read deadline, so that a client that sends
// its head and then trickles (or never sends) its body cannot hold a call slot. The
// deadline is lifted once the body has been read: net/http then watches the
// connection for the client hanging up, and a deadline left in place would end a
// long stream as if the client had gone.
func guardBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
			r.Body = &deadlineLiftingBody{ReadCloser: r.Body, rc: rc}
		}
		h.ServeHTTP(w, r)
	})
}

type deadlineLiftingBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

func (b *deadlineLiftingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.lifted {
		b.lifted = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
