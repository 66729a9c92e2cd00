package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
)

// Record kinds.
const (
	KindRecord     = "record"
	KindCheckpoint = "checkpoint"
)

// TimeFormat is the record time: RFC 3339, UTC, microseconds, as RFC 5424 wants it.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// timeLen is the length of a record time, always UTC ("Z").
const timeLen = len("2006-01-02T15:04:05.000000Z")

// Checkpoint is the body of a checkpoint record.
type Checkpoint struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	Alg  string `json:"alg"`
	Sig  string `json:"sig"`
}

// envelope is what a record line is built from.
type envelope struct {
	seq           uint64
	instance      string
	prev          [sha256.Size]byte
	kind          string
	time          time.Time
	droppedBefore uint64
	payload       []byte // compact JSON, or nil
	checkpoint    *Checkpoint
}

// appendLine appends the canonical bytes of e to dst. The field order is the contract
// that lets verifiers read the header without a full JSON parse.
func (e *envelope) appendLine(dst []byte) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, e.seq, 10)
	dst = append(dst, `,"instance":"`...)
	dst = append(dst, e.instance...)
	dst = append(dst, `","prev":"`...)
	dst = hex.AppendEncode(dst, e.prev[:])
	dst = append(dst, `","kind":"`...)
	dst = append(dst, e.kind...)
	dst = append(dst, `","time":"`...)
	dst = e.time.UTC().AppendFormat(dst, TimeFormat)
	dst = append(dst, '"')
	if e.droppedBefore > 0 {
		dst = append(dst, `,"droppedBefore":`...)
		dst = strconv.AppendUint(dst, e.droppedBefore, 10)
	}
	if e.payload != nil {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, e.payload...)
	}
	if e.checkpoint != nil {
		cp, _ := json.Marshal(e.checkpoint) // strings are hex and names: cannot fail
		dst = append(dst, `,"checkpoint":`...)
		dst = append(dst, cp...)
	}
	return append(dst, '}')
}

// header is the fixed-order prefix of a record line.
type header struct {
	seq           uint64
	instance      []byte // aliases the line
	prev          [sha256.Size]byte
	kind          string
	time          []byte // aliases the line
	droppedBefore uint64
}

var errMalformed = errors.New("not a record line of this format")

// parseHeader reads the fixed-order prefix of a record line strictly; anything else is
// malformed. It allocates nothing, which keeps verification fast.
func parseHeader(line []byte) (h header, err error) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"seq":`))
	if !ok {
		return h, errMalformed
	}
	if h.seq, rest, ok = cutUint(rest); !ok || h.seq == 0 {
		return h, errMalformed
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"instance":"`)); !ok {
		return h, errMalformed
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 || !validInstance(rest[:i]) {
		return h, errMalformed
	}
	h.instance, rest = rest[:i], rest[i:]
	if rest, ok = bytes.CutPrefix(rest, []byte(`","prev":"`)); !ok || len(rest) < 2*sha256.Size {
		return h, errMalformed
	}
	if _, err := hex.Decode(h.prev[:], rest[:2*sha256.Size]); err != nil || !lowerHex(rest[:2*sha256.Size]) {
		return h, errMalformed
	}
	rest = rest[2*sha256.Size:]
	switch {
	case bytes.HasPrefix(rest, []byte(`","kind":"record","time":"`)):
		h.kind, rest = KindRecord, rest[len(`","kind":"record","time":"`):]
	case bytes.HasPrefix(rest, []byte(`","kind":"checkpoint","time":"`)):
		h.kind, rest = KindCheckpoint, rest[len(`","kind":"checkpoint","time":"`):]
	default:
		return h, errMalformed
	}
	if len(rest) <= timeLen || rest[timeLen-1] != 'Z' || rest[timeLen] != '"' {
		return h, errMalformed
	}
	h.time, rest = rest[:timeLen], rest[timeLen+1:]
	if r, ok := bytes.CutPrefix(rest, []byte(`,"droppedBefore":`)); ok {
		if h.droppedBefore, rest, ok = cutUint(r); !ok {
			return h, errMalformed
		}
	}
	if len(rest) == 0 || rest[len(rest)-1] != '}' || (rest[0] != ',' && len(rest) != 1) {
		return h, errMalformed
	}
	return h, nil
}

func cutUint(b []byte) (uint64, []byte, bool) {
	var n uint64
	i := 0
	for ; i < len(b) && i < 20 && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, b, false // past 2^64-1: it would wrap around to a small seq
		}
		n = n*10 + d
	}
	if i == 0 || (i > 1 && b[0] == '0') {
		return 0, b, false
	}
	return n, b[i:], true
}

func validInstance(b []byte) bool {
	if len(b) > 300 {
		return false
	}
	for _, c := range b {
		if !(c == '.' || c == '_' || c == ':' || c == '/' || c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			return false
		}
	}
	return true
}

func lowerHex(b []byte) bool {
	for _, c := range b {
		if !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
			return false
		}
	}
	return true
}

// hashLine is the record hash: SHA-256 over its canonical bytes.
func hashLine(line []byte) [sha256.Size]byte { return sha256.Sum256(line) }

// checkpointMessage is what a checkpoint signature covers.
func checkpointMessage(instance string, seq uint64, hash string) []byte {
	return []byte("voiceagent-audit-checkpoint/v1\n" + instance + "\n" + strconv.FormatUint(seq, 10) + "\n" + hash)
}
