package audit

import (
	"encoding/hex"
)

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
	line := l.encodeLocked(&envelope{kind: KindCheckpoint, time: l.opts.Clock.Now(), checkpoint: cp})
	if err := l.writeLocked(line); err != nil {
		l.opts.Logger.Error("audit checkpoint not written", "error", err.Error())
		return
	}
	l.sinceCheckpoint = 0
}

// encodeLocked builds the next record's line (with its newline) in l.buf.
func (l *Log) encodeLocked(e *envelope) []byte {
	e.seq, e.instance, e.prev = l.head+1, l.instance, l.prev
	l.buf = append(e.appendLine(l.buf[:0]), '\n')
	return l.buf
}
