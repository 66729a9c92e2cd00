package gateway

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// SpendReport is what a gateway tells the operator of its spend (GET /spend on the
// admin port): the UTC day and month it counts, and this replica's spend and tokens in
// them. The operator sums the replicas into the VoiceAgent's status.spend.
type SpendReport struct {
	Day         string `json:"day"`   // 2006-01-02
	Month       string `json:"month"` // 2006-01
	DayMicros   int64  `json:"dayMicros"`
	MonthMicros int64  `json:"monthMicros"`
	DayTokens   int64  `json:"dayTokens"`
	MonthTokens int64  `json:"monthTokens"`
	// LimitStore is the limit store's state as this gateway sees it; absent without one.
	LimitStore *limitStoreReport `json:"limitStore,omitempty"`
}

// tokenCounter counts this process's tokens in the current UTC day and month. Spend
// itself is the budget tracker's (persisted); tokens are for the report only and start
// again with the process.
type tokenCounter struct {
	mu           sync.Mutex
	day, month   string
	dayN, monthN int64
}

func (t *tokenCounter) add(now time.Time, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rollLocked(now)
	t.dayN += n
	t.monthN += n
}

func (t *tokenCounter) rollLocked(now time.Time) {
	day, month := now.UTC().Format(time.DateOnly), now.UTC().Format("2006-01")
	if month != t.month {
		t.month, t.monthN = month, 0
	}
	if day != t.day {
		t.day, t.dayN = day, 0
	}
}

func (t *tokenCounter) read(now time.Time) (day, month string, dayN, monthN int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rollLocked(now)
	return t.day, t.month, t.dayN, t.monthN
}

func (g *Gateway) spendReport() SpendReport {
	day, month, dayTokens, monthTokens := g.tokenCount.read(g.opts.Clock.Now())
	daySpent, monthSpent := g.budget.Spent()
	return SpendReport{Day: day, Month: month, DayMicros: int64(daySpent), MonthMicros: int64(monthSpent),
		DayTokens: dayTokens, MonthTokens: monthTokens, LimitStore: g.limitStoreReport()}
}

func (g *Gateway) serveSpend(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(g.spendReport())
}
