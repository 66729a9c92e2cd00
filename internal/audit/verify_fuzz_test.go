package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"time"
)

// The fuzz targets of Verify. FuzzVerifyDamage damages valid streams, written the way
// the gateway writes them and sealed with an HMAC key, and holds Verify to its promise:
// whatever it calls intact is the original stream, up to the three differences no
// verifier can see (listed at checkAcceptedIsOriginal). FuzzVerifyRaw feeds arbitrary
// bytes under every option. Neither may panic.

var fuzzHMACKey = []byte("fuzz-checkpoint-key-0123456789abcdef")

// fuzzStreams are the valid streams the damage starts from: one instance with several
// checkpoints, two interleaved instances, and one instance whose only checkpoint is its
// last line.
func fuzzStreams(f *testing.F) [][]byte {
	signer := NewHMACSigner(writeFile(f, f.TempDir(), "k", fuzzHMACKey))
	return [][]byte{
		buildStream(f, 12, 4, signer, instA),
		buildStream(f, 6, 3, signer, instA, instB),
		buildStream(f, 2, 10, signer, instB),
	}
}

// damage applies the operations encoded in ops to stream: each takes one opcode byte
// and four argument bytes (two 16-bit positions), byte edits work on the whole stream,
// line edits on its lines. At most 8 operations, so that the minimised inputs stay
// readable.
func damage(stream, other []byte, ops []byte) []byte {
	out := bytes.Clone(stream)
	for n := 0; len(ops) >= 5 && n < 8; n++ {
		op, a, b := ops[0], int(binary.BigEndian.Uint16(ops[1:3])), int(binary.BigEndian.Uint16(ops[3:5]))
		ops = ops[5:]
		lines := splitLines(out)
		switch op % 12 {
		case 0: // flip one bit
			if len(out) > 0 {
				out[a%len(out)] ^= 1 << (b % 8)
			}
		case 1: // overwrite one byte
			if len(out) > 0 {
				out[a%len(out)] = byte(b)
			}
		case 2: // insert one byte
			p := a % (len(out) + 1)
			out = append(out[:p:p], append([]byte{byte(b)}, out[p:]...)...)
		case 3: // delete one byte
			if len(out) > 0 {
				p := a % len(out)
				out = append(out[:p:p], out[p+1:]...)
			}
		case 4: // delete a run of bytes
			if len(out) > 0 {
				p := a % len(out)
				e := min(len(out), p+1+b%80)
				out = append(out[:p:p], out[e:]...)
			}
		case 5: // cut the stream
			out = out[:a%(len(out)+1)]
		case 6: // drop a line
			if len(lines) > 0 {
				i := a % len(lines)
				out = bytes.Join(append(lines[:i:i], lines[i+1:]...), nil)
			}
		case 7: // duplicate a line somewhere
			if len(lines) > 0 {
				l, j := lines[a%len(lines)], b%(len(lines)+1)
				out = bytes.Join(append(lines[:j:j], append([][]byte{l}, lines[j:]...)...), nil)
			}
		case 8: // swap two lines
			if len(lines) > 0 {
				i, j := a%len(lines), b%len(lines)
				lines[i], lines[j] = lines[j], lines[i]
				out = bytes.Join(lines, nil)
			}
		case 9: // move a line
			if len(lines) > 0 {
				i := a % len(lines)
				l := lines[i]
				rest := append(lines[:i:i], lines[i+1:]...)
				j := b % (len(rest) + 1)
				out = bytes.Join(append(rest[:j:j], append([][]byte{l}, rest[j:]...)...), nil)
			}
		case 10: // splice in a line of another valid stream (same key, maybe same instance)
			if ol := splitLines(other); len(ol) > 0 {
				j := b % (len(lines) + 1)
				out = bytes.Join(append(lines[:j:j], append([][]byte{ol[a%len(ol)]}, lines[j:]...)...), nil)
			}
		case 11: // swap two bytes
			if len(out) > 0 {
				i, j := a%len(out), b%len(out)
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func FuzzVerifyDamage(f *testing.F) {
	streams := fuzzStreams(f)
	lines := len(splitLines(streams[0]))
	op := func(code byte, a, b uint16) []byte {
		return []byte{code, byte(a >> 8), byte(a), byte(b >> 8), byte(b)}
	}
	f.Add(uint8(0), []byte{})                              // intact
	f.Add(uint8(0), op(0, 100, 3))                         // a bit flipped in the first record
	f.Add(uint8(0), op(0, uint16(len(streams[0])-20), 0))  // ... in the last checkpoint's signature
	f.Add(uint8(0), op(0, uint16(len(streams[0])-120), 5)) // ... in the last checkpoint's header
	f.Add(uint8(0), op(6, 3, 0))                           // a record dropped
	f.Add(uint8(0), op(6, uint16(lines-1), 0))             // the last checkpoint dropped
	f.Add(uint8(0), append(op(6, uint16(lines-1), 0), op(6, uint16(lines-2), 0)...))
	f.Add(uint8(0), op(7, 2, 9))                                    // a record redelivered later
	f.Add(uint8(0), op(8, 2, 3))                                    // two records swapped
	f.Add(uint8(0), op(9, 1, 7))                                    // a record moved
	f.Add(uint8(1), op(8, 0, 1))                                    // two instances' lines swapped
	f.Add(uint8(1), op(10, 2, 4))                                   // a line of another stream spliced in
	f.Add(uint8(2), op(5, uint16(len(streams[2])-1), 0))            // the final newline cut
	f.Add(uint8(2), op(1, uint16(len(streams[2])-30), uint16('A'))) // the last signature upper-cased
	f.Fuzz(func(t *testing.T, which uint8, ops []byte) {
		orig := streams[int(which)%len(streams)]
		damaged := damage(orig, streams[(int(which)+1)%len(streams)], ops)
		rep, err := Verify(bytes.NewReader(damaged), VerifyOptions{HMACKey: fuzzHMACKey})
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		_ = rep.String()
		if !rep.OK {
			if rep.First == nil {
				t.Fatal("not OK without a finding")
			}
			if bytes.Equal(damaged, orig) {
				t.Fatalf("the intact stream was refused: %s", rep)
			}
			return
		}
		checkAcceptedIsOriginal(t, orig, damaged, rep)
	})
}

// checkAcceptedIsOriginal fails unless the stream Verify accepted is orig but for what
// no verifier can see, each of which Verify's report or the documentation accounts for:
//
//   - exact duplicates of lines (at-least-once redelivery): skipped and counted in
//     Report.Duplicates;
//   - a cut right after a checkpoint, of one instance or all (a stream that ended
//     there): each instance's Report.Instances[].LastSeq says where its chain ends, to
//     compare with the gateway's (docs/audit.md, "Limits");
//   - another valid time in an instance's last checkpoint: nothing after it chains to
//     it and its signature covers the instance, seq and hash it seals, not its own time.
//     Every other byte of that line is checked (the canonical-form check of Verify).
func checkAcceptedIsOriginal(t *testing.T, orig, damaged []byte, rep *Report) {
	t.Helper()
	if len(damaged) > 0 && damaged[len(damaged)-1] != '\n' {
		t.Fatalf("accepted a stream that ends mid-line: %s", rep)
	}
	want := map[string][][]byte{}
	for _, l := range splitLines(orig) {
		l = bytes.TrimSuffix(l, []byte("\n"))
		h, err := parseHeader(l)
		if err != nil {
			t.Fatal(err)
		}
		want[string(h.instance)] = append(want[string(h.instance)], l)
	}
	seen := map[string]bool{}
	got := map[string][][]byte{}
	retimed := map[string]int{}
	var dups uint64
	for _, l := range splitLines(damaged) {
		l = bytes.TrimSuffix(l, []byte("\n"))
		if seen[string(l)] {
			dups++
			continue
		}
		seen[string(l)] = true
		h, err := parseHeader(l)
		if err != nil {
			t.Fatalf("accepted a malformed line %q: %s", l, rep)
		}
		inst := string(h.instance)
		i := len(got[inst])
		if i >= len(want[inst]) {
			t.Fatalf("accepted a line the original does not have: %q: %s", l, rep)
		}
		if !bytes.Equal(l, want[inst][i]) {
			if !sameButValidTime(l, want[inst][i]) || h.kind != KindCheckpoint {
				t.Fatalf("accepted a changed line:\n got %q\nwant %q\n%s", l, want[inst][i], rep)
			}
			retimed[inst] = i
		}
		got[inst] = append(got[inst], l)
	}
	if rep.Duplicates != dups {
		t.Errorf("Report.Duplicates = %d, the stream has %d exact duplicates", rep.Duplicates, dups)
	}
	if len(rep.Instances) != len(got) {
		t.Fatalf("report names %d instances, the stream has %d", len(rep.Instances), len(got))
	}
	for _, ir := range rep.Instances {
		lines := got[ir.Instance]
		if i, ok := retimed[ir.Instance]; ok && i != len(lines)-1 {
			t.Fatalf("instance %s: accepted a retimed checkpoint that is not the last line of its chain", ir.Instance)
		}
		if ir.LastSeq != uint64(len(lines)) || ir.SealedSeq != ir.LastSeq {
			t.Fatalf("instance %s: report says lastSeq %d sealed %d, the accepted chain has %d lines", ir.Instance, ir.LastSeq, ir.SealedSeq, len(lines))
		}
		if h, _ := parseHeader(lines[len(lines)-1]); h.kind != KindCheckpoint {
			t.Fatalf("instance %s: accepted a chain that does not end with a checkpoint", ir.Instance)
		}
	}
}

// sameButValidTime says whether a and b differ in their time field alone, and a's is a
// time as the writer formats it.
func sameButValidTime(a, b []byte) bool {
	i := bytes.Index(a, []byte(`"time":"`)) + len(`"time":"`)
	if i < len(`"time":"`) || len(a) != len(b) || len(a) < i+timeLen {
		return false
	}
	if !bytes.Equal(a[:i], b[:i]) || !bytes.Equal(a[i+timeLen:], b[i+timeLen:]) {
		return false
	}
	ts, err := time.Parse(TimeFormat, string(a[i:i+timeLen]))
	return err == nil && ts.UTC().Format(TimeFormat) == string(a[i:i+timeLen])
}

func FuzzVerifyRaw(f *testing.F) {
	streams := fuzzStreams(f)
	for i, s := range streams {
		f.Add(s, uint8(i))
		f.Add(s[:len(s)/2], uint8(i+4))
	}
	f.Add([]byte("{\"seq\":18446744073709551617,\"instance\":\"a\"}\n"), uint8(0))
	f.Add([]byte("\n\n{}\n"), uint8(7))
	pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
	f.Fuzz(func(t *testing.T, data []byte, flags uint8) {
		opts := VerifyOptions{AllowUnsealedTail: flags&4 != 0, FromAnySeq: flags&8 != 0, Lookahead: int(flags >> 4)}
		switch flags & 3 {
		case 1:
			opts.HMACKey = fuzzHMACKey
		case 2:
			opts.Ed25519PublicKey = pub
		}
		rep, err := Verify(bytes.NewReader(data), opts)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if rep.OK == (rep.First != nil) {
			t.Fatalf("OK %v with finding %+v", rep.OK, rep.First)
		}
		_ = rep.String()
	})
}

// TestVerifyLastCheckpointBytes holds the bytes of an instance's last checkpoint, which
// nothing chains to, to the writer's form (the fuzzer's first find: "sig" spelt "sIg"
// was accepted, JSON decoding being case-insensitive), and records the one field it
// cannot hold: the time.
func TestVerifyLastCheckpointBytes(t *testing.T) {
	signer := NewHMACSigner(writeFile(t, t.TempDir(), "k", fuzzHMACKey))
	stream := buildStream(t, 3, 10, signer, instA)
	lines := splitLines(stream)
	last := string(lines[len(lines)-1])
	sig := last[strings.Index(last, `"sig":"`)+len(`"sig":"`) : len(last)-len("\"}}\n")]
	for _, tt := range []struct {
		name, line string
		ok         bool
	}{
		{"intact", last, true},
		{"a key's case", strings.Replace(last, `"sig":`, `"sIg":`, 1), false},
		{"the signature upper-cased", strings.Replace(last, sig, strings.ToUpper(sig), 1), false},
		{"an extra field", strings.Replace(last, `"alg":`, `"x":1,"alg":`, 1), false},
		{"a duplicated key", strings.Replace(last, `"alg":`, `"seq":2,"alg":`, 1), false},
		{"an escaped letter", strings.Replace(last, `"HMAC-SHA256"`, `"\u0048MAC-SHA256"`, 1), false},
		{"white space", strings.Replace(last, `,"checkpoint":`, `, "checkpoint":`, 1), false},
		{"a payload on a checkpoint", strings.Replace(last, `,"checkpoint":`, `,"payload":{},"checkpoint":`, 1), false},
		{"a time that is not one", strings.Replace(last, `.003000Z`, `.00300AZ`, 1), false},
		{"known limit: another valid time", strings.Replace(last, `.003000Z`, `.003999Z`, 1), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.line == last && tt.name != "intact" {
				t.Fatalf("the edit did not apply to %q", last)
			}
			damaged := append(bytes.Join(lines[:len(lines)-1], nil), tt.line...)
			rep, err := Verify(bytes.NewReader(damaged), VerifyOptions{HMACKey: fuzzHMACKey})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK != tt.ok {
				t.Fatalf("OK = %v, want %v: %s", rep.OK, tt.ok, rep)
			}
		})
	}
}

// TestParseHeaderRefusesSeqPastUint64 : 2^64+1 written out must not read as seq 1.
func TestParseHeaderRefusesSeqPastUint64(t *testing.T) {
	c := &memChain{instance: instA, now: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)}
	good := string(bytes.TrimSuffix(c.record(`{"a":1}`), []byte("\n")))
	for _, seq := range []string{"18446744073709551617", "18446744073709551616", "99999999999999999999"} {
		if h, err := parseHeader([]byte(strings.Replace(good, `{"seq":1,`, `{"seq":`+seq+`,`, 1))); err == nil {
			t.Errorf("seq %s read as %d", seq, h.seq)
		}
	}
	max := strings.Replace(good, `{"seq":1,`, `{"seq":18446744073709551615,`, 1)
	if h, err := parseHeader([]byte(max)); err != nil || h.seq != math.MaxUint64 {
		t.Errorf("seq 2^64-1: %v %d", err, h.seq)
	}
}
