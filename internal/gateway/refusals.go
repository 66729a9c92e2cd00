package gateway

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/voiceagent-dev/voiceagent-operator/internal/ratelimit"
)

// A flood of bad calls (a taken-over agent probing paths, or hammering a spent
// budget) must not fill the audit queue and so, under FailClosed, deny the good calls.
// Refusals get a record each up to a rate; beyond it they are counted by reason and
// written as one summary record per reason and window ("N refused by X").
const (
	refusalRecordsPerSecond = 10
	refusalRecordsBurst     = 50
)

type refusalSummary struct {
	clock  clock.PassiveClock
	bucket *ratelimit.Bucket

	mu         sync.Mutex
	suppressed map[string]int64
	since      time.Time
}

func newRefusalSummary(clk clock.PassiveClock) *refusalSummary {
	return &refusalSummary{clock: clk, bucket: ratelimit.NewBucket(refusalRecordsPerSecond, refusalRecordsBurst, clk),
		suppressed: map[string]int64{}}
}

// admit reports whether a refusal of this kind gets a record of its own; if not, it
// is counted for the next summary.
func (s *refusalSummary) admit(kind string) bool {
	if ok, _ := s.bucket.Allow(); ok {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.suppressed) == 0 {
		s.since = s.clock.Now()
	}
	s.suppressed[kind]++
	return false
}

// take returns the counts since the last take, and when the window began.
func (s *refusalSummary) take() (map[string]int64, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.suppressed) == 0 {
		return nil, time.Time{}
	}
	out, since := s.suppressed, s.since
	s.suppressed = map[string]int64{}
	return out, since
}

// flushRefusals writes one summary record per reason of the refusals that got no
// record of their own.
func (g *Gateway) flushRefusals() {
	counts, since := g.refusals.take()
	if counts == nil {
		return
	}
	cfg := g.cfg.Load()
	now := g.opts.Clock.Now()
	for _, kind := range slices.Sorted(maps.Keys(counts)) {
		n := counts[kind]
		rec := auditRecord{
			Time: now.UTC(), VoiceAgent: cfg.VoiceAgent, Namespace: cfg.Namespace, Pod: g.opts.PodName,
			RequestID: newRequestID(), Route: "refusals", Target: kind, Decision: "denied", Count: n,
			Reason: fmt.Sprintf("%d calls refused by %s between %s and %s, beyond %d records a second",
				n, kind, since.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano), refusalRecordsPerSecond),
		}
		_, err := g.trail.AppendValue(&rec, false)
		if err != nil {
			g.log.Error("audit summary of refused calls not kept", "kind", kind, "count", n, "error", err.Error())
		}
	}
}

// refuseRequest answers a request that no route may serve (a method a proxy must never
// pass, a target or path that could mean two things) before any routing.
func (g *Gateway) refuseRequest(w http.ResponseWriter, r *http.Request, why string) {
	c := g.newCall(r, "request", "")
	defer c.finish()
	status := http.StatusBadRequest
	kind := "bad_path"
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost && r.Method != http.MethodPut &&
		r.Method != http.MethodPatch && r.Method != http.MethodDelete && r.Method != http.MethodOptions {
		status, kind = http.StatusMethodNotAllowed, "method_not_allowed"
	}
	c.deny(w, status, kind, why, 0)
}
