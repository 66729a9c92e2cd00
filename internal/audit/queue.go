package audit

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/durable"
)

// segment is one file of consecutive records.
type segment struct {
	path        string
	first, last uint64 // seqs in the file (last = first-1 while empty)
	size        int64  // bytes written
	synced      int64  // bytes known to be on disk
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

// writeFileSync and syncDir are internal/durable's.
func writeFileSync(path string, data []byte) error { return durable.WriteFile(path, data, 0o600) }

func syncDir(dir string) error { return durable.SyncDir(dir) }
