package gateway

import (
	"net/http"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/limitstore"
)

// sharedLimits is the VoiceAgent's limit store as configured: the store (nil when it
// could not be opened, openErr says why), the configuration it was opened from and the
// budgets it enforces.
type sharedLimits struct {
	store    *limitstore.Store
	openErr  string
	conf     gw.LimitStore
	budgets  budget.Limits
	failOpen bool
}

// health is the store's state for the operator's LimitStoreReady condition.
func (s *sharedLimits) health() limitstore.Health {
	if s.store == nil {
		return limitstore.Health{Reason: limitstore.ReasonError, Message: s.openErr}
	}
	return s.store.Health()
}

// applyLimitStore opens, reconfigures or closes the limit store for cfg. Limits
// changed while calls run apply to the next admission; a changed address, credentials
// or TLS open a new connection, and the old one settles what it holds before closing.
func (g *Gateway) applyLimitStore(cfg *gw.Config) {
	old := g.shared.Load()
	ls := cfg.LimitStore
	if ls == nil {
		if old != nil {
			g.shared.Store(nil)
			g.closeShared(old)
		}
		return
	}
	block := cfg.Budget == nil || cfg.Budget.OnExceeded != "AlertOnly"
	next := &sharedLimits{conf: *ls, budgets: globalBudgets(ls.Global, cfg.Budget), failOpen: ls.FailurePolicy != gw.LimitStoreFailClosed}
	if old != nil && old.store != nil && reflect.DeepEqual(old.conf.Redis, ls.Redis) && old.conf.KeyPrefix == ls.KeyPrefix {
		next.store = old.store
		next.store.SetLimits(ls.Global, block)
		g.shared.Store(next)
		return
	}
	st, err := limitstore.Open(ls, g.opts.Clock)
	if err != nil {
		next.openErr = err.Error()
		g.log.Error("limit store not opened; its failure policy applies", "error", err.Error(), "failurePolicy", ls.FailurePolicy)
	} else {
		st.SetLimits(ls.Global, block)
		next.store = st
	}
	g.shared.Store(next)
	if old != nil {
		g.closeShared(old)
	}
}

// closeShared closes a store a reload replaced once the calls it admitted have ended
// (it renews their leases and delivers their releases and charges until then), or
// after drainLimit at most.
func (g *Gateway) closeShared(s *sharedLimits) {
	if s.store == nil {
		return
	}
	go func() {
		deadline := g.opts.Clock.Now().Add(drainLimit)
		for !s.store.Idle() && g.opts.Clock.Now().Before(deadline) {
			time.Sleep(time.Second) // polling interval
		}
		_ = s.store.Close()
	}()
}

// drainLimit bounds how long a replaced limit store is kept for the calls it admitted:
// the longest realtime session.
const drainLimit = 2 * time.Hour

func globalBudgets(l gw.GlobalLimits, b *gw.Budget) budget.Limits {
	out := budget.Limits{Block: true}
	if b != nil {
		out.AlertAtPercent, out.Block = b.AlertAtPercent, b.OnExceeded != "AlertOnly"
	}
	out.Daily, _ = budget.ParseMicros(l.Daily) // validated by gatewayconfig.Parse
	out.Monthly, _ = budget.ParseMicros(l.Monthly)
	return out
}

// admitShared admits a call through the limit store. decided is false when there is
// no store, or it cannot answer under FailOpen: the caller applies this replica's
// shares instead. Otherwise ok says whether the call may go on (the refusal is
// written), with its lease released when the call ends.
func (c *call) admitShared(w http.ResponseWriter, kind limitstore.Kind) (decided, ok bool) {
	g := c.g
	s := g.shared.Load()
	if s == nil {
		return false, false
	}
	if s.store == nil {
		return c.storeUnavailable(w, s)
	}
	d, err := s.store.Admit(c.ctx, kind)
	g.metrics.limitStoreUp.WithLabelValues("redis").Set(boolGauge(err == nil))
	if err != nil {
		return c.storeUnavailable(w, s)
	}
	if kind != limitstore.Request && kind != limitstore.IntegrationSession {
		bd := budget.Decide(d.DaySpent, d.MonthSpent, s.budgets, g.opts.Clock.Now())
		g.setBudgetGauges(bd)
		if bd.Alert || bd.Exceeded {
			c.rec.BudgetAlert = true
		}
		if d.Code == limitstore.RefusedBudget {
			reason, resetAt := bd.Reason, bd.ResetAt
			if reason == "" { // the store's day ended between its answer and now
				reason, resetAt = "the VoiceAgent's budget is spent", g.opts.Clock.Now().Add(time.Minute)
			}
			c.deny(w, http.StatusTooManyRequests, "budget", reason, resetAt.Sub(g.opts.Clock.Now()))
			return true, false
		}
	}
	session := kind == limitstore.Session || kind == limitstore.PricedSession || kind == limitstore.IntegrationSession
	switch d.Code {
	case limitstore.Admitted:
		if d.Lease != nil {
			lease, st := d.Lease, s.store
			c.release = func() { st.Release(lease) }
		}
		return true, true
	case limitstore.RefusedRequests:
		c.deny(w, http.StatusTooManyRequests, "rate_limit", msgRateLimit, d.RetryAfter)
	case limitstore.RefusedTokens:
		c.deny(w, http.StatusTooManyRequests, "tokens_per_minute", msgTokensPerMinute, d.RetryAfter)
	case limitstore.RefusedSessionRate:
		c.deny(w, http.StatusTooManyRequests, "sessions_per_minute", msgSessionsPerMinute, d.RetryAfter)
	case limitstore.RefusedLeases:
		if session {
			c.deny(w, http.StatusTooManyRequests, "concurrent_sessions", msgConcurrentSessions, d.RetryAfter)
		} else {
			c.deny(w, http.StatusTooManyRequests, "concurrency", msgConcurrency, d.RetryAfter)
		}
	default:
		c.deny(w, http.StatusServiceUnavailable, "limit_store", "the VoiceAgent's limit store gave an answer the gateway does not know; retry later", time.Second)
	}
	return true, false
}

// storeUnavailable applies the failure policy: FailOpen falls back to this replica's
// shares, FailClosed refuses with 503.
func (c *call) storeUnavailable(w http.ResponseWriter, s *sharedLimits) (decided, ok bool) {
	g := c.g
	g.metrics.limitStoreUp.WithLabelValues("redis").Set(0)
	if s.failOpen {
		g.metrics.limitStoreFallbacks.WithLabelValues(gw.LimitStoreFailOpen).Inc()
		g.limitStoreFallbackCalls.Add(1)
		return false, false
	}
	g.metrics.limitStoreFallbacks.WithLabelValues(gw.LimitStoreFailClosed).Inc()
	c.deny(w, http.StatusServiceUnavailable, "limit_store_unavailable",
		"the VoiceAgent's limit store cannot be reached and spec.limitStore.failurePolicy is FailClosed; retry later", time.Second)
	return true, false
}

// chargeShared puts what a call used on the store's VoiceAgent-wide totals.
func (g *Gateway) chargeShared(tokens int64, cost budget.Micros) {
	if s := g.shared.Load(); s != nil && s.store != nil {
		s.store.Charge(tokens, cost)
	}
}

// budgetNow decides on spend between admissions (a session's running charges): on the
// store's VoiceAgent-wide totals while it answers, else on this replica's share.
func (g *Gateway) budgetNow() budget.Decision {
	if s := g.shared.Load(); s != nil && s.store != nil && s.store.Health().Ready {
		day, month := s.store.Spent()
		return budget.Decide(day, month, s.budgets, g.opts.Clock.Now())
	}
	return g.budget.Check()
}

// limitStoreReport is the store's state in the spend report, for the operator.
type limitStoreReport struct {
	State         string `json:"state"` // Ready or Unavailable
	Reason        string `json:"reason"`
	Message       string `json:"message"`
	FallbackCalls int64  `json:"fallbackCalls"`
}

func (g *Gateway) limitStoreReport() *limitStoreReport {
	s := g.shared.Load()
	if s == nil {
		return nil
	}
	h := s.health()
	r := &limitStoreReport{State: "Unavailable", Reason: h.Reason, Message: h.Message, FallbackCalls: g.limitStoreFallbackCalls.Load()}
	if h.Ready {
		r.State = "Ready"
	}
	return r
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func newLimitStoreMetrics() (*prometheus.GaugeVec, *prometheus.CounterVec) {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "voiceagent_gateway_limit_store_up", Help: "1 while the limit store answers admissions, 0 while its failure policy applies; no series without a store.",
		}, []string{"store"}), prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voiceagent_gateway_limit_store_fallbacks_total", Help: "Calls admitted under the failure policy because the limit store could not answer: FailOpen on this replica's shares, FailClosed refused.",
		}, []string{"policy"})
}
