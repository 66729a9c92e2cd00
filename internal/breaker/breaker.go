// Package breaker owns the per-upstream circuit breaker: after enough consecutive
// failures it stops sending traffic to an upstream for a while, so that a failing model
// or integration API is not hammered and callers fail over or fail fast, then lets a
// single probe through to find out whether the upstream has recovered.
package breaker

import (
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// State is where a breaker is in its cycle. The numeric values are stable, so the
// gateway can export them as a gauge: 0 closed, 1 open, 2 half-open.
type State int

const (
	// Closed lets every call through and counts consecutive failures.
	Closed State = iota
	// Open refuses every call until the open duration has passed.
	Open
	// HalfOpen has let one probe through and refuses the rest until it reports.
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "Closed"
	case Open:
		return "Open"
	case HalfOpen:
		return "HalfOpen"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Breaker is one upstream's circuit breaker. It is safe for concurrent use.
//
// Reports are tied to the call that produced them, as gobreaker does it: every change
// of state starts a new generation, Allow hands out a Ticket of the current one, and a
// report whose ticket is of an earlier generation is ignored. So a slow success from
// traffic admitted before the breaker opened can never close it: only the half-open
// probe's own answer can.
type Breaker struct {
	mu        sync.Mutex
	clock     clock.PassiveClock
	threshold int
	openFor   time.Duration
	state     State
	failures  int       // consecutive, while Closed
	since     time.Time // when Open or HalfOpen was entered
	gen       uint64    // bumped on every change of state
}

// Ticket is what Allow hands a call; its report counts only in the generation it was
// issued in.
type Ticket struct{ gen uint64 }

// New returns a closed breaker that opens after failureThreshold consecutive failures
// (a threshold below 1 acts as 1) and stays open for openDuration (0 or less: the
// next Allow after a trip is already the half-open probe).
func New(failureThreshold int, openDuration time.Duration, clk clock.PassiveClock) *Breaker {
	if clk == nil {
		clk = clock.RealClock{}
	}
	b := &Breaker{clock: clk}
	b.set(failureThreshold, openDuration)
	return b
}

// set stores the limits. A threshold below 1 needs no clamping: the first failure
// already reaches it, exactly as with 1.
func (b *Breaker) set(threshold int, openDuration time.Duration) {
	b.threshold, b.openFor = threshold, openDuration
}

// Allow reports whether a call may go to the upstream now. Once the open duration has
// passed, the first caller becomes the half-open probe and the others are refused until
// it reports. A probe that never reports (its caller forgot, or crashed) would leave the
// breaker half-open forever, so after another open duration without an answer it is
// presumed failed and the next caller becomes the new probe.
func (b *Breaker) Allow() (Ticket, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Closed:
		return Ticket{b.gen}, true
	case Open, HalfOpen:
		now := b.clock.Now()
		if now.Sub(b.since) < b.openFor {
			return Ticket{}, false
		}
		b.state, b.since = HalfOpen, now
		b.gen++
		return Ticket{b.gen}, true
	}
	return Ticket{}, false
}

// Report gives the result of the call t was issued to: Success or Failure.
func (b *Breaker) Report(t Ticket, success bool) {
	if success {
		b.Success(t)
	} else {
		b.Failure(t)
	}
}

// Success reports a call that worked (of t's generation only). It resets the failure count, and the answer of a
// half-open probe closes the breaker.
func (b *Breaker) Success(t Ticket) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.gen != b.gen {
		return
	}
	switch b.state {
	case Closed:
		b.failures = 0
	case HalfOpen:
		b.state, b.failures = Closed, 0
		b.gen++
	}
}

// Failure reports a call that failed (of t's generation only). Enough consecutive failures open a closed
// breaker; a failed half-open probe re-opens it for another open duration.
func (b *Breaker) Failure(t Ticket) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.gen != b.gen {
		return
	}
	switch b.state {
	case Closed:
		b.failures++
		if b.failures >= b.threshold {
			b.trip()
		}
	case HalfOpen:
		b.trip()
	}
}

// trip opens the breaker; the caller holds mu.
func (b *Breaker) trip() {
	b.state, b.since, b.failures = Open, b.clock.Now(), 0
	b.gen++
}

// State reports the current state without changing it: an Open breaker whose open
// duration has passed still reads Open until a caller's Allow makes it HalfOpen.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Update changes the threshold and open duration, for a configuration reload, keeping
// the state. A new open duration applies to a breaker that is already open (it is
// measured from when it opened); a lower threshold takes effect at the next failure.
func (b *Breaker) Update(failureThreshold int, openDuration time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set(failureThreshold, openDuration)
}
