package neterr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"
)

func TestKindNeverCarriesDetail(t *testing.T) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 443}, Err: err}
	}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"deadline", context.DeadlineExceeded, "timeout"},
		{"canceled, wrapped", fmt.Errorf("dial: %w", context.Canceled), "canceled"},
		{"refused, as net returns it", opErr(&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}), "connection refused"},
		{"unknown authority, as crypto/tls returns it", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "TLS verification failed"},
		{"wrong host name", fmt.Errorf("handshake: %w", x509.HostnameError{Host: "internal.corp.example"}), "TLS verification failed"},
		{"not found, as the resolver returns it", opErr(&net.DNSError{Err: "no such host", Name: "internal.corp.example", IsNotFound: true}), "host not found"},
		{"a plain-text server on a TLS port", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "TLS handshake failed"},
		{"reset, whose text carries a key", errors.New("read tcp 10.1.2.3:443: reset by peer, key=sk-secret"), "connection failed"},
		// The text alone decides nothing: an upstream's words are not a kind.
		{"text that says refused", errors.New("upstream said: connection refused"), "connection failed"},
		{"text that says certificate", errors.New("your certificate of deposit"), "connection failed"},
	} {
		if got := Kind(tt.err); got != tt.want {
			t.Errorf("%s: Kind(%q) = %q, want %q", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestKindOfRealFailures makes the failures for real, on loopback.
func TestKindOfRealFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = net.Dial("tcp", addr)
	if got := Kind(err); got != "connection refused" {
		t.Errorf("dial a closed port: %v -> %q", err, got)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	_, err = http.Get(srv.URL) // the test server's certificate is trusted by no one
	if got := Kind(err); got != "TLS verification failed" {
		t.Errorf("an untrusted certificate: %v -> %q", err, got)
	}
}

func TestSafeKind(t *testing.T) {
	for s, want := range map[string]bool{
		"overloaded_error": true, "RESOURCE_EXHAUSTED": true, "429": true,
		"": false, "overloaded at 10.3.4.5": false, "key sk-abc": false, "a.b": false,
		"x_" + string(make([]byte, 63)): false,
	} {
		if got := SafeKind(s); got != want {
			t.Errorf("SafeKind(%q) = %v, want %v", s, got, want)
		}
	}
}
