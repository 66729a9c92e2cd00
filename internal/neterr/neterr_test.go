package neterr

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestKindNeverCarriesDetail(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("dial: %w", context.Canceled), "canceled"},
		{errors.New("dial tcp 10.1.2.3:443: connect: connection refused"), "connection refused"},
		{errors.New("tls: failed to verify certificate: x509: unknown authority"), "TLS verification failed"},
		{errors.New("dial tcp: lookup internal.corp.example: no such host"), "host not found"},
		{errors.New("read tcp 10.1.2.3:443: reset by peer, key=sk-secret"), "connection failed"},
	} {
		if got := Kind(tt.err); got != tt.want {
			t.Errorf("Kind(%q) = %q, want %q", tt.err, got, tt.want)
		}
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
