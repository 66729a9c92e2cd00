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
