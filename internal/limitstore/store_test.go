package limitstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/testredis"
)

func config(srv *testredis.Server, g gw.GlobalLimits) *gw.LimitStore {
	return &gw.LimitStore{
		Redis:         gw.RedisStore{Address: srv.Addr(), TLS: gw.RedisTLS{Disabled: true}, Timeout: gw.Duration{Duration: time.Second}},
		FailurePolicy: gw.LimitStoreFailOpen,
		KeyPrefix:     "voiceagent:{test/" + time.Now().Format("150405.000000") + "}:",
		Global:        g,
	}
}

// gateways opens n stores on one configuration, as n gateway replicas would.
func gateways(t *testing.T, n int, ls *gw.LimitStore, leaseTTL time.Duration) []*Store {
	t.Helper()
	var out []*Store
	for range n {
		s, err := open(ls, nil, leaseTTL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		out = append(out, s)
	}
	return out
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Three gateways under more than ten times the VoiceAgent's request rate admit what
// the one bucket allows over the window, within 1%.
func TestRequestBucketIsGlobalAcrossGateways(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	const rate, burst = 100.0, 20
	gws := gateways(t, 3, config(srv, gw.GlobalLimits{RequestsPerSecond: rate, Burst: burst}), LeaseTTL)
	var admitted, offered atomic.Int64
	start := time.Now()
	stopAt := start.Add(3 * time.Second)
	var wg sync.WaitGroup
	for _, g := range gws {
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(stopAt) {
					d, err := g.Admit(context.Background(), Request)
					if err != nil {
						t.Errorf("admit: %v", err)
						return
					}
					offered.Add(1)
					if d.Code == Admitted {
						admitted.Add(1)
					} else if d.Code != RefusedRequests || d.RetryAfter <= 0 {
						t.Errorf("refusal %d with retry %s, want %d with a retry", d.Code, d.RetryAfter, RefusedRequests)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	allowance := burst + rate*elapsed
	got := float64(admitted.Load())
	t.Logf("offered %d, admitted %.0f, allowance %.1f over %.2fs", offered.Load(), got, allowance, elapsed)
	if float64(offered.Load()) < 10*allowance {
		t.Fatalf("offered %d calls: not ten times the allowance %.0f; the test did not overload the bucket", offered.Load(), allowance)
	}
	if got > allowance*1.01 || got < allowance*0.99 {
		t.Fatalf("admitted %.0f, want within 1%% of %.1f", got, allowance)
	}
}

// Concurrent calls across three gateways never exceed the limit, and slots come back
// when calls end.
func TestConcurrentCallsNeverExceedTheLimit(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	const limit = 5
	gws := gateways(t, 3, config(srv, gw.GlobalLimits{MaxConcurrentCalls: limit}), LeaseTTL)
	var inFlight, peak, served atomic.Int64
	stopAt := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for _, g := range gws {
		for range 6 {
			wg.Go(func() {
				for time.Now().Before(stopAt) {
					d, err := g.Admit(context.Background(), Call)
					if err != nil {
						t.Errorf("admit: %v", err)
						return
					}
					if d.Code != Admitted {
						continue
					}
					n := inFlight.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					time.Sleep(2 * time.Millisecond) // the call's work
					inFlight.Add(-1)
					served.Add(1)
					g.Release(d.Lease)
				}
			})
		}
	}
	wg.Wait()
	t.Logf("peak %d in flight, %d calls served", peak.Load(), served.Load())
	if peak.Load() > limit {
		t.Fatalf("peak %d calls in flight across the gateways, limit %d", peak.Load(), limit)
	}
	if peak.Load() < limit || served.Load() < 100 {
		t.Fatalf("peak %d, served %d: slots did not come back", peak.Load(), served.Load())
	}
}

// Calls admitted one at a time on each of three gateways overshoot the daily budget by
// at most one call's cost per gateway.
func TestBudgetOvershootAtMostOneCallPerGateway(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	const cost = budget.Micros(70_000) // 0.07 USD
	gws := gateways(t, 3, config(srv, gw.GlobalLimits{Daily: "1.00"}), LeaseTTL)
	for _, g := range gws {
		g.SetLimits(gw.GlobalLimits{Daily: "1.00"}, true)
	}
	var charged atomic.Int64
	var wg sync.WaitGroup
	for _, g := range gws {
		wg.Go(func() {
			for {
				d, err := g.Admit(context.Background(), Call)
				if err != nil {
					t.Errorf("admit: %v", err)
					return
				}
				if d.Code == RefusedBudget {
					return
				}
				if d.Code != Admitted {
					t.Errorf("refusal %d, want budget", d.Code)
					return
				}
				g.Charge(100, cost)
				charged.Add(int64(cost))
			}
		})
	}
	wg.Wait()
	for _, g := range gws {
		_ = g.Close()
	}
	total, err := srv.Client().HGet(context.Background(), gws[0].keyList(gws[0].currentPeriod())[5], "=total").Int64()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("charged %s USD, store total %s USD", budget.Micros(charged.Load()), budget.Micros(total))
	if total != charged.Load() {
		t.Fatalf("store holds %d micros, the gateways charged %d", total, charged.Load())
	}
	if total < 1_000_000 || total > 1_000_000+3*int64(cost) {
		t.Fatalf("spent %s USD against a 1.00 budget: overshoot beyond one call (0.07) per gateway", budget.Micros(total))
	}
}

// A call's charge rides on the gateway's next admission: about one round trip per call.
func TestOneRoundTripPerCall(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	g := gateways(t, 1, config(srv, gw.GlobalLimits{RequestsPerSecond: 1e6, Burst: 1000, TokensPerMinute: 1e9, MaxConcurrentCalls: 10, Daily: "1000"}), LeaseTTL)[0]
	const calls = 200
	for range calls {
		d, err := g.Admit(context.Background(), Call)
		if err != nil || d.Code != Admitted {
			t.Fatalf("admit: %v %d", err, d.Code)
		}
		g.Charge(50, 10)
		g.Release(d.Lease)
	}
	perCall := float64(g.RoundTrips()) / calls
	t.Logf("%d round trips for %d calls", g.RoundTrips(), calls)
	if perCall > 1.05 {
		t.Fatalf("%.2f round trips per call, want about 1", perCall)
	}
	waitFor(t, "the last call settled", 5*time.Second, func() bool { d, _ := g.Spent(); return d == calls*10 })
}

// The leases of a gateway that died come back once they expire; those of a live
// gateway's long call are renewed.
func TestLeasesOfADeadGatewayExpire(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	ls := config(srv, gw.GlobalLimits{MaxConcurrentSessions: 1})
	gws := gateways(t, 2, ls, 600*time.Millisecond)
	d, err := gws[0].Admit(context.Background(), Session)
	if err != nil || d.Code != Admitted {
		t.Fatalf("first session: %v %d", err, d.Code)
	}
	// Held across several lease lifetimes by a live gateway: still counted.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if d2, err := gws[1].Admit(context.Background(), Session); err != nil || d2.Code != RefusedLeases {
			t.Fatalf("second session while the first runs: %v %d, want refused", err, d2.Code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = gws[0].Close() // dies: its lease is neither released nor renewed
	waitFor(t, "the dead gateway's slot back", 3*time.Second, func() bool {
		d2, err := gws[1].Admit(context.Background(), Session)
		return err == nil && d2.Code == Admitted
	})
}

// New limits apply to the next admission.
func TestLimitsChangedWhileCallsRun(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	g := gateways(t, 1, config(srv, gw.GlobalLimits{MaxConcurrentCalls: 1}), LeaseTTL)[0]
	first, err := g.Admit(context.Background(), Call)
	if err != nil || first.Code != Admitted {
		t.Fatal(err, first.Code)
	}
	if d, _ := g.Admit(context.Background(), Call); d.Code != RefusedLeases {
		t.Fatalf("second call at limit 1: %d", d.Code)
	}
	g.SetLimits(gw.GlobalLimits{MaxConcurrentCalls: 2}, true)
	if d, _ := g.Admit(context.Background(), Call); d.Code != Admitted {
		t.Fatalf("second call at limit 2: %d", d.Code)
	}
	g.SetLimits(gw.GlobalLimits{MaxConcurrentCalls: 2, Daily: "0.000001"}, true)
	g.Charge(0, 1)
	g.Release(first.Lease)
	if d, _ := g.Admit(context.Background(), Call); d.Code != RefusedBudget {
		t.Fatalf("call after the new budget is spent: %d, want budget", d.Code)
	}
}

// A store that restarts empty is refilled with the live gateways' spend, and the
// gateway's health follows it down and back up.
func TestStoreRestartKeepsSpendAndRecovers(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	gws := gateways(t, 2, config(srv, gw.GlobalLimits{Daily: "10"}), LeaseTTL)
	for i, g := range gws {
		if _, err := g.Admit(context.Background(), Call); err != nil {
			t.Fatal(err)
		}
		g.Charge(0, budget.Micros(100_000*(i+1)))
	}
	waitFor(t, "spend settled", 5*time.Second, func() bool {
		_, err := gws[0].Admit(context.Background(), Request)
		d, _ := gws[0].Spent()
		return err == nil && d == 300_000
	})

	srv.Stop()
	_, err := gws[0].Admit(context.Background(), Call)
	if err == nil {
		t.Fatal("admit with the store down: no error")
	}
	if h := gws[0].Health(); h.Ready || h.Reason != ReasonUnreachable {
		t.Fatalf("health with the store down: %+v", h)
	}
	gws[1].Charge(0, 50_000) // spent while the store is down: kept
	if _, err := gws[0].Admit(context.Background(), Call); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("admit right after a failure: %v, want ErrUnavailable without a round trip", err)
	}

	srv.Resume() // empty: no persistence
	waitFor(t, "health back", 5*time.Second, func() bool { return gws[0].Health().Ready && gws[1].Health().Ready })
	waitFor(t, "spend refilled", 5*time.Second, func() bool {
		d, err := gws[0].Admit(context.Background(), Call)
		return err == nil && d.DaySpent == 350_000
	})
}

func TestHealthNamesTheProblem(t *testing.T) {
	plain := testredis.Start(t, testredis.Options{Password: "right"})
	withTLS := testredis.Start(t, testredis.Options{TLS: true})
	dir := t.TempDir()
	wrong := filepath.Join(dir, "wrong")
	right := filepath.Join(dir, "right")
	otherCA := filepath.Join(dir, "other-ca.crt")
	for p, v := range map[string]string{wrong: "wrong\n", right: "right\n"} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	other := testredis.Start(t, testredis.Options{TLS: true}) // a CA that did not sign withTLS's certificate
	b, _ := os.ReadFile(other.CAFile)
	_ = os.WriteFile(otherCA, b, 0o600)

	cases := []struct {
		name   string
		redis  gw.RedisStore
		reason string
	}{
		{"wrong password", gw.RedisStore{Address: plain.Addr(), PasswordFile: wrong, TLS: gw.RedisTLS{Disabled: true}}, ReasonAuthenticationFailed},
		{"no password", gw.RedisStore{Address: plain.Addr(), TLS: gw.RedisTLS{Disabled: true}}, ReasonAuthenticationFailed},
		{"right password", gw.RedisStore{Address: plain.Addr(), PasswordFile: right, TLS: gw.RedisTLS{Disabled: true}}, ReasonConnected},
		{"TLS to a plain server", gw.RedisStore{Address: plain.Addr(), PasswordFile: right}, ReasonTLSFailed},
		{"untrusted certificate", gw.RedisStore{Address: withTLS.Addr(), TLS: gw.RedisTLS{CAFile: otherCA}}, ReasonTLSFailed},
		{"trusted certificate", gw.RedisStore{Address: withTLS.Addr(), TLS: gw.RedisTLS{CAFile: withTLS.CAFile}}, ReasonConnected},
		{"nothing listening", gw.RedisStore{Address: "127.0.0.1:1", TLS: gw.RedisTLS{Disabled: true}}, ReasonUnreachable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.redis.Timeout = gw.Duration{Duration: time.Second}
			s, err := Open(&gw.LimitStore{Redis: tc.redis, FailurePolicy: gw.LimitStoreFailClosed, KeyPrefix: "voiceagent:{t/h}:"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Admit(context.Background(), Request)
			// The probe (once a second, off the calls' path) tells a store that answers
			// without TLS from one that is down.
			deadline := time.Now().Add(15 * time.Second)
			h := s.Health()
			for h.Reason != tc.reason && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				h = s.Health()
			}
			if h.Reason != tc.reason {
				t.Fatalf("reason %q (%s; admit error %v), want %q", h.Reason, h.Message, err, tc.reason)
			}
			if (err == nil) != (tc.reason == ReasonConnected) || h.Ready != (tc.reason == ReasonConnected) {
				t.Fatalf("admit error %v, health %+v", err, h)
			}
			if h.Message == "" {
				t.Fatal("no message")
			}
		})
	}
}

// An agent that hangs up mid-admission does not make the store count as down (which
// would switch every call to the failure policy for a second).
func TestHangingUpDoesNotTakeTheStoreDown(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	g := gateways(t, 1, config(srv, gw.GlobalLimits{RequestsPerSecond: 1000, Burst: 100}), LeaseTTL)[0]
	if _, err := g.Admit(context.Background(), Request); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Admit(ctx, Request); err != nil {
		t.Fatalf("admit for a caller that hung up: %v", err)
	}
	if h := g.Health(); !h.Ready {
		t.Fatalf("health after a hang-up: %+v", h)
	}
	if _, err := g.Admit(context.Background(), Request); err != nil {
		t.Fatalf("next admission: %v", err)
	}
}

// A reply lost to a timeout after the script ran does not keep its lease: the slot
// comes back at once, not after the lease's 30 s.
func TestLeaseOfALostReplyComesBack(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	ls := config(srv, gw.GlobalLimits{MaxConcurrentSessions: 1})
	ls.Redis.Timeout = gw.Duration{Duration: 100 * time.Millisecond}
	g := gateways(t, 1, ls, LeaseTTL)[0]
	admin := srv.Client()
	defer func() { _ = admin.Close() }()
	if err := admin.Do(context.Background(), "CLIENT", "PAUSE", "400", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(context.Background(), Session); err == nil {
		t.Fatal("admit while the store is paused past the timeout: no error")
	}
	// The script runs once the pause ends; the gateway gives its lease back.
	waitFor(t, "the slot of the lost reply back", 5*time.Second, func() bool {
		d, err := g.Admit(context.Background(), Session)
		if err == nil && d.Code == Admitted {
			g.Release(d.Lease)
			return true
		}
		return false
	})
}

// A gateway charging steadily without admitting (a realtime session streaming usage)
// still settles within the settle delay: the others see its spend.
func TestSteadyChargesSettleWithoutAdmissions(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	gws := gateways(t, 2, config(srv, gw.GlobalLimits{Daily: "100"}), LeaseTTL)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				gws[0].Charge(10, 1)
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	start := time.Now()
	waitFor(t, "the other gateway sees the spend", 2*time.Second, func() bool {
		d, err := gws[1].Admit(context.Background(), Call)
		return err == nil && d.DaySpent > 0
	})
	t.Logf("seen after %s", time.Since(start))
}
