// Package ratelimit owns the gateway's admission limits that are measured in time or in
// simultaneity: token buckets (requests per second, tokens per minute) and a cap on
// concurrent calls. It knows nothing about HTTP or configuration files; the gateway
// builds one Bucket or Concurrency per configured limit and calls Update/SetMax when the
// configuration is reloaded, so live traffic keeps its accounting across reloads.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// epsilon absorbs float64 rounding in the token level. Refill is computed as
// elapsed seconds × rate, which is not exact for most rates; without a tolerance a
// bucket that should hold exactly one token may hold 0.9999999999 and refuse.
const epsilon = 1e-9

// Bucket is a token bucket: it holds up to burst tokens and refills at a steady rate.
// It is safe for concurrent use and does not allocate per call.
type Bucket struct {
	mu     sync.Mutex
	clock  clock.PassiveClock
	rate   float64 // tokens per second; <= 0 means unlimited
	burst  float64 // capacity
	tokens float64 // current level; negative while a large AllowN is paid back
	last   time.Time
}

// NewBucket returns a full bucket refilling at ratePerSecond up to burst tokens.
// ratePerSecond <= 0 means unlimited: every call is allowed. A burst below 1 with a
// positive rate is raised to one second's worth of tokens (at least 1), because a
// bucket that can never hold a token would refuse everything; an unset burst in the
// configuration means "no particular burst", not "nothing at all".
func NewBucket(ratePerSecond float64, burst int, clk clock.PassiveClock) *Bucket {
	if clk == nil {
		clk = clock.RealClock{}
	}
	b := &Bucket{clock: clk}
	b.set(ratePerSecond, burst)
	b.tokens = b.burst
	b.last = clk.Now()
	return b
}

// set stores the limits; the caller holds mu or owns b exclusively.
func (b *Bucket) set(ratePerSecond float64, burst int) {
	if ratePerSecond <= 0 || math.IsNaN(ratePerSecond) {
		b.rate, b.burst = 0, 0
		return
	}
	b.rate = ratePerSecond
	b.burst = float64(burst)
	if burst < 1 {
		b.burst = math.Max(1, math.Ceil(ratePerSecond))
	}
}

// refill adds the tokens earned since the last call. A clock that steps backwards
// earns nothing and does not move last back, so it cannot be used to earn twice.
func (b *Bucket) refill(now time.Time) {
	elapsed := now.Sub(b.last)
	if elapsed <= 0 {
		return
	}
	b.last = now
	b.tokens = math.Min(b.burst, b.tokens+elapsed.Seconds()*b.rate)
}

// Allow takes one token. When none is available it returns false and how long until
// one will be (always > 0).
func (b *Bucket) Allow() (ok bool, retryAfter time.Duration) {
	return b.AllowN(1)
}

// AllowN takes n tokens, for limits counted in something other than requests (model
// tokens per minute). When n exceeds the burst the request could never fit, so it is
// allowed once the bucket is full and drives the level negative: the debt is paid back
// by refusing later calls until the bucket has refilled.
//
// AllowN(0) takes nothing and reports whether the bucket is out of debt (level >= 0):
// the pre-flight check for a limit whose cost is only known afterwards and is then
// recorded with Charge. A negative n counts as 0.
//
// On refusal, retryAfter is how long until n tokens (a full bucket when n exceeds the
// burst; a level of 0 when n is 0) will be available.
func (b *Bucket) AllowN(n float64) (bool, time.Duration) {
	if n < 0 || math.IsNaN(n) {
		n = 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return true, 0
	}
	b.refill(b.clock.Now())
	need := math.Min(n, b.burst)
	if b.tokens+epsilon >= need {
		b.tokens -= n
		return true, 0
	}
	return false, b.wait(need - b.tokens)
}

// Charge takes n tokens unconditionally, possibly into debt, for consumption that has
// already happened (the tokens a model call actually used, known only from its
// response). Unlike AllowN it cannot be refused, so usage is never under-counted; the
// debt makes later AllowN calls wait. n <= 0 is ignored.
func (b *Bucket) Charge(n float64) {
	if n <= 0 || math.IsNaN(n) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return
	}
	b.refill(b.clock.Now())
	b.tokens -= n
}

// wait converts a token shortfall into a duration, rounded up to the nanosecond so that
// a caller who waits exactly that long finds the tokens there. A value within float
// noise of a whole nanosecond is taken as that nanosecond, so a shortfall of exactly one
// token at 2/s reads 500ms, not 500.000001ms; the epsilon in AllowN admits the caller
// who waits exactly that long.
func (b *Bucket) wait(shortfall float64) time.Duration {
	ns := shortfall / b.rate * float64(time.Second)
	whole := math.Round(ns)
	if math.Abs(ns-whole) > 1e-3 {
		whole = math.Ceil(ns)
	}
	switch {
	case whole >= math.MaxInt64:
		return math.MaxInt64
	case whole < 1:
		return 1
	}
	return time.Duration(whole)
}

// Tokens reports the current level (negative while in debt), for metrics and tests.
// It is meaningless for an unlimited bucket and reports 0.
func (b *Bucket) Tokens() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return 0
	}
	b.refill(b.clock.Now())
	return b.tokens
}

// Update changes the limits in place, for a configuration reload. Tokens earned under
// the old rate are credited first, then the level is capped at the new burst; it is
// never raised, so a reload cannot be used to reset a drained bucket. A bucket that was
// unlimited starts full, as a new bucket would.
func (b *Bucket) Update(ratePerSecond float64, burst int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	wasUnlimited := b.rate <= 0
	if !wasUnlimited {
		b.refill(now)
	}
	b.set(ratePerSecond, burst)
	if b.rate <= 0 {
		return
	}
	if wasUnlimited {
		b.tokens = b.burst
		b.last = now
		return
	}
	b.tokens = math.Min(b.tokens, b.burst)
}

// Concurrency caps the number of calls in flight. It is safe for concurrent use.
type Concurrency struct {
	mu       sync.Mutex
	max      int // <= 0 means unlimited
	inFlight int
}

// NewConcurrency returns a limiter admitting at most max calls at once; max <= 0 means
// unlimited (calls are still counted, so InFlight stays meaningful and a later SetMax
// applies to the calls already running).
func NewConcurrency(max int) *Concurrency {
	return &Concurrency{max: max}
}

// TryAcquire admits a call if there is room. Every true must be paired with Release.
func (c *Concurrency) TryAcquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.inFlight >= c.max {
		return false
	}
	c.inFlight++
	return true
}

// Release ends a call admitted by TryAcquire. Releasing more than was acquired is a
// programming error and panics, as sync.WaitGroup and semaphore.Weighted do: silently
// clamping would hide a leak of the opposite kind elsewhere.
func (c *Concurrency) Release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inFlight == 0 {
		panic("ratelimit: Concurrency.Release without a matching TryAcquire")
	}
	c.inFlight--
}

// SetMax changes the cap, for a configuration reload. Calls already in flight are not
// interrupted; when the new cap is below InFlight, new calls wait for them to drain.
func (c *Concurrency) SetMax(max int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.max = max
}

// InFlight reports the number of admitted calls not yet released.
func (c *Concurrency) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight
}
