package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sink receives batches of records. Each line is a record's canonical bytes (no
// newline), in seq order. Deliver returns nil only when the sink has taken the whole
// batch; otherwise the same records are offered again later.
type Sink interface {
	Deliver(ctx context.Context, lines [][]byte) error
}

// NamedSink is a sink and the name its cursor and metrics go by.
type NamedSink struct {
	Name string
	Sink Sink
}

// deliverer is one sink's delivery loop. Fields after done are guarded by Log.mu.
type deliverer struct {
	name   string
	sink   Sink
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}

	acked       uint64
	delivered   uint64
	failures    uint64
	lastSuccess time.Time

	// Owned by the delivery goroutine.
	saved     uint64    // the cursor on disk
	savedAt   time.Time // when it was written
	seg       *os.File  // the segment being read, kept open between batches
	segPath   string
	saveTimer *time.Timer
}

// readPos is where a deliverer reads next: seq, found at off in the segment whose
// first record is seg (0: not located yet).
type readPos struct {
	seq, seg uint64
	off      int64
}

func (l *Log) startLocked(s NamedSink, acked uint64) {
	ctx, cancel := context.WithCancel(l.ctx)
	d := &deliverer{name: s.Name, sink: s.Sink, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{}), acked: acked}
	l.sinks[s.Name] = d
	l.m.Backlog.WithLabelValues(d.name).Set(float64(l.head - acked))
	go l.deliver(ctx, d)
}

// SetSinks replaces the set of sinks (after a configuration reload). A sink that stays
// keeps its cursor; a new one starts with the oldest record some sink still waits for.
func (l *Log) SetSinks(sinks []NamedSink) {
	l.mu.Lock()
	var stopped []*deliverer
	for name, d := range l.sinks {
		d.cancel()
		stopped = append(stopped, d)
		delete(l.sinks, name)
	}
	l.mu.Unlock()
	acked := map[string]uint64{}
	for _, d := range stopped {
		<-d.done
		acked[d.name] = d.acked
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	for _, s := range sinks {
		a, ok := acked[s.Name]
		if !ok {
			a = l.floor
		}
		l.startLocked(s, a)
	}
	for name := range acked {
		if _, ok := l.sinks[name]; !ok {
			l.m.Backlog.DeleteLabelValues(name)
		}
	}
	l.advanceFloorLocked()
}

// deliver is the loop of one sink: read a batch from its cursor, deliver it, retry
// with exponential backoff and jitter until it is taken, then move the cursor.
func (l *Log) deliver(ctx context.Context, d *deliverer) {
	defer close(d.done)
	d.saved, d.saveTimer = d.acked, time.NewTimer(time.Hour)
	d.saveTimer.Stop()
	defer func() {
		d.saveTimer.Stop()
		l.saveCursor(d)
		if d.seg != nil {
			_ = d.seg.Close()
		}
	}()
	pos := readPos{seq: d.acked + 1}
	attempt := 0
	for {
		lines, next, err := l.read(d, pos)
		if err == nil && len(lines) == 0 {
			if d.saved < l.ackedOf(d) {
				d.saveTimer.Reset(max(0, l.opts.CursorSaveInterval-l.opts.Clock.Now().Sub(d.savedAt)))
			}
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
				d.saveTimer.Stop()
				continue
			case <-d.saveTimer.C:
				l.saveCursor(d)
				continue
			}
		}
		if err == nil {
			err = d.sink.Deliver(ctx, lines)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.failed(d, err)
			if !sleep(ctx, backoff(l.opts.BackoffBase, l.opts.BackoffMax, attempt)) {
				return
			}
			attempt++
			continue
		}
		attempt = 0
		l.ack(d, next.seq-1, len(lines))
		pos = next
	}
}

// backoff is exponential with jitter: a random wait between half and all of
// base*2^attempt, capped at max, so that gateways do not retry in step.
func backoff(base, maxWait time.Duration, attempt int) time.Duration {
	d := maxWait
	if attempt < 30 && base<<attempt < maxWait {
		d = base << attempt
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (l *Log) failed(d *deliverer, err error) {
	l.mu.Lock()
	d.failures++
	l.mu.Unlock()
	l.m.Failures.WithLabelValues(d.name).Inc()
	l.opts.Logger.Warn("audit delivery failed; will retry", "sink", d.name, "error", err.Error())
}

// ackedOf is what the sink has taken so far.
func (l *Log) ackedOf(d *deliverer) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return d.acked
}

// saveCursor writes the sink's cursor if it moved since it was last saved.
func (l *Log) saveCursor(d *deliverer) {
	acked := l.ackedOf(d)
	if acked <= d.saved {
		return
	}
	if err := l.writeCursor(d.name, acked); err != nil {
		l.opts.Logger.Error("audit cursor not saved; records may be delivered again after a restart", "sink", d.name, "error", err.Error())
		return
	}
	d.saved, d.savedAt = acked, l.opts.Clock.Now()
}

// ack records a delivered batch in memory, moves the queue floor and the metrics, and
// saves the cursor when it was last saved CursorSaveInterval ago or more. The floor
// may pass the saved cursor: a restart then starts at the oldest record kept, which
// the sink has already taken, so nothing is skipped.
func (l *Log) ack(d *deliverer, seq uint64, n int) {
	now := l.opts.Clock.Now()
	l.mu.Lock()
	d.acked, d.delivered, d.lastSuccess = seq, d.delivered+uint64(n), now
	backlog := l.head - seq
	l.advanceFloorLocked()
	l.mu.Unlock()
	l.m.Delivered.WithLabelValues(d.name).Add(float64(n))
	l.m.Backlog.WithLabelValues(d.name).Set(float64(backlog))
	l.m.LastSuccess.WithLabelValues(d.name).Set(float64(now.UnixNano()) / 1e9)
	if now.Sub(d.savedAt) >= l.opts.CursorSaveInterval {
		l.saveCursor(d)
	}
}

// advanceFloorLocked moves the floor to the slowest sink's cursor, releases the room
// of records every sink has, and deletes segments nobody needs any more.
func (l *Log) advanceFloorLocked() {
	floor := l.head
	for _, d := range l.sinks {
		floor = min(floor, d.acked)
	}
	if floor <= l.floor {
		return
	}
	drop := min(floor-l.floor, uint64(len(l.sizes)))
	for _, n := range l.sizes[:drop] {
		l.bytes -= int64(n)
	}
	l.sizes = l.sizes[drop:]
	l.floor = floor
	for len(l.segs) > 1 && l.segs[0].last <= floor {
		if err := os.Remove(l.segs[0].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.opts.Logger.Error("audit queue: delivered segment not removed", "error", err.Error())
			break
		}
		l.segs = l.segs[1:]
	}
}

// wakeLocked tells every deliverer that records were synced.
func (l *Log) wakeLocked() {
	for _, d := range l.sinks {
		select {
		case d.wake <- struct{}{}:
		default:
		}
		l.m.Backlog.WithLabelValues(d.name).Set(float64(l.synced - d.acked))
	}
}

// read returns the next batch at pos, only records already on disk, and the position
// after it. It reads files without holding the lock: appends only add to the end, and
// a segment is deleted only after every sink, this one included, has passed it.
func (l *Log) read(d *deliverer, pos readPos) ([][]byte, readPos, error) {
	l.mu.Lock()
	if pos.seq > l.synced {
		l.mu.Unlock()
		return nil, pos, nil
	}
	var seg *segment
	for _, s := range l.segs {
		if s.first <= pos.seq && pos.seq <= s.last {
			seg = s
			break
		}
	}
	if seg == nil {
		l.mu.Unlock()
		return nil, pos, fmt.Errorf("audit queue: seq %d is not on disk", pos.seq)
	}
	path, first, limit := seg.path, seg.first, seg.synced
	l.mu.Unlock()

	if d.segPath != path {
		if d.seg != nil {
			_ = d.seg.Close()
			d.seg, d.segPath = nil, ""
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, pos, fmt.Errorf("audit queue: %w", err)
		}
		d.seg, d.segPath = f, path
	}
	f := d.seg
	if pos.seg != first { // first read in this segment: find seq's offset
		off, err := offsetOf(f, pos.seq-first)
		if err != nil {
			return nil, pos, err
		}
		pos.seg, pos.off = first, off
	}
	n := min(limit-pos.off, int64(l.opts.BatchBytes))
	if n <= 0 {
		return nil, pos, fmt.Errorf("audit queue: seq %d is past the end of its segment", pos.seq)
	}
	buf := make([]byte, n)
	for {
		if _, err := f.ReadAt(buf, pos.off); err != nil {
			return nil, pos, fmt.Errorf("audit queue: read: %w", err)
		}
		if bytes.IndexByte(buf, '\n') >= 0 || int64(len(buf)) == limit-pos.off {
			break
		}
		buf = make([]byte, min(2*int64(len(buf)), limit-pos.off)) // one record longer than a batch
	}
	var lines [][]byte
	for len(lines) < l.opts.BatchRecords {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, buf[:i])
		buf = buf[i+1:]
		pos.seq++
		pos.off += int64(i + 1)
	}
	return lines, pos, nil
}

// offsetOf is the byte offset of the n-th line (from 0) of f.
func offsetOf(f *os.File, n uint64) (int64, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 256<<10)
	var off int64
	for ; n > 0; n-- {
		line, err := br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) {
			off += int64(len(line))
			line, err = br.ReadSlice('\n')
		}
		if err != nil {
			return 0, fmt.Errorf("audit queue: locate record: %w", err)
		}
		off += int64(len(line))
	}
	return off, nil
}

var plainName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,200})$`)

func (l *Log) cursorPath(sink string) string {
	if !plainName.MatchString(sink) {
		sink = "x" + hex.EncodeToString([]byte(sink)) // never a path
	}
	return filepath.Join(l.dir, "cursor-"+sink)
}

// readCursor is the last seq the sink acknowledged, kept within what is on disk. A
// missing or unreadable cursor starts at the oldest record: a repeat, never a skip.
func (l *Log) readCursor(sink string) uint64 {
	first := l.firstRetained()
	c := first - 1
	if data, err := os.ReadFile(l.cursorPath(sink)); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64); err == nil {
			c = v
		}
	}
	return min(max(c, first-1), l.head)
}

// writeCursor replaces the cursor file by rename, so that it is never half written.
// No fsync: after a crash the cursor may be older, which only repeats deliveries.
func (l *Log) writeCursor(sink string, seq uint64) error {
	path := l.cursorPath(sink)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// SinkStatus is one sink's delivery state.
type SinkStatus struct {
	Name        string     `json:"name"`
	Delivered   uint64     `json:"delivered"`
	Backlog     uint64     `json:"backlog"`
	Failures    uint64     `json:"failures"`
	LastSuccess *time.Time `json:"lastSuccess"`
}

// Status is the audit trail's summary for the admin endpoint.
type Status struct {
	Instance string       `json:"instance"`
	Seq      uint64       `json:"seq"`
	Sinks    []SinkStatus `json:"sinks"`
	Dropped  uint64       `json:"dropped"`
}

// Status reports delivery per sink (counts since this process started) and drops.
func (l *Log) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Status{Instance: l.instance, Seq: l.head, Dropped: l.dropped, Sinks: []SinkStatus{}}
	for _, d := range l.sinks {
		s := SinkStatus{Name: d.name, Delivered: d.delivered, Backlog: l.head - d.acked, Failures: d.failures}
		if !d.lastSuccess.IsZero() {
			t := d.lastSuccess.UTC()
			s.LastSuccess = &t
		}
		st.Sinks = append(st.Sinks, s)
	}
	sort.Slice(st.Sinks, func(i, j int) bool { return st.Sinks[i].Name < st.Sinks[j].Name })
	return st
}
