package ratelimit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// newFakeClock is a clock that only moves when a test steps it.
func newFakeClock() *clocktesting.FakeClock {
	return clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
}

// drain takes single tokens until refused and returns how many were admitted.
func drain(b *Bucket, max int) int {
	for i := 0; i < max; i++ {
		if ok, _ := b.Allow(); !ok {
			return i
		}
	}
	return max
}

func TestBucketBurstThenSteadyRate(t *testing.T) {
	clk := newFakeClock()
	b := NewBucket(2, 200, clk)

	if got := drain(b, 1000); got != 200 {
		t.Fatalf("burst admitted %d, want 200", got)
	}
	ok, retry := b.Allow()
	if ok || retry != 500*time.Millisecond {
		t.Fatalf("after burst: ok=%v retry=%v, want false 500ms", ok, retry)
	}

	// Ten seconds in 1ms steps, taking everything on offer at each step: exactly two
	// per second, never three, never one.
	perSecond := make([]int, 10)
	for ms := 1; ms <= 10000; ms++ {
		clk.Step(time.Millisecond)
		perSecond[(ms-1)/1000] += drain(b, 10)
	}
	for i, n := range perSecond {
		if n != 2 {
			t.Errorf("second %d admitted %d, want 2 (all: %v)", i, n, perSecond)
		}
	}
}

type step struct {
	advance time.Duration
	update  *[2]float64 // rate, burst applied before the call
	charge  float64     // Charge applied before the call, if non-zero
	n       float64
	wantOK  bool
	retry   time.Duration // checked when !wantOK
	tokens  *float64      // level checked after the call
}

func f(v float64) *float64 { return &v }

func runSteps(t *testing.T, b *Bucket, clk *clocktesting.FakeClock, steps []step) {
	t.Helper()
	for i, s := range steps {
		clk.Step(s.advance)
		if s.update != nil {
			b.Update(s.update[0], int(s.update[1]))
		}
		if s.charge != 0 {
			b.Charge(s.charge)
		}
		ok, retry := b.AllowN(s.n)
		if ok != s.wantOK {
			t.Fatalf("step %d: AllowN(%v) = %v, want %v", i, s.n, ok, s.wantOK)
		}
		if ok && retry != 0 {
			t.Fatalf("step %d: allowed with retryAfter %v, want 0", i, retry)
		}
		if !ok && retry != s.retry {
			t.Fatalf("step %d: retryAfter %v, want %v", i, retry, s.retry)
		}
		if s.tokens != nil {
			if got := b.Tokens(); got < *s.tokens-1e-6 || got > *s.tokens+1e-6 {
				t.Fatalf("step %d: level %v, want %v", i, got, *s.tokens)
			}
		}
	}
}

func TestBucketScripts(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{
			name: "retryAfter shrinks as time passes", rate: 10, burst: 1,
			steps: []step{
				{n: 1, wantOK: true, tokens: f(0)},
				{n: 1, retry: 100 * time.Millisecond},
				{advance: 30 * time.Millisecond, n: 1, retry: 70 * time.Millisecond},
				{advance: 70 * time.Millisecond, n: 1, wantOK: true},
			},
		},
		{
			name: "slow rate waits seconds", rate: 0.5, burst: 1,
			steps: []step{
				{n: 1, wantOK: true},
				{n: 1, retry: 2 * time.Second},
				{advance: 1999 * time.Millisecond, n: 1, retry: time.Millisecond},
				{advance: time.Millisecond, n: 1, wantOK: true},
			},
		},
		{
			// 0.1 added ten times is 0.9999999999999999 in float64: without a tolerance
			// the token earned after ten seconds would be refused.
			name: "float rounding does not cost a token", rate: 0.1, burst: 1,
			steps: []step{
				{n: 1, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 1, wantOK: true},
			},
		},
		{
			// After eight tenths the level is 0.7999999999999999 and the shortfall
			// 0.20000000000000007: the wait is 2s, not 2.000000001s.
			name: "float noise does not add a nanosecond to retryAfter", rate: 0.1, burst: 1,
			steps: []step{
				{n: 1, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{advance: time.Second, n: 0, wantOK: true},
				{n: 1, retry: 2 * time.Second},
			},
		},
		{
			name: "refill never exceeds burst", rate: 100, burst: 3,
			steps: []step{
				{advance: time.Hour, n: 3, wantOK: true, tokens: f(0)},
				{n: 1, retry: 10 * time.Millisecond},
			},
		},
		{
			name: "AllowN within burst needs n tokens", rate: 100, burst: 6000,
			steps: []step{
				{n: 5000, wantOK: true, tokens: f(1000)},
				{n: 1500, retry: 5 * time.Second},
				{advance: 5 * time.Second, n: 1500, wantOK: true, tokens: f(0)},
			},
		},
		{
			name: "AllowN beyond burst waits for a full bucket then runs into debt", rate: 100, burst: 6000,
			steps: []step{
				{n: 1, wantOK: true},
				{n: 10000, retry: 10 * time.Millisecond}, // not full: one token short
				{advance: 10 * time.Millisecond, n: 10000, wantOK: true, tokens: f(-4000)},
				{n: 1, retry: 40010 * time.Millisecond}, // pay back 4000, then earn 1
				{advance: 40 * time.Second, n: 1, retry: 10 * time.Millisecond, tokens: f(0)},
				{advance: 10 * time.Millisecond, n: 1, wantOK: true},
				{n: 10000, retry: 60 * time.Second}, // until full again
			},
		},
		{
			name: "zero and negative n take nothing while out of debt", rate: 1, burst: 1,
			steps: []step{
				{n: 1, wantOK: true},
				{n: 0, wantOK: true},
				{n: -5, wantOK: true, tokens: f(0)},
			},
		},
		{
			name: "AllowN(0) refuses while in debt and says when the debt is paid", rate: 100, burst: 1000,
			steps: []step{
				{n: 1500, wantOK: true, tokens: f(-500)},
				{n: 0, retry: 5 * time.Second},
				{advance: 4 * time.Second, n: 0, retry: time.Second, tokens: f(-100)},
				{advance: time.Second, n: 0, wantOK: true, tokens: f(0)},
			},
		},
		{
			name: "Charge after the fact goes into debt even below the burst", rate: 100, burst: 6000,
			steps: []step{
				{n: 5000, wantOK: true, tokens: f(1000)},
				{charge: 1500, n: 0, retry: 5 * time.Second, tokens: f(-500)},
				{advance: 5 * time.Second, n: 0, wantOK: true},
			},
		},
		{
			name: "Charge of nothing changes nothing", rate: 1, burst: 10,
			steps: []step{
				{charge: -3, n: 0, wantOK: true, tokens: f(10)},
			},
		},
		{
			name: "unset burst means one second's worth", rate: 5, burst: 0,
			steps: []step{
				{n: 5, wantOK: true},
				{n: 1, retry: 200 * time.Millisecond},
			},
		},
		{
			name: "unset burst with a slow rate still holds one token", rate: 0.1, burst: 0,
			steps: []step{
				{n: 1, wantOK: true},
				{n: 1, retry: 10 * time.Second},
			},
		},
		{
			name: "clock stepping backwards earns nothing", rate: 1, burst: 1,
			steps: []step{
				{n: 1, wantOK: true},
				{advance: -time.Hour, n: 1, retry: time.Second},
				{advance: time.Hour, n: 1, retry: time.Second},
				{advance: time.Second, n: 1, wantOK: true},
			},
		},
		{
			name: "Update lowering burst caps the level", rate: 1, burst: 100,
			steps: []step{
				{n: 10, wantOK: true, tokens: f(90)},
				{update: &[2]float64{1, 20}, n: 20, wantOK: true, tokens: f(0)},
				{n: 1, retry: time.Second},
			},
		},
		{
			name: "Update raising burst does not refill", rate: 1, burst: 10,
			steps: []step{
				{n: 10, wantOK: true},
				{update: &[2]float64{1, 1000}, n: 1, retry: time.Second, tokens: f(0)},
				{advance: 100 * time.Second, n: 100, wantOK: true, tokens: f(0)},
			},
		},
		{
			name: "Update credits time at the old rate before switching", rate: 1, burst: 100,
			steps: []step{
				{n: 100, wantOK: true},
				{advance: 10 * time.Second, update: &[2]float64{100, 100}, n: 10, wantOK: true, tokens: f(0)},
				{n: 1, retry: 10 * time.Millisecond},
			},
		},
		{
			name: "Update to unlimited admits everything", rate: 1, burst: 1,
			steps: []step{
				{n: 1, wantOK: true},
				{update: &[2]float64{0, 0}, n: 1e9, wantOK: true},
				{n: 1e9, wantOK: true},
			},
		},
		{
			name: "Update from unlimited starts full", rate: 0, burst: 0,
			steps: []step{
				{n: 1e9, wantOK: true},
				{update: &[2]float64{2, 4}, n: 4, wantOK: true},
				{n: 1, retry: 500 * time.Millisecond},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			runSteps(t, NewBucket(tt.rate, tt.burst, clk), clk, tt.steps)
		})
	}
}

// TestBucketRetryAfterIsSufficient checks the contract of retryAfter for rates that do
// not divide a second evenly: waiting that long admits, waiting 1ms less does not.
func TestBucketRetryAfterIsSufficient(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		n     float64
	}{
		{"one third per second", 1.0 / 3, 1, 1},
		{"three per second", 3, 2, 1},
		{"seven per second", 7, 7, 3},
		{"tokens per minute", 90000.0 / 60, 90000, 1234},
		{"odd rate", 13.7, 5, 2.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			b := NewBucket(tt.rate, tt.burst, clk)
			for {
				if ok, _ := b.AllowN(tt.n); !ok {
					break
				}
			}
			ok, retry := b.AllowN(tt.n)
			if ok || retry <= time.Millisecond {
				t.Fatalf("refusal: ok=%v retry=%v", ok, retry)
			}
			clk.Step(retry - time.Millisecond)
			if ok, _ := b.AllowN(tt.n); ok {
				t.Fatalf("admitted 1ms before retryAfter %v", retry)
			}
			clk.Step(time.Millisecond)
			if ok, r := b.AllowN(tt.n); !ok {
				t.Fatalf("refused at retryAfter %v (new retry %v)", retry, r)
			}
		})
	}
}

func TestBucketUnlimited(t *testing.T) {
	tests := []struct {
		name string
		rate float64
	}{
		{"zero rate", 0},
		{"negative rate", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBucket(tt.rate, 1, newFakeClock())
			for i := 0; i < 10000; i++ {
				if ok, retry := b.Allow(); !ok || retry != 0 {
					t.Fatalf("call %d refused (retry %v)", i, retry)
				}
			}
			b.Charge(1e12)
			if ok, _ := b.AllowN(1e12); !ok {
				t.Fatal("AllowN refused on an unlimited bucket after a Charge")
			}
		})
	}
}

func TestBucketConcurrentFrozenClock(t *testing.T) {
	tests := []struct {
		name       string
		burst      int
		goroutines int
		perG       int
	}{
		{"50 goroutines race for 100 tokens", 100, 50, 10},
		{"more tokens than demand", 1000, 50, 10},
		{"single token", 1, 50, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			b := NewBucket(1, tt.burst, clk)
			var admitted atomic.Int64
			var start, done sync.WaitGroup
			start.Add(1)
			for g := 0; g < tt.goroutines; g++ {
				done.Add(1)
				go func() {
					defer done.Done()
					start.Wait()
					for i := 0; i < tt.perG; i++ {
						if ok, _ := b.Allow(); ok {
							admitted.Add(1)
						}
					}
				}()
			}
			start.Done()
			done.Wait()
			want := int64(min(tt.burst, tt.goroutines*tt.perG))
			if got := admitted.Load(); got != want {
				t.Fatalf("admitted %d, want %d", got, want)
			}
		})
	}
}

func TestBucketDoesNotAllocate(t *testing.T) {
	clk := newFakeClock()
	b := NewBucket(1e9, 1<<30, clk)
	if allocs := testing.AllocsPerRun(1000, func() { b.Allow() }); allocs != 0 {
		t.Fatalf("Allow allocates %v times per call", allocs)
	}
	if allocs := testing.AllocsPerRun(1000, func() { b.AllowN(3) }); allocs != 0 {
		t.Fatalf("AllowN allocates %v times per call", allocs)
	}
}

func BenchmarkBucketAllow(b *testing.B) {
	bucket := NewBucket(1e9, 1<<30, clock.RealClock{})
	b.ReportAllocs()
	for b.Loop() {
		bucket.Allow()
	}
}

func BenchmarkBucketAllowParallel(b *testing.B) {
	bucket := NewBucket(1e9, 1<<30, clock.RealClock{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bucket.Allow()
		}
	})
}

func TestConcurrencyScripts(t *testing.T) {
	type op struct {
		do   string // acquire, release, setmax
		max  int
		want bool // for acquire
	}
	tests := []struct {
		name         string
		max          int
		ops          []op
		wantInFlight int
	}{
		{
			name: "admits up to max", max: 2,
			ops:          []op{{do: "acquire", want: true}, {do: "acquire", want: true}, {do: "acquire", want: false}},
			wantInFlight: 2,
		},
		{
			name: "release makes room", max: 1,
			ops:          []op{{do: "acquire", want: true}, {do: "acquire", want: false}, {do: "release"}, {do: "acquire", want: true}},
			wantInFlight: 1,
		},
		{
			name: "unlimited still counts", max: 0,
			ops:          []op{{do: "acquire", want: true}, {do: "acquire", want: true}, {do: "acquire", want: true}},
			wantInFlight: 3,
		},
		{
			name: "lowering max below in-flight refuses until drained", max: 3,
			ops: []op{
				{do: "acquire", want: true}, {do: "acquire", want: true}, {do: "acquire", want: true},
				{do: "setmax", max: 1},
				{do: "release"}, {do: "acquire", want: false},
				{do: "release"}, {do: "acquire", want: false},
				{do: "release"}, {do: "acquire", want: true},
			},
			wantInFlight: 1,
		},
		{
			name: "raising max admits more", max: 1,
			ops:          []op{{do: "acquire", want: true}, {do: "setmax", max: 2}, {do: "acquire", want: true}, {do: "acquire", want: false}},
			wantInFlight: 2,
		},
		{
			name: "limited to unlimited", max: 1,
			ops:          []op{{do: "acquire", want: true}, {do: "setmax", max: -1}, {do: "acquire", want: true}},
			wantInFlight: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConcurrency(tt.max)
			for i, o := range tt.ops {
				switch o.do {
				case "acquire":
					if got := c.TryAcquire(); got != o.want {
						t.Fatalf("op %d: TryAcquire = %v, want %v", i, got, o.want)
					}
				case "release":
					c.Release()
				case "setmax":
					c.SetMax(o.max)
				}
			}
			if got := c.InFlight(); got != tt.wantInFlight {
				t.Fatalf("InFlight = %d, want %d", got, tt.wantInFlight)
			}
		})
	}
}

func TestConcurrencyReleaseWithoutAcquirePanics(t *testing.T) {
	c := NewConcurrency(1)
	defer func() {
		if recover() == nil {
			t.Fatal("Release on an empty limiter did not panic")
		}
	}()
	c.Release()
}

func TestConcurrencyUnderContention(t *testing.T) {
	tests := []struct {
		name       string
		max        int
		goroutines int
		want       int
	}{
		{"cap of 10 among 50", 10, 50, 10},
		{"cap above demand", 100, 50, 50},
		{"unlimited", 0, 50, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConcurrency(tt.max)
			var admitted atomic.Int64
			var start, done sync.WaitGroup
			start.Add(1)
			for g := 0; g < tt.goroutines; g++ {
				done.Add(1)
				go func() {
					defer done.Done()
					start.Wait()
					if c.TryAcquire() { // held until the end: none released
						admitted.Add(1)
					}
				}()
			}
			start.Done()
			done.Wait()
			if got := int(admitted.Load()); got != tt.want || c.InFlight() != tt.want {
				t.Fatalf("admitted %d, InFlight %d, want %d", got, c.InFlight(), tt.want)
			}
			for i := 0; i < tt.want; i++ {
				c.Release()
			}
			if c.InFlight() != 0 {
				t.Fatalf("InFlight %d after releasing all", c.InFlight())
			}
		})
	}
}
