package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Problem is the kind of damage Verify found.
type Problem string

// Problems, in the words an auditor uses.
const (
	// ProblemGap: a record is missing (deleted).
	ProblemGap Problem = "gap"
	// ProblemReorder: records are out of order (for example two swapped).
	ProblemReorder Problem = "reorder"
	// ProblemModified: a record's bytes are not the ones its successor chained to.
	ProblemModified Problem = "modified"
	// ProblemTruncated: the stream ends mid-line, or with records no signed checkpoint
	// covers (the tail was cut, or records were appended by someone without the key).
	ProblemTruncated Problem = "truncated"
	// ProblemBadSignature: a checkpoint's signature does not verify with the key.
	ProblemBadSignature Problem = "bad_signature"
	// ProblemMalformed: a line is not a record of this format.
	ProblemMalformed Problem = "malformed"
)

// VerifyOptions holds the verifier's key (at most one) and its tolerance.
type VerifyOptions struct {
	HMACKey          []byte
	Ed25519PublicKey ed25519.PublicKey
	// AllowUnsealedTail accepts records after an instance's last checkpoint, as a live
	// stream always has; they are counted in Report.Unsealed.
	AllowUnsealedTail bool
	// FromAnySeq accepts an instance's first record at any seq, for a stream that starts
	// mid-chain (a sink added later, a receiver's rotated file). Its prev is then taken
	// on trust; everything after it is still checked.
	FromAnySeq bool
	// Lookahead is how many lines past a missing seq Verify searches for it, to tell a
	// reordered record from a deleted one; 0 means 1<<20.
	Lookahead int
}

// Finding is the first problem in stream order.
type Finding struct {
	Problem  Problem `json:"problem"`
	Instance string  `json:"instance,omitempty"`
	Seq      uint64  `json:"seq"`
	Line     int64   `json:"line"`
	Detail   string  `json:"detail"`
}

// InstanceReport summarises one instance's chain.
type InstanceReport struct {
	Instance    string `json:"instance"`
	LastSeq     uint64 `json:"lastSeq"`
	SealedSeq   uint64 `json:"sealedSeq"`
	Records     uint64 `json:"records"`
	Checkpoints uint64 `json:"checkpoints"`
}

// Report is Verify's verdict.
type Report struct {
	OK          bool             `json:"ok"`
	Lines       int64            `json:"lines"`
	Records     uint64           `json:"records"`
	Checkpoints uint64           `json:"checkpoints"`
	Duplicates  uint64           `json:"duplicates"`
	Dropped     uint64           `json:"dropped"`  // sum of droppedBefore: records the writer declares lost
	Unsealed    uint64           `json:"unsealed"` // records after the last checkpoint
	Signatures  string           `json:"signatures"`
	Instances   []InstanceReport `json:"instances"`
	First       *Finding         `json:"first,omitempty"`
}

// String is the one-line verdict.
func (r *Report) String() string {
	if !r.OK {
		f := r.First
		where := fmt.Sprintf("line %d", f.Line)
		if f.Instance != "" {
			where = fmt.Sprintf("instance %s, line %d", f.Instance, f.Line)
		}
		return fmt.Sprintf("FAIL: first bad seq %d (%s): %s: %s", f.Seq, where, f.Problem, f.Detail)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "OK: %d records and %d checkpoints from %d instance(s); chain intact; signatures %s",
		r.Records, r.Checkpoints, len(r.Instances), r.Signatures)
	if r.Unsealed > 0 {
		fmt.Fprintf(&b, "; %d unsealed record(s) at the tail accepted", r.Unsealed)
	}
	if r.Duplicates > 0 {
		fmt.Fprintf(&b, "; %d duplicate(s) skipped", r.Duplicates)
	}
	if r.Dropped > 0 {
		fmt.Fprintf(&b, "; the writer declares %d record(s) dropped (FailOpen)", r.Dropped)
	}
	return b.String()
}

// dupWindow is how far back an exact duplicate (at-least-once redelivery) is recognised.
const dupWindow = 1024

type chain struct {
	name          string
	seq           uint64
	hash          [sha256.Size]byte
	sealed        uint64
	unsealedSince int64 // line of the first record after the last checkpoint
	line          int64 // line of the last record
	records       uint64
	checkpoints   uint64
	recent        *[dupWindow][sha256.Size]byte
}

type verifier struct {
	opts    VerifyOptions
	rep     Report
	chains  map[string]*chain
	last    *chain
	line    int64
	pending *Finding // a missing seq: a gap unless it shows up later (a reorder)
	ahead   int
}

// Verify reads a stream of record lines (several instances may be interleaved) and
// reports the first problem. The error is for I/O only; damage is in the Report.
func Verify(r io.Reader, opts VerifyOptions) (*Report, error) {
	if opts.HMACKey != nil && opts.Ed25519PublicKey != nil {
		return nil, errors.New("give an HMAC key or an Ed25519 public key, not both")
	}
	if opts.Lookahead <= 0 {
		opts.Lookahead = 1 << 20
	}
	v := &verifier{opts: opts, chains: map[string]*chain{}}
	switch {
	case opts.HMACKey != nil:
		v.rep.Signatures = "verified (" + AlgHMAC + ")"
	case opts.Ed25519PublicKey != nil:
		v.rep.Signatures = "verified (" + AlgEd25519 + ")"
	default:
		v.rep.Signatures = "NOT checked (no key given)"
	}
	br := bufio.NewReaderSize(r, 1<<20)
	var long []byte
	for v.rep.First == nil {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if len(line) == 0 {
			break // end of stream
		}
		v.line++
		v.rep.Lines++
		if line[len(line)-1] != '\n' {
			v.cutMidLine(line)
			break
		}
		v.step(line[:len(line)-1])
		if err != nil {
			break
		}
	}
	v.finish()
	return &v.rep, nil
}

func (v *verifier) fail(p Problem, instance string, seq uint64, line int64, format string, a ...any) {
	v.rep.First = &Finding{Problem: p, Instance: instance, Seq: seq, Line: line, Detail: fmt.Sprintf(format, a...)}
}

func (v *verifier) cutMidLine(line []byte) {
	if v.pending != nil {
		return
	}
	var seq uint64
	var inst string
	if h, err := parseHeader(bytes.TrimSpace(line)); err == nil {
		seq, inst = h.seq, string(h.instance)
	} else if rest, ok := bytes.CutPrefix(line, []byte(`{"seq":`)); ok {
		seq, _, _ = cutUint(rest) // what is left of the cut line
	}
	v.fail(ProblemTruncated, inst, seq, v.line, "the stream ends in the middle of a line")
}

func (v *verifier) chainOf(name []byte) *chain {
	if v.last != nil && v.last.name == string(name) {
		return v.last
	}
	c, ok := v.chains[string(name)]
	if !ok {
		c = &chain{name: string(name), recent: new([dupWindow][sha256.Size]byte)}
		v.chains[c.name] = c
	}
	v.last = c
	return c
}

// step checks one line against its instance's chain.
func (v *verifier) step(line []byte) {
	h, err := parseHeader(line)
	if v.pending != nil {
		// Only looking for the missing record now.
		if err == nil && h.seq == v.pending.Seq && string(h.instance) == v.pending.Instance {
			p := v.pending
			v.pending = nil
			v.fail(ProblemReorder, p.Instance, p.Seq, p.Line, "seq %d appears at line %d, after later records of its instance", p.Seq, v.line)
		} else if v.ahead++; v.ahead >= v.opts.Lookahead {
			v.rep.First, v.pending = v.pending, nil
		}
		return
	}
	if err != nil {
		v.fail(ProblemMalformed, "", 0, v.line, "%v", err)
		return
	}
	c := v.chainOf(h.instance)
	sum := hashLine(line)
	if c.seq == 0 && v.opts.FromAnySeq {
		c.seq, c.hash, c.sealed = h.seq-1, h.prev, h.seq-1
	}
	switch {
	case h.seq <= c.seq:
		if c.seq-h.seq < dupWindow && c.recent[h.seq%dupWindow] == sum {
			v.rep.Duplicates++
			return
		}
		if h.seq == c.seq {
			v.fail(ProblemModified, c.name, h.seq, v.line, "a second, different record with seq %d", h.seq)
			return
		}
		v.fail(ProblemReorder, c.name, h.seq, v.line, "seq %d appears after seq %d", h.seq, c.seq)
		return
	case h.seq > c.seq+1:
		v.pending = &Finding{Problem: ProblemGap, Instance: c.name, Seq: c.seq + 1, Line: v.line,
			Detail: fmt.Sprintf("seq %d is missing: seq %d follows seq %d", c.seq+1, h.seq, c.seq)}
		return
	}
	if h.prev != c.hash {
		if h.seq == 1 {
			v.fail(ProblemModified, c.name, 1, v.line, "the first record's prev is not zero")
		} else {
			v.fail(ProblemModified, c.name, h.seq-1, c.line, "the record with seq %d does not hash to the prev of seq %d", h.seq-1, h.seq)
		}
		return
	}
	if h.kind == KindCheckpoint {
		if !v.checkpoint(c, &h, line) {
			return
		}
		c.checkpoints++
		v.rep.Checkpoints++
		c.sealed = h.seq
	} else {
		c.records++
		v.rep.Records++
		v.rep.Dropped += h.droppedBefore
		if c.seq == c.sealed {
			c.unsealedSince = v.line
		}
	}
	c.seq, c.hash, c.line = h.seq, sum, v.line
	c.recent[h.seq%dupWindow] = sum
}

func (v *verifier) checkpoint(c *chain, h *header, line []byte) bool {
	var body struct {
		Checkpoint *Checkpoint `json:"checkpoint"`
	}
	if err := json.Unmarshal(line, &body); err != nil || body.Checkpoint == nil {
		v.fail(ProblemMalformed, c.name, h.seq, v.line, "checkpoint without a readable checkpoint body")
		return false
	}
	cp := body.Checkpoint
	if cp.Seq != h.seq-1 || cp.Hash != hex.EncodeToString(h.prev[:]) {
		v.fail(ProblemModified, c.name, h.seq, v.line, "checkpoint names seq %d, not its predecessor %d, or another hash", cp.Seq, h.seq-1)
		return false
	}
	if !canonicalCheckpoint(h, cp, line) {
		v.fail(ProblemMalformed, c.name, h.seq, v.line, "checkpoint is not in the form its writer produces (field names and order, lower-case hex, nothing else)")
		return false
	}
	if v.opts.HMACKey == nil && v.opts.Ed25519PublicKey == nil {
		return true
	}
	if err := checkSignature(&v.opts, cp, checkpointMessage(c.name, cp.Seq, cp.Hash)); err != nil {
		v.fail(ProblemBadSignature, c.name, h.seq, v.line, "checkpoint over seq %d: %v", cp.Seq, err)
		return false
	}
	return true
}

// canonicalCheckpoint says whether line is exactly the bytes the writer produces for
// the checkpoint it decodes to. Nothing chains to an instance's last checkpoint and its
// signature covers the seq and hash it seals, not its own bytes, so without this check
// an edit that JSON decoding forgives (a key's case, an upper-case signature, an extra
// field) would go unseen. Only its time is then not covered: see docs/audit.md.
func canonicalCheckpoint(h *header, cp *Checkpoint, line []byte) bool {
	t, err := time.Parse(TimeFormat, string(h.time))
	if err != nil {
		return false
	}
	want := *cp
	if sig, err := hex.DecodeString(cp.Sig); err == nil {
		want.Sig = hex.EncodeToString(sig) // a signature that is not hex fails its check
	}
	e := envelope{seq: h.seq, instance: string(h.instance), prev: h.prev, kind: KindCheckpoint,
		time: t, droppedBefore: h.droppedBefore, checkpoint: &want}
	return bytes.Equal(e.appendLine(nil), line)
}

func (v *verifier) finish() {
	if v.pending != nil {
		v.rep.First, v.pending = v.pending, nil
	}
	names := make([]string, 0, len(v.chains))
	for n := range v.chains {
		names = append(names, n)
	}
	sort.Strings(names)
	var cut *chain
	for _, n := range names {
		c := v.chains[n]
		v.rep.Instances = append(v.rep.Instances, InstanceReport{Instance: n, LastSeq: c.seq, SealedSeq: c.sealed, Records: c.records, Checkpoints: c.checkpoints})
		if c.seq > c.sealed {
			v.rep.Unsealed += c.seq - c.sealed
			if cut == nil || c.unsealedSince < cut.unsealedSince {
				cut = c
			}
		}
	}
	if v.rep.First == nil && cut != nil && !v.opts.AllowUnsealedTail {
		v.fail(ProblemTruncated, cut.name, cut.sealed+1, cut.unsealedSince,
			"%d record(s) after the last signed checkpoint: the tail was cut, or records were appended without the key", cut.seq-cut.sealed)
	}
	v.rep.OK = v.rep.First == nil
}
