package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// newInbound terminates TLS for the Service with the certificate cert-manager keeps in
// the mounted Secret, and forwards to the agent on loopback. The certificate is
// re-read when its file changes, so renewal needs no restart.
func newInbound(in *gw.Inbound) (*http.Server, error) {
	certs := &certReloader{certFile: in.CertFile, keyFile: in.KeyFile}
	if _, err := certs.get(); err != nil {
		return nil, err
	}
	return newInboundServer(in.Listen, in.Upstream, certs)
}

func newInboundServer(listen, upstream string, certs *certReloader) (*http.Server, error) {
	target, err := url.Parse("http://" + upstream)
	if err != nil {
		return nil, err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ResponseHeaderTimeout:  upstreamResponseHeaderTimeout,
		MaxResponseHeaderBytes: upstreamMaxResponseHeaderBytes,
		IdleConnTimeout:        upstreamIdleConnTimeout,
		MaxIdleConnsPerHost:    64,
	}
	// The Service's port is the only one reachable from the network: heads, bodies and
	// idle connections are all bounded. A WebSocket upgrade (a telephony provider's
	// media stream) lives as long as its call, so the read deadline guardBody sets is
	// lifted once a request's body has been read, and there is no write timeout.
	return &http.Server{
		Addr:              listen,
		Handler:           guardBody(proxy),
		ReadHeaderTimeout: serverReadHeaderLimit,
		IdleTimeout:       serverIdleTimeout,
		MaxHeaderBytes:    serverMaxHeaderBytes,
		TLSConfig:         serverTLSConfig(certs),
	}, nil
}

// serverTLSConfig serves the certificate certs holds, as it is renewed.
func serverTLSConfig(certs *certReloader) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certs.get()
		},
	}
}

type certReloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
}

func (c *certReloader) get() (*tls.Certificate, error) {
	st, err := os.Stat(c.certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && st.ModTime().Equal(c.modTime) {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // keep serving the old one during a partial update
		}
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	c.cert, c.modTime = &cert, st.ModTime()
	return c.cert, nil
}

// The inbound role: in the agent's pod, now that the gateway runs in pods of its own, a
// process of this binary still terminates TLS for the agent's Service and forwards to
// the agent on loopback. It holds no credential and needs no configuration file, audit
// trail or state: it is newInbound and a health port, nothing else.

// InboundOptions configure the inbound role.
type InboundOptions struct {
	Listen   string // the Service's TLS port, ":8443"
	CertFile string
	KeyFile  string
	Upstream string // the agent on loopback, "127.0.0.1:8080"
	Admin    string // /healthz and /readyz, ":15020"
	Logger   *slog.Logger
	// ShutdownTimeout bounds the wait for requests in progress at the end; 10s when 0.
	ShutdownTimeout time.Duration
}

// InboundProxy is the inbound role with its ports bound.
type InboundProxy struct {
	opts      InboundOptions
	log       *slog.Logger
	certs     *certReloader
	server    *http.Server
	admin     *http.Server
	ln, adm   net.Listener
	finishing atomic.Bool
}

// ListenInbound binds the inbound role's ports. A certificate that cannot be read yet is
// no error: the role is not ready, and refuses handshakes, until it can.
func ListenInbound(opts InboundOptions) (*InboundProxy, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	// Anything but the agent in its own pod would make the Service's port an open relay.
	host, _, err := net.SplitHostPort(opts.Upstream)
	if err != nil || (host != "localhost" && !isLoopbackHost(host)) {
		return nil, fmt.Errorf("upstream %q must be a loopback host:port: the inbound role forwards to the agent in its own pod", opts.Upstream)
	}
	p := &InboundProxy{opts: opts, log: opts.Logger, certs: &certReloader{certFile: opts.CertFile, keyFile: opts.KeyFile}}
	if p.server, err = newInboundServer(opts.Listen, opts.Upstream, p.certs); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := p.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	p.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if p.ln, err = net.Listen("tcp", opts.Listen); err != nil {
		return nil, err
	}
	if p.adm, err = net.Listen("tcp", opts.Admin); err != nil {
		_ = p.ln.Close()
		return nil, err
	}
	if _, err := p.certs.get(); err != nil {
		p.log.Error("inbound TLS certificate not loadable; not ready until it is", "error", err.Error())
	}
	return p, nil
}

// Addr is the TLS port's address; AdminAddr the health port's.
func (p *InboundProxy) Addr() net.Addr      { return p.ln.Addr() }
func (p *InboundProxy) AdminAddr() net.Addr { return p.adm.Addr() }

func (p *InboundProxy) ready() error {
	if p.finishing.Load() {
		return errors.New("shutting down")
	}
	_, err := p.certs.get()
	return err
}

// Serve serves until ctx ends, then turns not ready, lets the requests in progress end
// (within ShutdownTimeout) and returns nil. As a native sidecar it is stopped only once
// the agent's container has exited, so little is left in progress by then.
func (p *InboundProxy) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() {
		if err := p.server.ServeTLS(p.ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("listen %s: %w", p.opts.Listen, err)
		}
	}()
	go func() {
		if err := p.admin.Serve(p.adm); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("listen %s: %w", p.opts.Admin, err)
		}
	}()
	p.log.Info("inbound TLS serving", "listen", p.Addr().String(), "upstream", p.opts.Upstream, "admin", p.AdminAddr().String())
	select {
	case err := <-errc:
		_ = p.server.Close()
		_ = p.admin.Close()
		return err
	case <-ctx.Done():
	}
	p.finishing.Store(true)
	shutdown, cancel := context.WithTimeout(context.Background(), p.opts.ShutdownTimeout)
	defer cancel()
	// The health port stays up while the TLS port drains, so that probes see "not
	// ready" rather than a refused connection.
	if err := p.server.Shutdown(shutdown); err != nil {
		p.log.Warn("inbound requests still in progress at the end of the shutdown; closed", "error", err.Error())
		_ = p.server.Close()
	}
	_ = p.admin.Close()
	return nil
}

// RunInbound is the inbound role: it binds its ports and serves until ctx ends.
func RunInbound(ctx context.Context, opts InboundOptions) error {
	p, err := ListenInbound(opts)
	if err != nil {
		return err
	}
	return p.Serve(ctx)
}
