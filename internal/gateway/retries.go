package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/neterr"
)

// maxInformational is how many 1xx answers an upstream may send before its final one.
const maxInformational = 5

var errTooManyInformational = errors.New("too many informational (1xx) answers")

// doWithRetries sends a request and retries only where the upstream cannot have acted
// on it (a provider must never bill twice): a transport error before any of the
// request was written, or 429/503 with a Retry-After the upstream set, honoured. Calls that are
// safe to repeat (idempotent and bodiless) are retried on any transport error and on
// 429 or 5xx too. Backoff is exponential with full jitter, within ctx's deadline. The
// last response, if any, is returned open.
func (g *Gateway) doWithRetries(ctx context.Context, build func() (*http.Request, error), upstream string, safe bool) (*http.Response, int, string) {
	var lastMsg string
	for attempt := 0; ; attempt++ {
		req, err := build()
		if err != nil {
			return nil, attempt, "bad request"
		}
		var written atomic.Bool
		informational := 0
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteHeaders: func() { written.Store(true) },
			// net/http bounds the bytes of 1xx heads, not their number: an upstream may
			// send a few (100 Continue, 103 Early Hints), not a stream of them.
			Got1xxResponse: func(int, textproto.MIMEHeader) error {
				if informational++; informational > maxInformational {
					return errTooManyInformational
				}
				return nil
			},
		}))
		start := time.Now()
		resp, err := g.client.Do(req)
		g.metrics.upstreamLatency.WithLabelValues(host(upstream)).Observe(time.Since(start).Seconds())
		last := attempt >= g.opts.MaxRetries
		if err != nil {
			lastMsg = host(upstream) + ": " + neterr.Kind(err)
			if last || ctx.Err() != nil || (written.Load() && !safe) {
				return nil, attempt + 1, lastMsg
			}
			if !g.backoff(ctx, attempt, 0) {
				return nil, attempt + 1, lastMsg
			}
			continue
		}
		ra := resp.Header.Get("Retry-After")
		again := safe && retryable(resp.StatusCode) ||
			ra != "" && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable)
		if !again || last {
			return resp, attempt + 1, ""
		}
		wait := retryAfter(ra, g.opts.Clock.Now())
		drain(resp)
		lastMsg = fmt.Sprintf("%s: status %d", host(upstream), resp.StatusCode)
		if !g.backoff(ctx, attempt, wait) {
			return nil, attempt + 1, lastMsg
		}
	}
}

// backoff waits before the next attempt; false when ctx would end first.
func (g *Gateway) backoff(ctx context.Context, attempt int, floor time.Duration) bool {
	d := g.opts.BackoffBase << attempt
	d = time.Duration(rand.Int64N(int64(d) + 1)) // full jitter
	if floor > d {
		d = floor
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d < 0 {
		d = 0
	}
	if d > maxRetryAfter {
		d = maxRetryAfter
	}
	return d
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// upstreamErrorKind extracts the provider's error type (a short identifier such as
// "rate_limit_exceeded" or "RESOURCE_EXHAUSTED") and nothing else.
func upstreamErrorKind(resp *http.Response) string {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Code   any    `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &e)
	for _, k := range []string{e.Error.Type, e.Error.Status, fmt.Sprint(e.Error.Code)} {
		if k != "<nil>" && neterr.SafeKind(k) {
			return k
		}
	}
	return "upstream_error"
}
