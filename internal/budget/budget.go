// Package budget owns a gateway replica's spend accounting: how many US dollars its
// model calls have cost in the current UTC day and UTC month, whether the configured
// budgets still allow another call, and the state file that makes this survive a
// restart. Money is exact (integer micro-dollars); prices come from the configuration,
// token counts from the upstream's response.
package budget

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/voiceagent-dev/voiceagent-operator/internal/durable"
)

// Limits are the budgets in force. A zero Daily or Monthly means no such budget.
type Limits struct {
	Daily, Monthly Micros
	// AlertAtPercent raises Decision.Alert once spend reaches this share of a budget;
	// 0 means alert only when a budget is exceeded.
	AlertAtPercent int
	// Block refuses calls once a budget is spent (OnExceeded: Block); false only flags
	// them (OnExceeded: AlertOnly).
	Block bool
	// CarriedDaily (in the UTC day CarriedDay) and CarriedMonthly (in CarriedMonth)
	// were spent by gateway pods that are gone: they count against the budgets as if
	// spent here, in their period only.
	CarriedDay, CarriedMonth     string
	CarriedDaily, CarriedMonthly Micros
}

// Decision is the answer to "may the next call spend money?".
type Decision struct {
	Allowed bool
	// Exceeded is true when spend has reached a budget, whether or not that blocks.
	Exceeded bool
	// Alert is true when spend has reached AlertAtPercent of a budget, or exceeded one.
	Alert bool
	// Reason explains a refusal, an exceedance or an alert, e.g. "daily budget of
	// 50.000000 USD spent"; empty when there is nothing to say.
	Reason string
	// ResetAt is when the exceeded budgets reset (next UTC midnight, or the first of
	// next month when the monthly budget is spent); zero when none is exceeded.
	ResetAt time.Time

	DailySpent, MonthlySpent Micros
}

// stateVersion is written into the state file; a file from a future version is refused
// rather than misread.
const stateVersion = 1

// state is the persisted form. Day and Month name the UTC period the amounts belong to.
type state struct {
	Version int    `json:"version"`
	Day     string `json:"day"`   // 2006-01-02
	Month   string `json:"month"` // 2006-01
	Daily   Micros `json:"dailyMicros"`
	Monthly Micros `json:"monthlyMicros"`
}

const (
	dayLayout   = "2006-01-02"
	monthLayout = "2006-01"
)

// Tracker accumulates spend and persists it. It is safe for concurrent use.
type Tracker struct {
	// mu guards the counters; calls take it on their way through, so it is never held
	// across file I/O. saveMu orders the writers of the state file, each of which
	// snapshots the counters after taking it, so the file never goes back to an older
	// total. Lock order: saveMu, then mu.
	mu     sync.Mutex
	saveMu sync.Mutex
	path   string
	clock  clock.PassiveClock
	limits Limits
	st     state
	// writeBehind defers persisting to Flush; dirty says there is something to flush.
	writeBehind bool
	dirty       bool
	// writeFile persists the state file (writeFileAtomic; tests hold it to prove that
	// calls do not wait for the disk).
	writeFile func(path string, data []byte) error
}

// EnableWriteBehind makes Add update memory only and leaves persisting to Flush, which
// the gateway calls every second and on shutdown. An fsync per call would serialise
// every model call behind the disk; a crash then loses at most the last interval of
// spend, a graceful restart nothing.
func (t *Tracker) EnableWriteBehind() {
	t.mu.Lock()
	t.writeBehind = true
	t.mu.Unlock()
}

// Flush persists the totals if they changed since the last write. Calls are not held
// up by the write: the fsync of a state file takes milliseconds on many disks.
func (t *Tracker) Flush() error {
	t.saveMu.Lock()
	defer t.saveMu.Unlock()
	t.mu.Lock()
	if !t.dirty {
		t.mu.Unlock()
		return nil
	}
	st := t.st
	t.dirty = false
	t.mu.Unlock()
	if err := t.save(st); err != nil {
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
		return err
	}
	return nil
}

// Open loads the spend recorded in the state file at path. A missing file means
// nothing has been spent yet; an unreadable or corrupt one is an error naming the path,
// because starting from zero would silently hand out the budget a second time. The
// directory must exist; the file is created by the first Add.
func Open(path string, clk clock.PassiveClock) (*Tracker, error) {
	if clk == nil {
		clk = clock.RealClock{}
	}
	t := &Tracker{path: path, clock: clk, st: state{Version: stateVersion}, writeFile: writeFileAtomic}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("read budget state %s: %w", path, err)
	}
	st, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("budget state %s is corrupt: %w", path, err)
	}
	t.st = st
	return t, nil
}

func decodeState(data []byte) (state, error) {
	var st state
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return state{}, err
	}
	if dec.More() {
		return state{}, errors.New("trailing data after the JSON object")
	}
	if st.Version != stateVersion {
		return state{}, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	if _, err := time.Parse(dayLayout, st.Day); err != nil {
		return state{}, fmt.Errorf("day: %w", err)
	}
	if _, err := time.Parse(monthLayout, st.Month); err != nil {
		return state{}, fmt.Errorf("month: %w", err)
	}
	if !strings.HasPrefix(st.Day, st.Month) {
		return state{}, fmt.Errorf("day %s is not in month %s", st.Day, st.Month)
	}
	if st.Daily < 0 || st.Monthly < 0 {
		return state{}, errors.New("negative spend")
	}
	return st, nil
}

// SetLimits puts new budgets in force, for a configuration reload. Spend is kept.
func (t *Tracker) SetLimits(l Limits) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.limits = l
}

// roll starts a new period when the clock has passed into one. Periods only move
// forward: a clock stepping back across midnight keeps counting into the later period
// instead of resetting again when it steps forward, which would grant a second budget.
// The caller holds mu.
func (t *Tracker) roll() time.Time {
	now := t.clock.Now().UTC()
	if month := now.Format(monthLayout); month > t.st.Month {
		t.st.Month, t.st.Monthly = month, 0
	}
	if day := now.Format(dayLayout); day > t.st.Day {
		t.st.Day, t.st.Daily = day, 0
	}
	return now
}

// Spent reports the spend of the current UTC day and month.
func (t *Tracker) Spent() (day, month Micros) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roll()
	return t.st.Daily, t.st.Monthly
}

// Check decides whether a call may spend money now. Spend reaching a budget exactly
// counts as spent: the budget is a ceiling, and the next call would pass it.
func (t *Tracker) Check() Decision {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.roll()
	daily, monthly := t.st.Daily, t.st.Monthly
	if t.limits.CarriedDay == t.st.Day {
		daily = addSat(daily, t.limits.CarriedDaily)
	}
	if t.limits.CarriedMonth == t.st.Month {
		monthly = addSat(monthly, t.limits.CarriedMonthly)
	}
	d := Decide(daily, monthly, t.limits, now)
	d.DailySpent, d.MonthlySpent = t.st.Daily, t.st.Monthly
	return d
}

// Decide is the decision for spend daily and monthly (everything that counts against
// the budgets, carried spend included) under l at now. The limit store decides with
// it too, on the VoiceAgent-wide totals.
func Decide(daily, monthly Micros, l Limits, now time.Time) Decision {
	now = now.UTC()
	d := Decision{Allowed: true, DailySpent: daily, MonthlySpent: monthly}
	var exceeded, alerts []string
	if reached(daily, l.Daily, 100) {
		exceeded = append(exceeded, fmt.Sprintf("daily budget of %s USD spent", l.Daily))
		d.ResetAt = nextDay(now)
	} else if reached(daily, l.Daily, l.AlertAtPercent) {
		alerts = append(alerts, alertText("daily", daily, l.Daily, l.AlertAtPercent))
	}
	if reached(monthly, l.Monthly, 100) {
		exceeded = append(exceeded, fmt.Sprintf("monthly budget of %s USD spent", l.Monthly))
		d.ResetAt = nextMonth(now) // later than nextDay: the refusal lasts until then
	} else if reached(monthly, l.Monthly, l.AlertAtPercent) {
		alerts = append(alerts, alertText("monthly", monthly, l.Monthly, l.AlertAtPercent))
	}
	d.Exceeded = len(exceeded) > 0
	d.Alert = d.Exceeded || len(alerts) > 0
	d.Allowed = !(d.Exceeded && l.Block)
	d.Reason = strings.Join(append(exceeded, alerts...), "; ")
	return d
}

func alertText(period string, spent, limit Micros, percent int) string {
	return fmt.Sprintf("%s spend of %s USD reached %d%% of the %s USD budget", period, spent, percent, limit)
}

// reached reports spent >= limit × percent / 100 for a set limit and a positive
// percent, compared in 128 bits so that no product can overflow.
func reached(spent, limit Micros, percent int) bool {
	if limit <= 0 || percent <= 0 || spent < 0 {
		return false
	}
	sh, sl := bits.Mul64(uint64(spent), 100)
	lh, ll := bits.Mul64(uint64(limit), uint64(percent))
	return sh > lh || (sh == lh && sl >= ll)
}

func nextDay(now time.Time) time.Time {
	y, m, d := now.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}

func nextMonth(now time.Time) time.Time {
	y, m, _ := now.Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
}

// Add records the cost of a call and, unless write-behind is on, persists the new
// totals before returning. The spend counts in memory even when persisting fails (the
// error says so): the money is spent either way, and forgetting it would under-count.
func (t *Tracker) Add(cost Micros) error {
	if cost < 0 {
		return fmt.Errorf("add spend: negative cost %s", cost)
	}
	t.mu.Lock()
	t.roll()
	if cost == 0 {
		t.mu.Unlock()
		return nil
	}
	t.st.Daily = addSat(t.st.Daily, cost)
	t.st.Monthly = addSat(t.st.Monthly, cost)
	t.dirty = true
	writeBehind := t.writeBehind
	t.mu.Unlock()
	if writeBehind {
		return nil
	}
	if err := t.Flush(); err != nil {
		return fmt.Errorf("add spend of %s USD: %w", cost, err)
	}
	return nil
}

// save writes the state atomically: a reader (or a restart after a crash) sees the old
// file or the new one, never a torn one.
func (t *Tracker) save(st state) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode budget state: %w", err)
	}
	if err := t.writeFile(t.path, append(data, '\n')); err != nil {
		return fmt.Errorf("save budget state %s: %w", t.path, err)
	}
	return nil
}

// writeFileAtomic replaces the state file whole (internal/durable). A directory that
// refuses fsync is no error here: the worst outcome is that a crash right now restores
// the previous total, one call's cost behind.
func writeFileAtomic(path string, data []byte) error {
	err := durable.WriteFile(path, data, 0o600)
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Op == "sync" && pe.Path == filepath.Dir(path) {
		return nil
	}
	return err
}
