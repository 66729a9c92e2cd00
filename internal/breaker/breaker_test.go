package breaker

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// newFakeClock is a clock that only moves when a test steps it.
func newFakeClock() *clocktesting.FakeClock {
	return clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
}

// op is one step of a script: advance the clock, then do something and check the
// result and the state afterwards. The state is always checked; its zero value is
// Closed.
type op struct {
	advance   time.Duration
	do        string // allow, success, failure, update, state
	want      bool   // for allow
	threshold int    // for update
	open      time.Duration
	state     State
}

func TestBreakerScripts(t *testing.T) {
	tests := []struct {
		name      string
		threshold int
		open      time.Duration
		ops       []op
	}{
		{
			name: "full cycle", threshold: 3, open: 30 * time.Second,
			ops: []op{
				{do: "allow", want: true, state: Closed},
				{do: "failure", state: Closed},
				{do: "failure", state: Closed},
				{do: "allow", want: true, state: Closed},
				{do: "failure", state: Open},
				{do: "allow", want: false, state: Open},
				{advance: 30*time.Second - time.Millisecond, do: "allow", want: false, state: Open},
				{advance: time.Millisecond, do: "allow", want: true, state: HalfOpen},
				{do: "allow", want: false, state: HalfOpen},
				{do: "allow", want: false, state: HalfOpen},
				{do: "success", state: Closed},
				{do: "allow", want: true, state: Closed},
				{do: "allow", want: true, state: Closed},
			},
		},
		{
			name: "failed probe re-opens for another open duration", threshold: 2, open: 10 * time.Second,
			ops: []op{
				{do: "failure"}, {do: "failure", state: Open},
				{advance: 10 * time.Second, do: "allow", want: true, state: HalfOpen},
				{advance: 3 * time.Second, do: "failure", state: Open},
				{advance: 9 * time.Second, do: "allow", want: false, state: Open}, // 12s after the first trip, 9s after the second
				{advance: time.Second, do: "allow", want: true, state: HalfOpen},
				{do: "success", state: Closed},
			},
		},
		{
			name: "success resets the consecutive failure count", threshold: 3, open: time.Second,
			ops: []op{
				{do: "failure"}, {do: "failure"},
				{do: "success", state: Closed},
				{do: "failure"}, {do: "failure", state: Closed},
				{do: "failure", state: Open},
			},
		},
		{
			name: "a probe's success clears earlier failures", threshold: 2, open: time.Second,
			ops: []op{
				{do: "failure"}, {do: "failure", state: Open},
				{advance: time.Second, do: "allow", want: true, state: HalfOpen},
				{do: "success", state: Closed},
				{do: "failure", state: Closed}, // one failure, not three
				{do: "failure", state: Open},
			},
		},
		{
			name: "threshold of one", threshold: 1, open: time.Second,
			ops: []op{{do: "failure", state: Open}, {do: "allow", want: false, state: Open}},
		},
		{
			name: "threshold below one means one", threshold: 0, open: time.Second,
			ops: []op{{do: "allow", want: true, state: Closed}, {do: "failure", state: Open}},
		},
		{
			name: "negative threshold means one", threshold: -3, open: time.Second,
			ops: []op{{do: "allow", want: true, state: Closed}, {do: "failure", state: Open}},
		},
		{
			name: "negative open duration probes at once", threshold: 1, open: -time.Second,
			ops: []op{{do: "failure", state: Open}, {do: "allow", want: true, state: HalfOpen}},
		},
		{
			name: "late reports while open change nothing", threshold: 1, open: 30 * time.Second,
			ops: []op{
				{do: "failure", state: Open},
				{advance: 10 * time.Second, do: "success", state: Open},
				{advance: 10 * time.Second, do: "failure", state: Open},
				{advance: 10 * time.Second, do: "allow", want: true, state: HalfOpen}, // 30s after the trip, not extended
			},
		},
		{
			name: "a probe that never reports is replaced after an open duration", threshold: 1, open: 30 * time.Second,
			ops: []op{
				{do: "failure", state: Open},
				{advance: 30 * time.Second, do: "allow", want: true, state: HalfOpen},
				{advance: 29 * time.Second, do: "allow", want: false, state: HalfOpen},
				{advance: time.Second, do: "allow", want: true, state: HalfOpen},
				{do: "allow", want: false, state: HalfOpen},
			},
		},
		{
			name: "State does not move an expired open breaker by itself", threshold: 1, open: time.Second,
			ops: []op{
				{do: "failure", state: Open},
				{advance: time.Hour, do: "state", state: Open},
				{do: "allow", want: true, state: HalfOpen},
			},
		},
		{
			name: "Update shortens the open duration of an open breaker", threshold: 1, open: time.Minute,
			ops: []op{
				{do: "failure", state: Open},
				{advance: 10 * time.Second, do: "allow", want: false, state: Open},
				{do: "update", threshold: 1, open: 5 * time.Second, state: Open},
				{do: "allow", want: true, state: HalfOpen},
			},
		},
		{
			name: "Update lowering the threshold applies at the next failure", threshold: 5, open: time.Second,
			ops: []op{
				{do: "failure"}, {do: "failure"}, {do: "failure", state: Closed},
				{do: "update", threshold: 2, open: time.Second, state: Closed},
				{do: "allow", want: true},
				{do: "failure", state: Open},
			},
		},
		{
			name: "Update raising the threshold keeps counting", threshold: 2, open: time.Second,
			ops: []op{
				{do: "failure", state: Closed},
				{do: "update", threshold: 3, open: time.Second},
				{do: "failure", state: Closed},
				{do: "failure", state: Open},
			},
		},
		{
			name: "zero open duration probes at once", threshold: 1, open: 0,
			ops: []op{
				{do: "failure", state: Open},
				{do: "allow", want: true, state: HalfOpen},
				{do: "failure", state: Open},
				{do: "allow", want: true, state: HalfOpen},
				{do: "success", state: Closed},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			b := New(tt.threshold, tt.open, clk)
			// A report uses the ticket of the last Allow; one without an Allow of its
			// own (plain traffic while closed) takes one first.
			var last Ticket
			have := false
			report := func(success bool) {
				if !have {
					if tk, ok := b.Allow(); ok {
						last = tk
					}
				}
				b.Report(last, success)
				have = false
			}
			for i, o := range tt.ops {
				clk.Step(o.advance)
				switch o.do {
				case "allow":
					tk, got := b.Allow()
					if got != o.want {
						t.Fatalf("op %d: Allow = %v, want %v (state %v)", i, got, o.want, b.State())
					}
					if got {
						last, have = tk, true
					}
				case "success":
					report(true)
				case "failure":
					report(false)
				case "update":
					b.Update(o.threshold, o.open)
				case "state":
				default:
					t.Fatalf("op %d: unknown %q", i, o.do)
				}
				if got := b.State(); got != o.state {
					t.Fatalf("op %d (%s): state %v, want %v", i, o.do, got, o.state)
				}
			}
		})
	}
}

func TestStateString(t *testing.T) {
	tests := []struct {
		s    State
		want string
		num  int
	}{
		{Closed, "Closed", 0},
		{Open, "Open", 1},
		{HalfOpen, "HalfOpen", 2},
		{State(7), "State(7)", 7},
		{State(-1), "State(-1)", -1},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.s.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
			if int(tt.s) != tt.num {
				t.Fatalf("%s = %d, want %d: the gauge value changed", tt.want, int(tt.s), tt.num)
			}
		})
	}
}

// TestOneProbeUnderContention has many callers arrive at once after the open duration:
// exactly one may become the probe.
func TestOneProbeUnderContention(t *testing.T) {
	tests := []struct {
		name       string
		goroutines int
		trip       bool
		want       int64
	}{
		{name: "open breaker admits one probe among 2", goroutines: 2, trip: true, want: 1},
		{name: "open breaker admits one probe among 100", goroutines: 100, trip: true, want: 1},
		{name: "closed breaker admits all 100", goroutines: 100, trip: false, want: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			b := New(1, time.Second, clk)
			if tt.trip {
				tk, _ := b.Allow()
				b.Failure(tk)
				clk.Step(time.Second)
			}
			var admitted atomic.Int64
			var start, done sync.WaitGroup
			start.Add(1)
			for g := 0; g < tt.goroutines; g++ {
				done.Add(1)
				go func() {
					defer done.Done()
					start.Wait()
					for i := 0; i < 5; i++ {
						if _, ok := b.Allow(); ok {
							admitted.Add(1)
							break
						}
					}
				}()
			}
			start.Done()
			done.Wait()
			if got := admitted.Load(); got != tt.want {
				t.Fatalf("admitted %d, want %d", got, tt.want)
			}
		})
	}
}

// TestConcurrentReports exercises every method at once under -race; the breaker must
// end in a state its last report allows.
func TestConcurrentReports(t *testing.T) {
	clk := newFakeClock()
	b := New(3, time.Millisecond, clk)
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				clk.Step(time.Microsecond * 100)
				if tk, ok := b.Allow(); ok {
					b.Report(tk, (g+i)%3 == 0)
				}
				if i%50 == 0 {
					b.Update(3, time.Millisecond)
				}
				_ = b.State()
			}
		}()
	}
	wg.Wait()
	clk.Step(time.Second)
	tk, _ := b.Allow() // becomes the probe if not closed
	b.Success(tk)      // a probe's success closes; a success while closed keeps it closed
	if s := b.State(); s != Closed {
		t.Fatalf("state %v after a successful probe", s)
	}
}

// TestReportsCountOnlyInTheirGeneration: results of calls admitted before a change of
// state (slow answers from earlier traffic) must not decide the half-open probe.
func TestReportsCountOnlyInTheirGeneration(t *testing.T) {
	tests := []struct {
		name      string
		staleOK   bool // the stale call's result
		wantState State
	}{
		{name: "a slow success from before the trip does not close a half-open breaker", staleOK: true, wantState: HalfOpen},
		{name: "a slow failure from before the trip does not re-open a half-open breaker", staleOK: false, wantState: HalfOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			b := New(1, time.Second, clk)
			stale, _ := b.Allow() // a call admitted while closed, still running
			tk, _ := b.Allow()
			b.Failure(tk) // trips
			clk.Step(time.Second)
			probe, ok := b.Allow()
			if !ok || b.State() != HalfOpen {
				t.Fatalf("no half-open probe: ok %v, state %v", ok, b.State())
			}
			b.Report(stale, tt.staleOK)
			if got := b.State(); got != tt.wantState {
				t.Fatalf("state %v after a stale report, want %v", got, tt.wantState)
			}
			b.Success(probe)
			if got := b.State(); got != Closed {
				t.Fatalf("state %v after the probe's success, want Closed", got)
			}
			b.Failure(stale) // and once closed again, the stale ticket is still nobody's
			if got := b.State(); got != Closed {
				t.Fatalf("state %v after a stale failure while closed, want Closed", got)
			}
		})
	}
}
