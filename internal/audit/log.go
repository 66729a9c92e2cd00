package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// ErrQueueFull is returned by Append and Reserve when the queue holds its maximum of
// undelivered records or bytes.
var ErrQueueFull = errors.New("audit queue is full")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("audit log is closed")

// Options configure a Log. Zero values mean the defaults.
type Options struct {
	// Dir is the queue directory, owned by one Log at a time (an flock enforces it).
	Dir string
	// Pod names this writer; the instance is "<Pod>/<boot id>". Default: the host name.
	Pod string
	// MaxBytes and MaxRecords bound what is queued and not yet delivered to every sink.
	MaxBytes   int64 // default 256 MiB
	MaxRecords int   // default 1,000,000
	// SegmentBytes is the size at which a new segment file is started; default 16 MiB.
	SegmentBytes int64
	// Signer signs checkpoints; nil writes them with alg "none".
	Signer Signer
	// CheckpointEvery seals the chain every so many records; default 1000.
	CheckpointEvery int
	// CheckpointInterval seals unsealed records after this long; default 30s, <0 off.
	CheckpointInterval time.Duration
	// SyncInterval chooses when a record is fsynced. Zero: before Append returns, so an
	// answered call's record survives a crash of the machine. Positive: Append returns
	// once the record is written to the queue file (it survives a crash or kill of the
	// process: the kernel holds it), and a group fsync runs every SyncInterval, so a
	// machine crash can lose at most that much. Delivery reads only fsynced records.
	SyncInterval time.Duration
	// Delivery batches and retries.
	BatchRecords int           // default 500
	BatchBytes   int           // default 1 MiB
	BackoffBase  time.Duration // default 200ms
	BackoffMax   time.Duration // default 30s
	// CursorSaveInterval: a sink's cursor (what it has taken) is saved to disk at most
	// this often, and when delivery stops; default 1s. A crash can then only repeat up
	// to this much delivery, never skip any.
	CursorSaveInterval time.Duration
	Clock              clock.PassiveClock
	Logger             *slog.Logger
	Metrics            *Metrics
}

func (o *Options) defaults() {
	if o.Pod == "" {
		o.Pod, _ = os.Hostname()
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 256 << 20
	}
	if o.MaxRecords <= 0 {
		o.MaxRecords = 1_000_000
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 16 << 20
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 1000
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = 30 * time.Second
	}
	if o.BatchRecords <= 0 {
		o.BatchRecords = 500
	}
	if o.CursorSaveInterval <= 0 {
		o.CursorSaveInterval = time.Second
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 1 << 20
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 200 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
}

// Log is the hash chain and its durable queue.
type Log struct {
	opts     Options
	dir      string
	instance string
	lockFile *os.File
	m        *Metrics
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu              sync.Mutex
	syncLoopRunning bool // the group fsync goroutine of SyncInterval mode runs
	// syncIntervalChanged wakes that goroutine when SetSyncInterval changes the mode.
	syncIntervalChanged chan struct{}
	// unsynced tells an idle syncLoop that a record waits for the group fsync.
	unsynced        chan struct{}
	syncTicks       int        // the syncLoop's ticks, for tests
	cond            *sync.Cond // signalled when a group fsync ends
	f               *os.File   // the active (last) segment
	segs            []*segment
	head            uint64 // last written seq
	prev            [sha256.Size]byte
	synced          uint64 // last seq known to be on disk
	syncing         bool
	err             error // sticky: the queue can no longer be trusted to write
	closed          bool
	sinceCheckpoint int
	reserved        int
	droppedPending  uint64 // dropped since the last kept record
	dropped         uint64
	floor           uint64   // every sink has acknowledged records <= floor
	sizes           []uint32 // line sizes of records floor+1 .. head
	bytes           int64    // sum of sizes
	lastSize        int64    // of the last record: what the next one probably needs
	buf             []byte
	sinks           map[string]*deliverer
}

// Open opens (or creates) the queue in opts.Dir, continues the chain found there and
// starts delivering to sinks.
func Open(opts Options, sinks []NamedSink) (*Log, error) {
	opts.defaults()
	if opts.Dir == "" {
		return nil, errors.New("audit queue directory is not set")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit queue: %w", err)
	}
	l := &Log{opts: opts, dir: opts.Dir, m: opts.Metrics, sinks: map[string]*deliverer{},
		syncIntervalChanged: make(chan struct{}, 1), unsynced: make(chan struct{}, 1)}
	l.cond = sync.NewCond(&l.mu)
	lock, err := os.OpenFile(filepath.Join(l.dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit queue: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("audit queue %s is in use: another gateway holds its lock", l.dir)
	}
	l.lockFile = lock
	if err := l.load(); err != nil {
		l.release()
		return nil, err
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	cursors := map[string]uint64{}
	for _, s := range sinks {
		cursors[s.Name] = l.readCursor(s.Name)
	}
	l.floor = l.head
	for _, c := range cursors {
		l.floor = min(l.floor, c)
	}
	l.sizes = l.sizes[l.floor-l.firstRetained()+1:]
	for _, n := range l.sizes {
		l.bytes += int64(n)
	}
	l.mu.Lock()
	for _, s := range sinks {
		l.startLocked(s, cursors[s.Name])
	}
	l.mu.Unlock()
	if opts.CheckpointInterval > 0 {
		l.wg.Add(1)
		go l.checkpointLoop()
	}
	if opts.SyncInterval > 0 {
		l.mu.Lock()
		l.startSyncLoopLocked()
		l.mu.Unlock()
	}
	return l, nil
}

// Instance is this writer's chain identity.
func (l *Log) Instance() string { return l.instance }

// Reserve holds room for one record that will be appended later with reserved=true,
// so that a call admitted while the queue had room always gets its record kept.
func (l *Log) Reserve() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return ErrClosed
	case l.err != nil:
		return l.err
	case l.fullLocked():
		return ErrQueueFull
	}
	l.reserved++
	return nil
}

// Release gives back a reservation that will not be used.
func (l *Log) Release() {
	l.mu.Lock()
	l.reserved--
	l.mu.Unlock()
}

// Full reports whether an unreserved record would be refused now.
func (l *Log) Full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed || l.err != nil || l.fullLocked()
}

// fullLocked: the next record, if it is about as long as the last, does not fit.
func (l *Log) fullLocked() bool {
	return int(l.head-l.floor)+l.reserved >= l.opts.MaxRecords || l.bytes+l.lastSize > l.opts.MaxBytes
}

// Append chains payload (a JSON value) as the next record and returns once it is on
// disk. With reserved, it uses a reservation from Reserve and is not refused for want
// of room. A record that cannot be kept is counted as dropped, and the count goes into
// the next record that is kept.
func (l *Log) Append(payload []byte, reserved bool) (uint64, error) {
	// A record is one line. Inside valid JSON a line break can only be whitespace
	// between tokens; a payload with one is compacted, any other is taken as it is.
	if !json.Valid(payload) {
		return 0, errors.New("audit payload is not JSON")
	}
	if bytes.ContainsAny(payload, "\r\n") {
		var compact bytes.Buffer
		_ = json.Compact(&compact, payload) // valid: cannot fail
		payload = compact.Bytes()
	}
	return l.append(payload, reserved)
}

// AppendValue is Append of json.Marshal(v). json.Marshal's output is valid and compact
// (it compacts what MarshalJSON methods return too), so the second scan Append makes
// of a payload it did not build is skipped: it was 4% of a proxied call's CPU.
func (l *Log) AppendValue(v any, reserved bool) (uint64, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		if reserved {
			l.Release()
		}
		return 0, fmt.Errorf("audit payload: %w", err)
	}
	return l.append(payload, reserved)
}

func (l *Log) append(payload []byte, reserved bool) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if reserved {
		l.reserved--
	}
	if l.closed || l.err != nil {
		l.dropLocked()
		if l.closed {
			return 0, ErrClosed
		}
		return 0, l.err
	}
	if err := l.prepareLocked(); err != nil {
		l.dropLocked()
		return 0, err
	}
	e := envelope{kind: KindRecord, time: l.opts.Clock.Now(), droppedBefore: l.droppedPending, payload: payload}
	line := l.encodeLocked(&e)
	if !reserved && (int(l.head-l.floor)+l.reserved >= l.opts.MaxRecords || l.bytes+int64(len(line)) > l.opts.MaxBytes) {
		l.dropLocked()
		return 0, ErrQueueFull
	}
	if err := l.writeLocked(line); err != nil {
		l.dropLocked()
		return 0, err
	}
	l.droppedPending = 0
	seq := l.head
	if l.sinceCheckpoint++; l.sinceCheckpoint >= l.opts.CheckpointEvery {
		l.checkpointLocked()
	}
	if l.opts.SyncInterval <= 0 {
		if err := l.syncLocked(l.head); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

// Drain waits until every sink has acknowledged everything appended so far, or ctx ends.
func (l *Log) Drain(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		l.mu.Lock()
		done := l.floor >= l.head
		l.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Shutdown seals the chain, gives the sinks until ctx ends to take the backlog, and
// closes. Whatever is still undelivered stays queued for the next Open.
func (l *Log) Shutdown(ctx context.Context) error {
	if err := l.Checkpoint(); errors.Is(err, ErrClosed) {
		return nil
	} else if err != nil {
		return err
	}
	if l.Drain(ctx) != nil {
		l.mu.Lock()
		left := l.head - l.floor
		l.mu.Unlock()
		l.opts.Logger.Warn("audit records left queued for the next start", "records", left)
	}
	return l.Close()
}

// Close seals the chain with a checkpoint and stops delivery. What is not delivered
// stays queued for the next Open.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.checkpointLocked()
	err := l.syncLocked(l.head)
	l.closed = true
	l.mu.Unlock()
	l.stop()
	return err
}

// stop ends the goroutines and releases the files, without a final checkpoint.
func (l *Log) stop() {
	l.cancel()
	l.mu.Lock()
	ds := make([]*deliverer, 0, len(l.sinks))
	for _, d := range l.sinks {
		ds = append(ds, d)
	}
	l.closed = true
	l.mu.Unlock()
	for _, d := range ds {
		<-d.done
	}
	l.wg.Wait()
	l.mu.Lock()
	for l.syncing {
		l.cond.Wait()
	}
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
	l.mu.Unlock()
	l.release()
}

func (l *Log) release() {
	if l.lockFile != nil {
		_ = syscall.Flock(int(l.lockFile.Fd()), syscall.LOCK_UN)
		_ = l.lockFile.Close()
		l.lockFile = nil
	}
}
