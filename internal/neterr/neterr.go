// Package neterr names the kind of a network failure for messages that leave the
// process (error bodies, audit delivery errors): never addresses, bodies or credentials.
package neterr

import (
	"context"
	"errors"
	"net"
	"strings"
)

// Kind is a short, safe description of err: timeout, canceled, connection refused, TLS
// verification failed, host not found, or connection failed.
func Kind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	case strings.Contains(err.Error(), "certificate"):
		return "TLS verification failed"
	case strings.Contains(err.Error(), "no such host"):
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
