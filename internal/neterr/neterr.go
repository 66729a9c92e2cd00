// Package neterr names the kind of a network failure for messages that leave the
// process (error bodies, audit delivery errors): never addresses, bodies or credentials.
package neterr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"syscall"
)

// Kind is a short, safe description of err: timeout, canceled, connection refused, TLS
// verification failed, host not found, or connection failed. It goes by the error's
// type (the standard library's wrapped errors), not its text, which carries addresses
// and could be anything an upstream said.
func Kind(err error) string {
	var (
		ne        net.Error
		dnsErr    *net.DNSError
		verifyErr *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		recordErr tls.RecordHeaderError
		alertErr  tls.AlertError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &verifyErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid):
		return "TLS verification failed"
	case errors.As(err, &recordErr), errors.As(err, &alertErr):
		return "TLS handshake failed"
	case errors.As(err, &dnsErr) && (dnsErr.IsNotFound || dnsErr.Err == "no such host"):
		return "host not found"
	}
	return "connection failed"
}

// SafeKind reports whether an error kind an upstream reported (its error type, status
// or code) may be passed on: 1 to 64 letters, digits and underscores, which cannot
// carry an address, a body or a credential.
func SafeKind(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			return false
		}
	}
	return true
}
