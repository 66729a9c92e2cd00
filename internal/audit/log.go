package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/durable"
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
	Now                func() time.Time
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
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
}

// segment is one file of consecutive records.
type segment struct {
	path        string
	first, last uint64 // seqs in the file (last = first-1 while empty)
	size        int64  // bytes written
	synced      int64  // bytes known to be on disk
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

// SetSyncInterval changes the durability mode of a running log (Options.SyncInterval),
// so that a new configuration takes effect without a restart. Switching to 0 fsyncs
// what is written so far before it returns: from then on every answered call's record
// is on disk.
func (l *Log) SetSyncInterval(d time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.opts.SyncInterval = d
	select { // a running loop takes the new interval, or ends
	case l.syncIntervalChanged <- struct{}{}:
	default:
	}
	if d <= 0 {
		return l.syncLocked(l.head)
	}
	l.startSyncLoopLocked()
	return nil
}

func (l *Log) startSyncLoopLocked() {
	if l.syncLoopRunning {
		return
	}
	l.syncLoopRunning = true
	l.wg.Add(1)
	go l.syncLoop(l.opts.SyncInterval)
}

// Instance is this writer's chain identity.
func (l *Log) Instance() string { return l.instance }

// firstRetained is the seq of the oldest record on disk (head+1 when there is none).
func (l *Log) firstRetained() uint64 {
	if len(l.segs) == 0 {
		return l.head + 1
	}
	return l.segs[0].first
}

// load reads the instance identity and the segments, cutting a torn last line.
func (l *Log) load() error {
	names, err := filepath.Glob(filepath.Join(l.dir, "seg-*.jsonl"))
	if err != nil {
		return err
	}
	inst, err := l.loadInstance(names)
	if err != nil {
		return err
	}
	l.instance = inst
	type named struct {
		first uint64
		path  string
	}
	var files []named
	for _, n := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(n), "seg-"), ".jsonl"), 10, 64)
		if err != nil || first == 0 {
			return fmt.Errorf("audit queue: unexpected file %s", filepath.Base(n))
		}
		files = append(files, named{first, n})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].first < files[j].first })
	for i, fl := range files {
		newest := i == len(files)-1
		if len(l.segs) > 0 && fl.first != l.head+1 {
			return fmt.Errorf("audit queue: segment %s does not follow seq %d", filepath.Base(fl.path), l.head)
		}
		seg, last, err := l.scanSegment(fl.path, fl.first, newest)
		if err != nil {
			return err
		}
		if seg.last < seg.first { // empty: created, then the process died
			if err := os.Remove(fl.path); err != nil {
				return fmt.Errorf("audit queue: %w", err)
			}
			continue
		}
		l.segs = append(l.segs, seg)
		l.head = seg.last
		l.prev = hashLine(last)
	}
	if n := len(l.segs); n > 0 {
		f, err := os.OpenFile(l.segs[n-1].path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("audit queue: %w", err)
		}
		// Lines written before a crash but not yet fsynced are made durable now, before
		// anything is delivered or chained to them.
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return fmt.Errorf("audit queue: sync: %w", err)
		}
		l.f = f
	}
	l.synced = l.head
	return nil
}

// scanSegment counts a segment's records and checks that they are this instance's,
// consecutive from first. In the newest segment, a torn or unreadable tail (a crash in
// mid-write) is cut off; anywhere else it is an error.
func (l *Log) scanSegment(path string, first uint64, newest bool) (*segment, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("audit queue: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	seg := &segment{path: path, first: first, last: first - 1}
	br := bufio.NewReaderSize(f, 1<<20)
	var last []byte
	for {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("audit queue: read %s: %w", filepath.Base(path), err)
		}
		h, perr := parseHeader(bytes.TrimSuffix(line, []byte("\n")))
		if line[len(line)-1] != '\n' || perr != nil || h.seq != seg.last+1 || string(h.instance) != l.instance {
			// Only the very last line can be a write cut short; anything else is damage
			// that must not be papered over.
			if _, more := br.Peek(1); !newest || more == nil {
				return nil, nil, fmt.Errorf("audit queue: %s is damaged after seq %d", filepath.Base(path), seg.last)
			}
			l.opts.Logger.Warn("audit queue: cutting a torn record at the end of the newest segment", "segment", filepath.Base(path), "afterSeq", seg.last)
			if err := os.Truncate(path, seg.size); err != nil {
				return nil, nil, fmt.Errorf("audit queue: %w", err)
			}
			break
		}
		seg.last = h.seq
		seg.size += int64(len(line))
		l.lastSize = int64(len(line))
		if h.kind == KindCheckpoint {
			l.sinceCheckpoint = 0
		} else {
			l.sinceCheckpoint++ // unsealed records before a crash get sealed by the next checkpoint
		}
		last = bytes.TrimSuffix(line, []byte("\n"))
		l.sizes = append(l.sizes, uint32(len(line)))
	}
	seg.synced = seg.size
	return seg, last, nil
}

// loadInstance reads the persisted identity, or creates one: pod name and a random boot
// id, written durably before the first record uses it. If the file is lost while
// records remain, the identity is taken from the records, so the chain goes on.
func (l *Log) loadInstance(segments []string) (string, error) {
	path := filepath.Join(l.dir, "instance")
	if data, err := os.ReadFile(path); err == nil {
		inst := strings.TrimSpace(string(data))
		if inst == "" || !validInstance([]byte(inst)) {
			return "", fmt.Errorf("audit queue: %s is not a valid instance identity", path)
		}
		return inst, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("audit queue: %w", err)
	}
	inst := ""
	sort.Strings(segments) // zero-padded names: the oldest first
	for _, seg := range segments {
		if inst = firstInstance(seg); inst != "" {
			break
		}
	}
	if inst == "" {
		var boot [8]byte
		if _, err := rand.Read(boot[:]); err != nil {
			return "", err
		}
		inst = sanitizePod(l.opts.Pod) + "/" + hex.EncodeToString(boot[:])
	}
	if err := writeFileSync(path, []byte(inst+"\n")); err != nil {
		return "", fmt.Errorf("audit queue: %w", err)
	}
	return inst, syncDir(l.dir)
}

// firstInstance is the instance of a segment's first record, "" if there is none.
func firstInstance(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }() // read only
	line, err := bufio.NewReaderSize(f, 64<<10).ReadSlice('\n')
	if err != nil {
		return ""
	}
	h, err := parseHeader(bytes.TrimSuffix(line, []byte("\n")))
	if err != nil {
		return ""
	}
	return string(h.instance)
}

func sanitizePod(p string) string {
	b := []byte(p)
	for i, c := range b {
		if !validInstance([]byte{c}) || c == '/' {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "gateway"
	}
	if len(b) > 253 {
		b = b[:253]
	}
	return string(b)
}

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
	// between tokens; a payload with one is compacted, any other is taken as it is
	// (json.Marshal's output always is).
	if !json.Valid(payload) {
		return 0, errors.New("audit payload is not JSON")
	}
	if bytes.ContainsAny(payload, "\r\n") {
		var compact bytes.Buffer
		_ = json.Compact(&compact, payload) // valid: cannot fail
		payload = compact.Bytes()
	}
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
	e := envelope{kind: KindRecord, time: l.opts.Now(), droppedBefore: l.droppedPending, payload: payload}
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

// syncLoop is the group fsync of SyncInterval mode: a record written at t is on disk
// by about t+interval. While records keep coming it ticks every interval; a tick with
// nothing to sync stops the ticker until the next record (l.unsynced), so that an idle
// gateway does not wake up a hundred times a second. It ends when the log switches to
// an fsync per record.
func (l *Log) syncLoop(interval time.Duration) {
	defer l.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	ticking := true
	for {
		var tick <-chan time.Time
		var wake <-chan struct{}
		if ticking {
			tick = t.C
		} else {
			wake = l.unsynced
		}
		select {
		case <-l.ctx.Done():
			return
		case <-l.syncIntervalChanged:
			l.mu.Lock()
			if l.opts.SyncInterval <= 0 {
				l.syncLoopRunning = false
				l.mu.Unlock()
				return
			}
			if l.opts.SyncInterval != interval {
				interval = l.opts.SyncInterval
				t.Reset(interval)
				ticking = true
			}
			l.mu.Unlock()
		case <-wake:
			t.Reset(interval)
			ticking = true
		case <-tick:
			l.mu.Lock()
			l.syncTicks++
			idle := l.synced >= l.head
			if !idle && !l.closed && l.err == nil {
				if err := l.syncLocked(l.head); err != nil {
					l.opts.Logger.Error("audit queue sync failed", "error", err.Error())
				}
			}
			l.mu.Unlock()
			if idle {
				// A record written from here on finds l.unsynced empty or already
				// signalled: either way the loop hears of it.
				t.Stop()
				ticking = false
			}
		}
	}
}

func (l *Log) dropLocked() {
	l.droppedPending++
	l.dropped++
	l.m.Dropped.Inc()
}

// Checkpoint seals the records written so far, if any are unsealed.
func (l *Log) Checkpoint() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.checkpointLocked()
	return l.syncLocked(l.head)
}

// checkpointLocked writes a checkpoint over the head. It bypasses the queue bounds: it
// is small and at most one per CheckpointEvery records or per interval.
func (l *Log) checkpointLocked() {
	if l.sinceCheckpoint == 0 || l.err != nil {
		return
	}
	if err := l.prepareLocked(); err != nil {
		l.opts.Logger.Error("audit checkpoint not written", "error", err.Error())
		return
	}
	cp := &Checkpoint{Seq: l.head, Hash: hex.EncodeToString(l.prev[:]), Alg: AlgNone}
	if s := l.opts.Signer; s != nil {
		sig, err := s.Sign(checkpointMessage(l.instance, cp.Seq, cp.Hash))
		if err != nil {
			// The next checkpoint covers these records too; never write an unsigned one
			// when a key is configured.
			l.opts.Logger.Error("audit checkpoint not signed; will retry", "error", err.Error())
			return
		}
		cp.Alg, cp.Sig = s.Alg(), hex.EncodeToString(sig)
	}
	line := l.encodeLocked(&envelope{kind: KindCheckpoint, time: l.opts.Now(), checkpoint: cp})
	if err := l.writeLocked(line); err != nil {
		l.opts.Logger.Error("audit checkpoint not written", "error", err.Error())
		return
	}
	l.sinceCheckpoint = 0
}

func (l *Log) checkpointLoop() {
	defer l.wg.Done()
	t := time.NewTicker(l.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
			if err := l.Checkpoint(); err != nil && !errors.Is(err, ErrClosed) {
				l.opts.Logger.Error("audit checkpoint failed", "error", err.Error())
			}
		}
	}
}

// encodeLocked builds the next record's line (with its newline) in l.buf.
func (l *Log) encodeLocked(e *envelope) []byte {
	e.seq, e.instance, e.prev = l.head+1, l.instance, l.prev
	l.buf = append(e.appendLine(l.buf[:0]), '\n')
	return l.buf
}

// writeLocked appends one line to the active segment, starting a new one when it is
// full, and advances the chain. On a failed write the segment is cut back, so that no
// half record stays on disk.
func (l *Log) writeLocked(line []byte) error {
	seq := l.head + 1
	seg := l.segs[len(l.segs)-1]
	if _, err := l.f.Write(line); err != nil {
		if terr := l.f.Truncate(seg.size); terr != nil {
			l.err = fmt.Errorf("audit queue unwritable: %w", err)
		}
		return fmt.Errorf("audit queue write: %w", err)
	}
	seg.size += int64(len(line))
	seg.last = seq
	l.head = seq
	if l.opts.SyncInterval > 0 {
		select {
		case l.unsynced <- struct{}{}:
		default: // already signalled
		}
	}
	l.lastSize = int64(len(line))
	l.prev = hashLine(line[:len(line)-1])
	l.m.Appended.Inc()
	if len(l.sinks) == 0 {
		l.advanceFloorLocked() // nothing to deliver to: nothing is queued
	} else {
		l.sizes = append(l.sizes, uint32(len(line)))
		l.bytes += int64(len(line))
	}
	return nil
}

// prepareLocked makes sure there is an active segment with room, starting a new one
// when needed. It may wait (unlocking l.mu) for a group fsync that uses the active file,
// so it runs before a record is encoded, never between encoding and writing.
func (l *Log) prepareLocked() error {
	for l.f == nil || l.segs[len(l.segs)-1].size >= l.opts.SegmentBytes {
		if l.closed {
			return ErrClosed
		}
		if l.syncing {
			l.cond.Wait()
			continue
		}
		if err := l.rotateLocked(l.head + 1); err != nil {
			return err
		}
	}
	return nil
}

// rotateLocked closes the active segment (durably) and starts one at seq. No group
// fsync is running.
func (l *Log) rotateLocked(seq uint64) error {
	if l.f != nil {
		if err := l.f.Sync(); err != nil {
			l.err = fmt.Errorf("audit queue sync: %w", err)
			return l.err
		}
		old := l.segs[len(l.segs)-1]
		old.synced = old.size
		l.synced = l.head
		_ = l.f.Close()
		l.f = nil
	}
	path := filepath.Join(l.dir, fmt.Sprintf("seg-%020d.jsonl", seq))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit queue: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("audit queue: %w", err)
	}
	l.f = f
	l.segs = append(l.segs, &segment{path: path, first: seq, last: seq - 1})
	return nil
}

// syncLocked returns once seq is on disk. One caller at a time runs fsync, for
// everything written so far; the others wait for it (group commit), so concurrent
// appends share the cost of one fsync.
func (l *Log) syncLocked(seq uint64) error {
	for l.synced < seq {
		if l.err != nil {
			return l.err
		}
		if l.syncing {
			l.cond.Wait()
			continue
		}
		l.syncing = true
		f, target, seg, size := l.f, l.head, l.segs[len(l.segs)-1], l.segs[len(l.segs)-1].size
		l.mu.Unlock()
		err := f.Sync()
		l.mu.Lock()
		l.syncing = false
		l.cond.Broadcast()
		if err != nil {
			l.err = fmt.Errorf("audit queue sync: %w", err)
			return l.err
		}
		seg.synced = max(seg.synced, size)
		if target > l.synced {
			l.synced = target
			l.wakeLocked()
		}
	}
	return nil
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

// writeFileSync and syncDir are internal/durable's.
func writeFileSync(path string, data []byte) error { return durable.WriteFile(path, data, 0o600) }

func syncDir(dir string) error { return durable.SyncDir(dir) }
