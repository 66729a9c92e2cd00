package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var testKey = []byte("queue-test-key-0123456789")

// openLog opens a Log in dir with fast retries and an HMAC signer; checkpoints come
// from CheckpointEvery and Close only, so tests are deterministic.
func openLog(t *testing.T, dir string, mutate func(*Options), sinks ...NamedSink) *Log {
	t.Helper()
	opts := Options{
		Dir: dir, Pod: "support-line-0", Signer: NewHMACSigner(writeFile(t, t.TempDir(), "key", testKey)),
		CheckpointEvery: 5, CheckpointInterval: -1, BackoffBase: time.Millisecond, BackoffMax: 20 * time.Millisecond,
		Logger: quietLogger(),
	}
	if mutate != nil {
		mutate(&opts)
	}
	l, err := Open(opts, sinks)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func appendN(t *testing.T, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := l.Append([]byte(fmt.Sprintf(`{"requestId":"req-%d"}`, i)), false); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

func shutdown(t *testing.T, l *Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func verifyStream(t *testing.T, stream []byte, wantRecords uint64) *Report {
	t.Helper()
	rep, err := Verify(bytes.NewReader(stream), VerifyOptions{HMACKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records != wantRecords {
		t.Fatalf("want %d records verified, got %s", wantRecords, rep)
	}
	return rep
}

func TestRestartContinuesTheChain(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink{}
	l := openLog(t, dir, nil, NamedSink{"mem", sink})
	appendN(t, l, 0, 12)
	inst := l.Instance()
	shutdown(t, l)

	l = openLog(t, dir, func(o *Options) { o.Pod = "renamed-pod" }, NamedSink{"mem", sink})
	if l.Instance() != inst {
		t.Fatalf("instance %q after restart, want %q", l.Instance(), inst)
	}
	appendN(t, l, 12, 4)
	shutdown(t, l)
	rep := verifyStream(t, sink.stream(), 16)
	if len(rep.Instances) != 1 || rep.Duplicates != 0 {
		t.Fatalf("%+v", rep)
	}
}

// The process dies with records queued for a sink that is down, in the middle of
// writing a record; the next process drains the backlog and the chain stays intact.
// In both durability modes: a record is in the queue file before Append returns, so a
// killed process (not a crashed machine) loses none, fsynced or not.
func TestKilledWithBacklogDrainsAfterReopen(t *testing.T) {
	for _, tt := range []struct {
		name         string
		syncInterval time.Duration
	}{{"fsync before answer", 0}, {"write before answer, background fsync", 5 * time.Millisecond}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sink := &memSink{}
			sink.down.Store(true)
			mode := func(o *Options) { o.SyncInterval = tt.syncInterval }
			l := openLog(t, dir, mode, NamedSink{"mem", sink})
			appendN(t, l, 0, 23)
			waitFor(t, "delivery attempts while the sink is down", func() bool { return sink.calls.Load() >= 2 })
			l.stop() // killed: no final checkpoint, nothing drained
			segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.jsonl"))
			f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.WriteString(`{"seq":28,"instance":"torn`) // a write cut short by the kill
			f.Close()

			sink.down.Store(false)
			l = openLog(t, dir, mode, NamedSink{"mem", sink})
			if st := l.Status(); st.Seq != 27 { // 23 records and 4 checkpoints survived
				t.Fatalf("head after reopen: %+v", st)
			}
			appendN(t, l, 23, 3)
			shutdown(t, l)
			verifyStream(t, dedupBySeq(t, sink.stream()), 26)
		})
	}
}

// The receiver got a batch but the process died before the cursor was saved: the
// batch comes again, and a receiver that deduplicates by seq has every record once.
func TestRedeliveryAfterLostCursor(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink{}
	l := openLog(t, dir, nil, NamedSink{"mem", sink})
	appendN(t, l, 0, 8)
	waitFor(t, "delivery", func() bool { return l.Status().Sinks[0].Backlog == 0 })
	l.stop()
	if err := os.Remove(filepath.Join(dir, "cursor-mem")); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, nil, NamedSink{"mem", sink})
	appendN(t, l, 8, 2)
	shutdown(t, l)
	rep, _ := Verify(bytes.NewReader(sink.stream()), VerifyOptions{HMACKey: testKey})
	if !rep.OK || rep.Duplicates == 0 {
		t.Fatalf("redelivered stream: %s", rep)
	}
	verifyStream(t, dedupBySeq(t, sink.stream()), 10)
}

func TestQueueBoundsReservationsAndDrops(t *testing.T) {
	tests := []struct {
		name string
		opts func(*Options)
	}{
		{"records", func(o *Options) { o.MaxRecords = 6 }},
		{"bytes", func(o *Options) { o.MaxBytes = 6 * 250 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			sink.down.Store(true)
			m := NewMetrics(nil)
			l := openLog(t, t.TempDir(), func(o *Options) { tt.opts(o); o.CheckpointEvery = 1000; o.Metrics = m }, NamedSink{"mem", sink})
			defer l.Close()
			// Two calls admitted up front keep their room however full it gets.
			for i := 0; i < 2; i++ {
				if err := l.Reserve(); err != nil {
					t.Fatal(err)
				}
			}
			var kept int
			for i := 0; i < 10; i++ {
				_, err := l.Append([]byte(`{"requestId":"req-0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}`), false)
				if errors.Is(err, ErrQueueFull) {
					break
				} else if err != nil {
					t.Fatal(err)
				}
				kept++
			}
			if kept == 0 || kept > 4 {
				t.Fatalf("kept %d unreserved records next to 2 reservations", kept)
			}
			if !l.Full() || l.Reserve() == nil {
				t.Fatal("a full queue takes a reservation")
			}
			for i := 0; i < 2; i++ {
				if _, err := l.Append([]byte(`{"reserved":true}`), true); err != nil {
					t.Fatalf("reserved append refused: %v", err)
				}
			}
			_, _ = l.Append([]byte(`{"x":1}`), false)
			dropped := uint64(2) // the one that found it full above, and this one
			if st := l.Status(); st.Dropped != dropped || counterValue(m.Dropped) != float64(dropped) {
				t.Fatalf("dropped %d (metric %v), want %d", st.Dropped, counterValue(m.Dropped), dropped)
			}

			sink.down.Store(false)
			waitFor(t, "the backlog to drain", func() bool { return !l.Full() })
			if _, err := l.Append([]byte(`{"after":"recovery"}`), false); err != nil {
				t.Fatal(err)
			}
			if err := l.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "delivery", func() bool { return l.Status().Sinks[0].Backlog == 0 })
			rep := verifyStream(t, sink.stream(), uint64(kept+3))
			if rep.Dropped != dropped {
				t.Fatalf("the stream declares %d dropped, want %d", rep.Dropped, dropped)
			}
			// Each drop is declared by the next record kept after it.
			for _, want := range []string{`"droppedBefore":1,"payload":{"reserved":true}`, `"droppedBefore":1,"payload":{"after":"recovery"}`} {
				if !bytes.Contains(sink.stream(), []byte(want)) {
					t.Fatalf("no record with %s:\n%s", want, sink.stream())
				}
			}
		})
	}
}

func TestSegmentsRotateAndDeliveredOnesAreDeleted(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink{}
	l := openLog(t, dir, func(o *Options) { o.SegmentBytes = 1024; o.BatchRecords = 3 }, NamedSink{"mem", sink})
	appendN(t, l, 0, 60)
	waitFor(t, "delivery", func() bool { return l.Status().Sinks[0].Backlog == 0 })
	if segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.jsonl")); len(segs) != 1 {
		t.Fatalf("%d segments left after everything was delivered", len(segs))
	}
	shutdown(t, l)
	verifyStream(t, sink.stream(), 60)
}

func TestConcurrentAppendsShareFsyncs(t *testing.T) {
	sink := &memSink{}
	l := openLog(t, t.TempDir(), func(o *Options) { o.CheckpointEvery = 64 }, NamedSink{"mem", sink})
	var wg sync.WaitGroup
	seqs := make(chan uint64, 400)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				seq, err := l.Append([]byte(`{"g":1}`), false)
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Fatalf("seq %d returned twice", s)
		}
		seen[s] = true
	}
	shutdown(t, l)
	verifyStream(t, sink.stream(), 400)
}

func TestQueueDirHasOneOwner(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, nil)
	defer l.Close()
	if _, err := Open(Options{Dir: dir, Logger: quietLogger()}, nil); err == nil {
		t.Fatal("a second Log opened the same queue")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// BenchmarkAppend is one call record chained and fsynced; in parallel, appenders share
// fsyncs (group commit).
func BenchmarkAppend(b *testing.B) {
	payload := []byte(`{"voiceAgent":"support-line","namespace":"callcenter","requestId":"0123456789abcdef01234567","route":"model","target":"openai/gpt-4o-mini","upstream":"openai/gpt-4o-mini","decision":"allowed","status":200,"latencyMs":412.5,"attempts":1,"inputTokens":1000,"outputTokens":500,"costUSD":"0.000450"}`)
	for _, par := range []bool{false, true} {
		b.Run(map[bool]string{false: "serial", true: "parallel"}[par], func(b *testing.B) {
			l, err := Open(Options{Dir: b.TempDir(), Pod: "bench", CheckpointInterval: -1, Logger: quietLogger()}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ReportAllocs()
			if !par {
				for i := 0; i < b.N; i++ {
					if _, err := l.Append(payload, false); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := l.Append(payload, false); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func TestOpenAfterDamage(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr string // "" means the chain goes on
	}{
		{"instance file lost", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "instance")); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"a record in the middle overwritten", func(t *testing.T, dir string) {
			segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.jsonl"))
			data, _ := os.ReadFile(segs[0])
			lines := bytes.SplitAfter(data, []byte("\n"))
			lines[2] = append(bytes.Repeat([]byte("x"), len(lines[2])-1), '\n')
			if err := os.WriteFile(segs[0], bytes.Join(lines, nil), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "damaged after seq 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sink := &memSink{}
			l := openLog(t, dir, nil, NamedSink{"mem", sink})
			appendN(t, l, 0, 6)
			inst := l.Instance()
			l.stop()
			tt.damage(t, dir)
			opts := Options{Dir: dir, Pod: "other", Signer: NewHMACSigner(writeFile(t, t.TempDir(), "key", testKey)),
				CheckpointEvery: 5, CheckpointInterval: -1, Logger: quietLogger()}
			l, err := Open(opts, []NamedSink{{"mem", sink}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Instance() != inst {
				t.Fatalf("instance %q, want %q", l.Instance(), inst)
			}
			appendN(t, l, 6, 2)
			shutdown(t, l)
			verifyStream(t, dedupBySeq(t, sink.stream()), 8)
		})
	}
}

// The cursor is saved at most once per CursorSaveInterval while delivery runs, and
// once more when it stops, so that a busy queue does not rewrite it per batch.
func TestCursorSavedAtMostOncePerIntervalAndAtStop(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink{}
	l := openLog(t, dir, func(o *Options) { o.CursorSaveInterval = time.Hour }, NamedSink{"mem", sink})
	cursor := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "cursor-mem"))
		if err != nil {
			return "none"
		}
		return strings.TrimSpace(string(b))
	}
	appendN(t, l, 0, 3)
	waitFor(t, "the first delivery", func() bool { return l.Status().Sinks[0].Backlog == 0 })
	first := cursor()
	if first == "none" {
		t.Fatal("the first batch left no cursor")
	}
	for i := range 4 {
		appendN(t, l, 3+i, 1)
		waitFor(t, "delivery", func() bool { return l.Status().Sinks[0].Backlog == 0 })
	}
	if got := cursor(); got != first {
		t.Fatalf("cursor rewritten to %s within the interval (first save %s)", got, first)
	}
	head := l.Status().Seq
	shutdown(t, l)
	if got, want := cursor(), strconv.FormatUint(l.Status().Seq, 10); got != want || head == 0 {
		t.Fatalf("cursor after shutdown %s, want the head %s", got, want)
	}
}

func TestPayloadsAreKeptOnOneLine(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, nil)
	for _, tc := range []struct {
		payload, want string // want "": refused
	}{
		{`{"reason":"rate limit: retry later","n":1}`, `{"reason":"rate limit: retry later","n":1}`},
		{"{\n  \"a\": 1,\r\n  \"b\": \"x y\"\n}", `{"a":1,"b":"x y"}`},
		{`{"a": 1}`, `{"a": 1}`},
		{`{not json`, ""},
		{"", ""},
	} {
		_, err := l.Append([]byte(tc.payload), false)
		if tc.want == "" {
			if err == nil {
				t.Errorf("payload %q accepted", tc.payload)
			}
			continue
		}
		if err != nil {
			t.Fatalf("payload %q: %v", tc.payload, err)
		}
		data, _ := os.ReadFile(l.segs[len(l.segs)-1].path)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if last := lines[len(lines)-1]; !strings.HasSuffix(last, `,"payload":`+tc.want+`}`) {
			t.Errorf("payload %q stored as %s", tc.payload, last)
		}
	}
	shutdown(t, l)
}

// The durability mode changes on a running log: to an fsync per record (everything
// written is on disk when Append returns), and back to the background group fsync.
func TestSyncIntervalChangesWhileRunning(t *testing.T) {
	l := openLog(t, t.TempDir(), func(o *Options) { o.SyncInterval = time.Hour })
	synced := func() (uint64, uint64) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.synced, l.head
	}
	appendN(t, l, 0, 3)
	if s, h := synced(); s >= h {
		t.Fatalf("with an hourly group fsync, %d of %d records already synced", s, h)
	}
	if err := l.SetSyncInterval(0); err != nil {
		t.Fatal(err)
	}
	if s, h := synced(); s != h {
		t.Fatalf("after switching to an fsync per record: %d of %d synced", s, h)
	}
	appendN(t, l, 3, 2)
	if s, h := synced(); s != h {
		t.Fatalf("Append in fsync mode returned with %d of %d synced", s, h)
	}
	waitFor(t, "the group fsync goroutine to end", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return !l.syncLoopRunning || l.opts.SyncInterval > 0
	})
	if err := l.SetSyncInterval(5 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 5, 2)
	waitFor(t, "the background group fsync", func() bool { s, h := synced(); return s == h })
	shutdown(t, l)
}

// The group fsync keeps its promise (a record is on disk within about one interval)
// whether records keep coming or arrive after a quiet spell, and a quiet log stops
// ticking: a sidecar with no calls should not wake up every 10 ms.
func TestGroupFsyncSleepsWhileNothingIsWritten(t *testing.T) {
	const interval = 5 * time.Millisecond
	l := openLog(t, t.TempDir(), func(o *Options) { o.SyncInterval = interval })
	state := func() (synced, head uint64, ticks int) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.synced, l.head, l.syncTicks
	}
	allSynced := func() bool { s, h, _ := state(); return s == h }

	appendN(t, l, 0, 3)
	waitFor(t, "the group fsync of a first batch", allSynced)
	// Watch a quiet window of 40 intervals: a ticker would tick about 40 times; the loop
	// may tick once or twice more to find there is nothing to do, then sleeps.
	_, _, before := state()
	time.Sleep(40 * interval) // the window observed, not a synchronisation
	if _, _, after := state(); after-before > 3 {
		t.Fatalf("the sync loop ticked %d times in a quiet window of 40 intervals", after-before)
	}

	appendN(t, l, 3, 2) // after the quiet spell: the loop wakes and syncs
	waitFor(t, "the group fsync after a quiet spell", allSynced)
	for i := 5; i < 50; i++ { // records keep coming: every one is synced
		appendN(t, l, i, 1)
	}
	waitFor(t, "the group fsync of a steady stream", allSynced)
	shutdown(t, l)
}
