package budget

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func clockAt(t time.Time) *clocktesting.FakeClock { return clocktesting.NewFakeClock(t) }

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func usd(s string) Micros {
	m, err := ParseMicros(s)
	if err != nil {
		panic(err)
	}
	return m
}

func openTemp(t *testing.T, clk *clocktesting.FakeClock) (*Tracker, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "budget.json")
	tr, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	return tr, path
}

func TestCheck(t *testing.T) {
	const start = "2026-11-24T15:00:00Z"
	tests := []struct {
		name       string
		limits     Limits
		spend      []string
		wantAllow  bool
		wantExceed bool
		wantAlert  bool
		wantReason string // exact; "" means empty
		wantReset  string // RFC3339; "" means zero
	}{
		{
			name: "no budgets", limits: Limits{Block: true}, spend: []string{"1000000"},
			wantAllow: true,
		},
		{
			name: "below the alert threshold", limits: Limits{Daily: usd("50"), AlertAtPercent: 80, Block: true}, spend: []string{"39.999999"},
			wantAllow: true,
		},
		{
			name: "alert threshold reached", limits: Limits{Daily: usd("50"), AlertAtPercent: 80, Block: true}, spend: []string{"30", "10"},
			wantAllow: true, wantAlert: true,
			wantReason: "daily spend of 40.000000 USD reached 80% of the 50.000000 USD budget",
		},
		{
			name: "crossing the daily budget refuses", limits: Limits{Daily: usd("50"), AlertAtPercent: 80, Block: true}, spend: []string{"49.99", "0.30"},
			wantExceed: true, wantAlert: true,
			wantReason: "daily budget of 50.000000 USD spent", wantReset: "2026-11-25T00:00:00Z",
		},
		{
			name: "spend exactly at the budget refuses", limits: Limits{Daily: usd("0.006"), Block: true}, spend: []string{"0.002", "0.002", "0.002"},
			wantExceed: true, wantAlert: true,
			wantReason: "daily budget of 0.006000 USD spent", wantReset: "2026-11-25T00:00:00Z",
		},
		{
			name: "one micro below the budget allows", limits: Limits{Daily: usd("0.006"), Block: true}, spend: []string{"0.005999"},
			wantAllow: true,
		},
		{
			name: "AlertOnly allows and flags", limits: Limits{Daily: usd("0.001"), AlertAtPercent: 80, Block: false}, spend: []string{"0.002"},
			wantAllow: true, wantExceed: true, wantAlert: true,
			wantReason: "daily budget of 0.001000 USD spent", wantReset: "2026-11-25T00:00:00Z",
		},
		{
			name: "monthly budget spent refuses until next month", limits: Limits{Daily: usd("100"), Monthly: usd("10"), Block: true}, spend: []string{"10"},
			wantExceed: true, wantAlert: true,
			wantReason: "monthly budget of 10.000000 USD spent", wantReset: "2026-12-01T00:00:00Z",
		},
		{
			name: "both spent names both", limits: Limits{Daily: usd("5"), Monthly: usd("10"), Block: true}, spend: []string{"12"},
			wantExceed: true, wantAlert: true,
			wantReason: "daily budget of 5.000000 USD spent; monthly budget of 10.000000 USD spent", wantReset: "2026-12-01T00:00:00Z",
		},
		{
			name: "daily spent and monthly alerting", limits: Limits{Daily: usd("5"), Monthly: usd("10"), AlertAtPercent: 50, Block: true}, spend: []string{"6"},
			wantExceed: true, wantAlert: true,
			wantReason: "daily budget of 5.000000 USD spent; monthly spend of 6.000000 USD reached 50% of the 10.000000 USD budget", wantReset: "2026-11-25T00:00:00Z",
		},
		{
			name: "no alert percent alerts only when exceeded", limits: Limits{Daily: usd("50"), Block: true}, spend: []string{"49.999999"},
			wantAllow: true,
		},
		{
			name: "alert percent above 100 in AlertOnly", limits: Limits{Daily: usd("10"), AlertAtPercent: 150}, spend: []string{"15"},
			wantAllow: true, wantExceed: true, wantAlert: true,
			wantReason: "daily budget of 10.000000 USD spent", wantReset: "2026-11-25T00:00:00Z",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, _ := openTemp(t, clockAt(utc(start)))
			tr.SetLimits(tt.limits)
			var total Micros
			for _, s := range tt.spend {
				if err := tr.Add(usd(s)); err != nil {
					t.Fatal(err)
				}
				total += usd(s)
			}
			d := tr.Check()
			if d.Allowed != tt.wantAllow || d.Exceeded != tt.wantExceed || d.Alert != tt.wantAlert {
				t.Errorf("Allowed=%v Exceeded=%v Alert=%v, want %v %v %v", d.Allowed, d.Exceeded, d.Alert, tt.wantAllow, tt.wantExceed, tt.wantAlert)
			}
			if d.Reason != tt.wantReason {
				t.Errorf("Reason %q, want %q", d.Reason, tt.wantReason)
			}
			var wantReset time.Time
			if tt.wantReset != "" {
				wantReset = utc(tt.wantReset)
			}
			if !d.ResetAt.Equal(wantReset) {
				t.Errorf("ResetAt %v, want %v", d.ResetAt, wantReset)
			}
			if d.DailySpent != total || d.MonthlySpent != total {
				t.Errorf("spent %s/%s, want %s", d.DailySpent, d.MonthlySpent, total)
			}
		})
	}
}

func TestSetLimitsAppliesToExistingSpend(t *testing.T) {
	tr, _ := openTemp(t, clockAt(utc("2026-11-24T15:00:00Z")))
	tr.SetLimits(Limits{Daily: usd("10"), Block: true})
	if err := tr.Add(usd("8")); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		limits    Limits
		wantAllow bool
	}{
		{Limits{Daily: usd("10"), Block: true}, true},
		{Limits{Daily: usd("5"), Block: true}, false},
		{Limits{Daily: usd("5"), Block: false}, true},
		{Limits{}, true},
	}
	for i, s := range steps {
		tr.SetLimits(s.limits)
		if d := tr.Check(); d.Allowed != s.wantAllow {
			t.Fatalf("step %d: Allowed=%v, want %v (%+v)", i, d.Allowed, s.wantAllow, d)
		}
	}
}

func TestPeriods(t *testing.T) {
	est := time.FixedZone("EST", -5*3600)
	type step struct {
		at        time.Time
		add       string // "" adds nothing
		wantDay   string
		wantMonth string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "new UTC day resets daily, not monthly",
			steps: []step{
				{at: utc("2026-11-24T23:59:59Z"), add: "3", wantDay: "3", wantMonth: "3"},
				{at: utc("2026-11-25T00:00:00Z"), wantDay: "0", wantMonth: "3"},
				{at: utc("2026-11-25T00:00:01Z"), add: "2", wantDay: "2", wantMonth: "5"},
			},
		},
		{
			name: "new month resets both",
			steps: []step{
				{at: utc("2026-11-30T23:00:00Z"), add: "7", wantDay: "7", wantMonth: "7"},
				{at: utc("2026-12-01T00:00:00Z"), wantDay: "0", wantMonth: "0"},
			},
		},
		{
			name: "new year resets both",
			steps: []step{
				{at: utc("2026-12-31T12:00:00Z"), add: "1", wantDay: "1", wantMonth: "1"},
				{at: utc("2027-01-01T00:00:00Z"), add: "2", wantDay: "2", wantMonth: "2"},
			},
		},
		{
			name: "local midnight is not UTC midnight",
			steps: []step{
				{at: time.Date(2026, 11, 24, 20, 0, 0, 0, est), add: "1", wantDay: "1", wantMonth: "1"}, // 01:00Z on the 25th
				{at: time.Date(2026, 11, 25, 0, 30, 0, 0, est), add: "1", wantDay: "2", wantMonth: "2"}, // 05:30Z, same UTC day
				{at: time.Date(2026, 11, 25, 19, 0, 0, 0, est), wantDay: "0", wantMonth: "2"},           // 00:00Z on the 26th
			},
		},
		{
			name: "the UTC month, not the local one",
			steps: []step{
				{at: time.Date(2026, 11, 30, 18, 0, 0, 0, est), add: "4", wantDay: "4", wantMonth: "4"}, // 23:00Z on the 30th
				{at: time.Date(2026, 11, 30, 20, 0, 0, 0, est), wantDay: "0", wantMonth: "0"},           // 01:00Z on 1 December
			},
		},
		{
			name: "a clock stepping back across midnight does not grant a second budget",
			steps: []step{
				{at: utc("2026-11-24T23:59:00Z"), add: "5", wantDay: "5", wantMonth: "5"},
				{at: utc("2026-11-25T00:00:30Z"), add: "1", wantDay: "1", wantMonth: "6"},
				{at: utc("2026-11-24T23:59:50Z"), add: "1", wantDay: "2", wantMonth: "7"}, // counted into the 25th
				{at: utc("2026-11-25T00:01:00Z"), wantDay: "2", wantMonth: "7"},           // and not reset again
			},
		},
		{
			name: "a clock stepping back across the first of the month does not grant a second budget",
			steps: []step{
				{at: utc("2026-11-30T23:59:00Z"), add: "5", wantDay: "5", wantMonth: "5"},
				{at: utc("2026-12-01T00:00:30Z"), add: "1", wantDay: "1", wantMonth: "1"},
				{at: utc("2026-11-30T23:59:50Z"), add: "1", wantDay: "2", wantMonth: "2"}, // counted into December
				{at: utc("2026-12-01T00:01:00Z"), wantDay: "2", wantMonth: "2"},           // and not reset again
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clockAt(tt.steps[0].at)
			tr, _ := openTemp(t, clk)
			for i, s := range tt.steps {
				clk.SetTime(s.at)
				if s.add != "" {
					if err := tr.Add(usd(s.add)); err != nil {
						t.Fatal(err)
					}
				}
				day, month := tr.Spent()
				if day != usd(s.wantDay) || month != usd(s.wantMonth) {
					t.Fatalf("step %d at %v: spent %s/%s, want %s/%s", i, s.at, day, month, usd(s.wantDay), usd(s.wantMonth))
				}
			}
		})
	}
}

func TestRestartKeepsSpend(t *testing.T) {
	tests := []struct {
		name                string
		reopenAt            string
		wantDay, wantMonth  string
		wantAllowedAfterAdd bool
	}{
		{name: "same day", reopenAt: "2026-11-24T22:00:00Z", wantDay: "6", wantMonth: "6"},
		{name: "next day", reopenAt: "2026-11-25T09:00:00Z", wantDay: "0", wantMonth: "6", wantAllowedAfterAdd: true},
		{name: "next month", reopenAt: "2026-12-02T09:00:00Z", wantDay: "0", wantMonth: "0", wantAllowedAfterAdd: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clockAt(utc("2026-11-24T10:00:00Z"))
			tr, path := openTemp(t, clk)
			limits := Limits{Daily: usd("5"), Monthly: usd("100"), Block: true}
			tr.SetLimits(limits)
			for _, s := range []string{"2", "4"} {
				if err := tr.Add(usd(s)); err != nil {
					t.Fatal(err)
				}
			}
			clk.SetTime(utc(tt.reopenAt))
			again, err := Open(path, clk)
			if err != nil {
				t.Fatal(err)
			}
			again.SetLimits(limits)
			day, month := again.Spent()
			if day != usd(tt.wantDay) || month != usd(tt.wantMonth) {
				t.Fatalf("after restart spent %s/%s, want %s/%s", day, month, usd(tt.wantDay), usd(tt.wantMonth))
			}
			if d := again.Check(); d.Allowed != tt.wantAllowedAfterAdd {
				t.Fatalf("after restart Allowed=%v, want %v (%+v)", d.Allowed, tt.wantAllowedAfterAdd, d)
			}
		})
	}
}

func TestOpenMissingFileIsZeroSpend(t *testing.T) {
	clk := clockAt(utc("2026-11-24T10:00:00Z"))
	tr, path := openTemp(t, clk)
	if day, month := tr.Spent(); day != 0 || month != 0 {
		t.Fatalf("spent %s/%s on a fresh tracker", day, month)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("Open created the state file (stat: %v); it should wait for the first Add", err)
	}
}

func TestOpenRefusesCorruptState(t *testing.T) {
	tests := []struct {
		name     string
		contents string
		wantErr  string
	}{
		{"empty file", "", "EOF"},
		{"not JSON", "spent: lots", "invalid character"},
		{"truncated", `{"version":1,"day":"2026-11-24"`, "unexpected EOF"},
		{"future version", `{"version":2,"day":"2026-11-24","month":"2026-11","dailyMicros":1,"monthlyMicros":1}`, "version 2"},
		{"unknown field", `{"version":1,"day":"2026-11-24","month":"2026-11","dailyMicros":1,"monthlyMicros":1,"dollars":3}`, "unknown field"},
		{"bad day", `{"version":1,"day":"24.11.2026","month":"2026-11","dailyMicros":1,"monthlyMicros":1}`, "day"},
		{"missing month", `{"version":1,"day":"2026-11-24","dailyMicros":1,"monthlyMicros":1}`, "month"},
		{"day outside month", `{"version":1,"day":"2026-10-24","month":"2026-11","dailyMicros":1,"monthlyMicros":1}`, "not in month"},
		{"negative spend", `{"version":1,"day":"2026-11-24","month":"2026-11","dailyMicros":-1,"monthlyMicros":1}`, "negative"},
		{"fractional micros", `{"version":1,"day":"2026-11-24","month":"2026-11","dailyMicros":1.5,"monthlyMicros":1}`, "cannot unmarshal"},
		{"trailing data", `{"version":1,"day":"2026-11-24","month":"2026-11","dailyMicros":1,"monthlyMicros":1} {}`, "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "budget.json")
			if err := os.WriteFile(path, []byte(tt.contents), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, clockAt(utc("2026-11-24T10:00:00Z")))
			if err == nil {
				t.Fatal("Open accepted a corrupt state file")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not name %s and %q", err, path, tt.wantErr)
			}
		})
	}
}

func TestOpenUnreadableStateNamesPath(t *testing.T) {
	path := t.TempDir() // a directory cannot be read as a file
	_, err := Open(path, nil)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open(%s) error %v, want one naming the path", path, err)
	}
}

func TestAdd(t *testing.T) {
	tests := []struct {
		name       string
		dir        func(t *testing.T) string
		cost       Micros
		wantErr    string
		wantMemory Micros // spend counted in memory afterwards
		wantFile   bool
		afterOpen  func(t *testing.T, path string)
		// wantEntries is how many directory entries may remain: the state file, or
		// whatever afterOpen put in its place; never a temporary file.
		wantEntries int
	}{
		{name: "persists", dir: func(t *testing.T) string { return t.TempDir() }, cost: 1234, wantMemory: 1234, wantFile: true},
		{name: "zero cost writes nothing", dir: func(t *testing.T) string { return t.TempDir() }, cost: 0},
		{name: "negative cost refused", dir: func(t *testing.T) string { return t.TempDir() }, cost: -1, wantErr: "negative cost"},
		{
			name: "unwritable directory still counts the spend",
			dir:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") },
			cost: 99, wantErr: "save budget state", wantMemory: 99,
		},
		{
			name: "failed rename leaves no temporary file",
			dir:  func(t *testing.T) string { return t.TempDir() },
			// A non-empty directory where the state file should be: rename cannot replace it.
			afterOpen: func(t *testing.T, path string) {
				if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
					t.Fatal(err)
				}
			},
			cost: 7, wantErr: "save budget state", wantMemory: 7, wantEntries: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			path := filepath.Join(dir, "budget.json")
			tr, err := Open(path, clockAt(utc("2026-11-24T10:00:00Z")))
			if err != nil {
				t.Fatal(err)
			}
			if tt.afterOpen != nil {
				tt.afterOpen(t, path)
			}
			err = tr.Add(tt.cost)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Add: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Add error %v, want %q", err, tt.wantErr)
			}
			if day, month := tr.Spent(); day != tt.wantMemory || month != tt.wantMemory {
				t.Fatalf("spent %s/%s, want %s", day, month, tt.wantMemory)
			}
			data, readErr := os.ReadFile(path)
			if (readErr == nil) != tt.wantFile && tt.afterOpen == nil {
				t.Fatalf("state file present=%v, want %v", readErr == nil, tt.wantFile)
			}
			if tt.wantFile {
				var st state
				if err := json.Unmarshal(data, &st); err != nil || st.Daily != tt.cost || st.Monthly != tt.cost || st.Day != "2026-11-24" || st.Month != "2026-11" {
					t.Fatalf("state file %s (%v)", data, err)
				}
				if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
					t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
				}
			}
			want := tt.wantEntries
			if tt.wantFile {
				want = 1
			}
			if entries, _ := os.ReadDir(dir); len(entries) != want {
				t.Fatalf("directory holds %v, want %d entries: a temporary file was left behind", entries, want)
			}
		})
	}
}

func TestConcurrentAdd(t *testing.T) {
	const goroutines, perG, cost = 20, 5, Micros(1234)
	clk := clockAt(utc("2026-11-24T10:00:00Z"))
	tr, path := openTemp(t, clk)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*perG)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perG; i++ {
				errs <- tr.Add(cost)
				tr.Check()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := cost * goroutines * perG
	if day, month := tr.Spent(); day != want || month != want {
		t.Fatalf("spent %s/%s, want %s", day, month, want)
	}
	again, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	if day, _ := again.Spent(); day != want {
		t.Fatalf("persisted %s, want %s: a write went back to an older total", day, want)
	}
}

func TestWriteBehindPersistsOnFlushOnly(t *testing.T) {
	clk := clockAt(utc("2026-11-24T12:00:00Z"))
	tr, path := openTemp(t, clk)
	tr.EnableWriteBehind()
	if err := tr.Add(1_500_000); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("write-behind wrote before Flush: %v", err)
	}
	if err := tr.Flush(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	if day, month := again.Spent(); day != 1_500_000 || month != 1_500_000 {
		t.Errorf("after flush and reopen: day %s month %s", day, month)
	}
}

// writeBehindWithSlowFirstWrite opens a write-behind tracker whose first state file
// write signals writing and then waits for release; later writes go straight through.
func writeBehindWithSlowFirstWrite(t *testing.T, clk *clocktesting.FakeClock) (tr *Tracker, path string, writing <-chan struct{}, release chan<- struct{}) {
	tr, path = openTemp(t, clk)
	tr.EnableWriteBehind()
	started, done := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	tr.writeFile = func(path string, data []byte) error {
		if calls.Add(1) == 1 {
			close(started)
			<-done
		}
		return writeFileAtomic(path, data)
	}
	return tr, path, started, done
}

// A flush waits for the disk (an fsync and a rename); calls checking and adding spend
// meanwhile must not wait with it, and the flush in progress must not lose what they add.
func TestCallsDoNotWaitForAFlushInProgress(t *testing.T) {
	clk := clockAt(utc("2026-11-24T12:00:00Z"))
	tr, path, writing, release := writeBehindWithSlowFirstWrite(t, clk)
	if err := tr.Add(1_000_000); err != nil {
		t.Fatal(err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- tr.Flush() }()
	<-writing

	served := make(chan struct{})
	go func() {
		defer close(served)
		if d := tr.Check(); !d.Allowed {
			t.Errorf("check during flush: %+v", d)
		}
		if err := tr.Add(500_000); err != nil {
			t.Errorf("add during flush: %v", err)
		}
	}()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("Check and Add waited for the state file write")
	}
	close(release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(); err != nil { // the spend added during the first flush
		t.Fatal(err)
	}
	again, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	if day, _ := again.Spent(); day != 1_500_000 {
		t.Fatalf("persisted %s, want 1.5 USD: spend added during a flush was lost", day)
	}
}

// Two flushes at once: the one that snapshotted the older total must not be the last to
// write, or the file goes back to it (saveMu orders them).
func TestOverlappingFlushesNeverWriteAnOlderTotal(t *testing.T) {
	clk := clockAt(utc("2026-11-24T12:00:00Z"))
	// The first flush, holding the older total, is slow.
	tr, path, firstWriting, releaseFirst := writeBehindWithSlowFirstWrite(t, clk)
	if err := tr.Add(1_000_000); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- tr.Flush() }()
	<-firstWriting
	if err := tr.Add(2_000_000); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- tr.Flush() }()
	// Give the second flush the chance to overtake (it must not be able to), then let
	// the first one finish.
	select {
	case err := <-second:
		second <- err
	case <-time.After(100 * time.Millisecond): // the window observed, not a synchronisation
	}
	close(releaseFirst)
	for _, c := range []chan error{first, second} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	again, err := Open(path, clk)
	if err != nil {
		t.Fatal(err)
	}
	if day, _ := again.Spent(); day != 3_000_000 {
		t.Fatalf("the file holds %s, want 3 USD: an older total was written last", day)
	}
}

// TestCarriedSpendCountsInItsPeriodOnly: spend carried from gateway pods that are gone
// counts against the budgets as if spent here, in its own UTC day and month only.
func TestCarriedSpendCountsInItsPeriodOnly(t *testing.T) {
	clk := clockAt(utc("2026-11-24T15:00:00Z"))
	tr, _ := openTemp(t, clk)
	if err := tr.Add(usd("3")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		limits    Limits
		wantAllow bool
	}{
		{"no carried spend: 3 of 5", Limits{Daily: usd("5"), Block: true}, true},
		{"2 carried today: 5 of 5", Limits{Daily: usd("5"), Block: true, CarriedDay: "2026-11-24", CarriedDaily: usd("2")}, false},
		{"2 carried from yesterday: not today's", Limits{Daily: usd("5"), Block: true, CarriedDay: "2026-11-23", CarriedDaily: usd("2")}, true},
		{"97 carried this month: 100 of 100", Limits{Monthly: usd("100"), Block: true, CarriedMonth: "2026-11", CarriedMonthly: usd("97")}, false},
		{"97 carried last month", Limits{Monthly: usd("100"), Block: true, CarriedMonth: "2026-10", CarriedMonthly: usd("97")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr.SetLimits(tt.limits)
			d := tr.Check()
			if d.Allowed != tt.wantAllow {
				t.Fatalf("Allowed=%v, want %v (%+v)", d.Allowed, tt.wantAllow, d)
			}
			if d.DailySpent != usd("3") {
				t.Errorf("DailySpent %s: the replica's own spend, without what it carries", d.DailySpent)
			}
		})
	}
	// A new day: today's carried spend no longer counts.
	tr.SetLimits(Limits{Daily: usd("5"), Block: true, CarriedDay: "2026-11-24", CarriedDaily: usd("5")})
	if tr.Check().Allowed {
		t.Fatal("5 carried today against a budget of 5: want refused")
	}
	clk.SetTime(utc("2026-11-25T03:00:00Z"))
	if !tr.Check().Allowed {
		t.Error("the next day, yesterday's carried spend still counts")
	}
}
