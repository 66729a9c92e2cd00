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
