package gateway

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
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
	target, err := url.Parse("http://" + in.Upstream)
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
		Addr:              in.Listen,
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
