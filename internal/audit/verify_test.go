package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

const instA, instB = "support-line-0/00000000000000aa", "support-line-1/00000000000000bb"

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		if len(l) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// forge appends n records chained correctly after the last line, as someone without
// the key can, and optionally a checkpoint signed by signer.
func forge(t *testing.T, lines [][]byte, n int, signer Signer, withCheckpoint bool) [][]byte {
	last := bytes.TrimSuffix(lines[len(lines)-1], []byte("\n"))
	h, err := parseHeader(last)
	if err != nil {
		t.Fatal(err)
	}
	c := &memChain{instance: string(h.instance), seq: h.seq, prev: hashLine(last), signer: signer, now: time.Now()}
	for i := 0; i < n; i++ {
		lines = append(lines, c.record(`{"decision":"allowed","note":"forged"}`))
	}
	if withCheckpoint {
		lines = append(lines, c.checkpoint(t))
	}
	return lines
}

func TestVerifyFindsEachTampering(t *testing.T) {
	dir := t.TempDir()
	hmacKey := writeFile(t, dir, "hmac", []byte("0123456789abcdef0123456789abcdef\n"))
	signer := NewHMACSigner(hmacKey)
	attacker := NewHMACSigner(writeFile(t, dir, "other", []byte("not-the-key")))
	key := []byte("0123456789abcdef0123456789abcdef")
	// 50 records with a checkpoint every 10: seq 11, 22, 33, 44, 55 are checkpoints.
	base := splitLines(buildStream(t, 50, 10, signer, instA))

	tests := []struct {
		name     string
		tamper   func([][]byte) [][]byte
		opts     VerifyOptions
		problem  Problem // "" means the stream verifies
		seq      uint64
		instance string
	}{
		{name: "intact", tamper: func(l [][]byte) [][]byte { return l }},
		{name: "one record deleted", problem: ProblemGap, seq: 5,
			tamper: func(l [][]byte) [][]byte { return append(l[:4:4], l[5:]...) }},
		{name: "a checkpoint deleted", problem: ProblemGap, seq: 22,
			tamper: func(l [][]byte) [][]byte { return append(l[:21:21], l[22:]...) }},
		{name: "one record altered", problem: ProblemModified, seq: 7,
			tamper: func(l [][]byte) [][]byte {
				l[6] = bytes.Replace(l[6], []byte(`"status":200`), []byte(`"status":201`), 1)
				return l
			}},
		{name: "the last record before a checkpoint altered", problem: ProblemModified, seq: 10,
			tamper: func(l [][]byte) [][]byte {
				l[9] = bytes.Replace(l[9], []byte(`"decision":"allowed"`), []byte(`"decision":"denied"`), 1)
				return l
			}},
		{name: "two records swapped", problem: ProblemReorder, seq: 8,
			tamper: func(l [][]byte) [][]byte { l[7], l[8] = l[8], l[7]; return l }},
		{name: "a record moved far back", problem: ProblemReorder, seq: 3,
			tamper: func(l [][]byte) [][]byte {
				moved := l[2]
				l = append(l[:2:2], l[3:]...)
				return append(l[:30:30], append([][]byte{moved}, l[30:]...)...)
			}},
		{name: "tail cut", problem: ProblemTruncated, seq: 45,
			tamper: func(l [][]byte) [][]byte { return l[:len(l)-3] }},
		{name: "tail cut but unsealed tail allowed", opts: VerifyOptions{AllowUnsealedTail: true},
			tamper: func(l [][]byte) [][]byte { return l[:len(l)-3] }},
		{name: "cut in the middle of a line", problem: ProblemTruncated, seq: 55,
			tamper: func(l [][]byte) [][]byte { l[len(l)-1] = l[len(l)-1][:40]; return l }},
		{name: "forged record appended", problem: ProblemTruncated, seq: 56,
			tamper: func(l [][]byte) [][]byte { return forge(t, l, 1, nil, false) }},
		{name: "forged record and checkpoint signed with another key", problem: ProblemBadSignature, seq: 58,
			tamper: func(l [][]byte) [][]byte { return forge(t, l, 2, attacker, true) }},
		{name: "forged record and unsigned checkpoint", problem: ProblemBadSignature, seq: 57,
			tamper: func(l [][]byte) [][]byte { return forge(t, l, 1, nil, true) }},
		{name: "checkpoint signature altered", problem: ProblemBadSignature, seq: 33,
			tamper: func(l [][]byte) [][]byte {
				i := bytes.Index(l[32], []byte(`"sig":"`)) + len(`"sig":"`)
				l[32] = bytes.Clone(l[32])
				l[32][i] ^= 1
				return l
			}},
		{name: "redelivered batch is skipped", tamper: func(l [][]byte) [][]byte {
			dup := append([][]byte{}, l[:25]...)
			return append(dup, l[10:]...)
		}},
		{name: "a different record with a seen seq", problem: ProblemModified, seq: 25,
			tamper: func(l [][]byte) [][]byte {
				other := bytes.Replace(l[24], []byte(`"status":200`), []byte(`"status":500`), 1)
				return append(append(append([][]byte{}, l[:25]...), other), l[25:]...)
			}},
		{name: "malformed line", problem: ProblemMalformed,
			tamper: func(l [][]byte) [][]byte {
				return append(append(append([][]byte{}, l[:3]...), []byte("{\"hello\":1}\n")), l[3:]...)
			}},
		{name: "without a key a forgery with a checkpoint is not caught", opts: VerifyOptions{},
			tamper: func(l [][]byte) [][]byte { return forge(t, l, 1, attacker, true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := tt.tamper(append([][]byte{}, base...))
			opts := tt.opts
			if !strings.HasPrefix(tt.name, "without a key") {
				opts.HMACKey = key
			}
			rep, err := Verify(bytes.NewReader(bytes.Join(lines, nil)), opts)
			if err != nil {
				t.Fatal(err)
			}
			if tt.problem == "" {
				if !rep.OK {
					t.Fatalf("want OK, got %s", rep)
				}
				return
			}
			if rep.OK {
				t.Fatalf("want %s, got %s", tt.problem, rep)
			}
			if rep.First.Problem != tt.problem || (tt.seq != 0 && rep.First.Seq != tt.seq) {
				t.Fatalf("want %s at seq %d, got %s", tt.problem, tt.seq, rep)
			}
			if !strings.HasPrefix(rep.String(), "FAIL: first bad seq") {
				t.Errorf("verdict %q", rep)
			}
		})
	}
}

func TestVerifyInterleavedInstances(t *testing.T) {
	key := []byte("k-interleaved")
	signer := NewHMACSigner(writeFile(t, t.TempDir(), "k", key))
	stream := buildStream(t, 40, 7, signer, instA, instB)
	rep, err := Verify(bytes.NewReader(stream), VerifyOptions{HMACKey: key})
	if err != nil || !rep.OK || len(rep.Instances) != 2 || rep.Records != 80 {
		t.Fatalf("intact interleaved stream: %v %s %+v", err, rep, rep.Instances)
	}
	// Delete instance B's seq 9: the lines alternate per instance, checkpoints included.
	var kept [][]byte
	for _, l := range splitLines(stream) {
		h, _ := parseHeader(bytes.TrimSuffix(l, []byte("\n")))
		if string(h.instance) == instB && h.seq == 9 {
			continue
		}
		kept = append(kept, l)
	}
	rep, _ = Verify(bytes.NewReader(bytes.Join(kept, nil)), VerifyOptions{HMACKey: key})
	if rep.OK || rep.First.Problem != ProblemGap || rep.First.Instance != instB || rep.First.Seq != 9 {
		t.Fatalf("want a gap at %s seq 9, got %s", instB, rep)
	}
}

func TestVerifyEd25519(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	privFile := writeFile(t, dir, "priv.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	signer, err := NewSigner(AlgEd25519, privFile)
	if err != nil {
		t.Fatal(err)
	}
	stream := buildStream(t, 30, 10, signer, instA)
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	pubKey, err := ParseEd25519PublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	if err != nil {
		t.Fatal(err)
	}
	if rep, _ := Verify(bytes.NewReader(stream), VerifyOptions{Ed25519PublicKey: pubKey}); !rep.OK {
		t.Fatalf("intact: %s", rep)
	}
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rep, _ := Verify(bytes.NewReader(stream), VerifyOptions{Ed25519PublicKey: otherPub})
	if rep.OK || rep.First.Problem != ProblemBadSignature || rep.First.Seq != 11 {
		t.Fatalf("another public key: %s", rep)
	}
	// Raw keys work too: the 32-byte seed signs, the 32-byte public key verifies.
	seedSigner, err := NewSigner(AlgEd25519, writeFile(t, dir, "seed", priv.Seed()))
	if err != nil {
		t.Fatal(err)
	}
	if rep, _ := Verify(bytes.NewReader(buildStream(t, 5, 2, seedSigner, instB)), VerifyOptions{Ed25519PublicKey: pub}); !rep.OK {
		t.Fatalf("raw keys: %s", rep)
	}
}

func TestParseHeaderIsStrict(t *testing.T) {
	c := &memChain{instance: instA, now: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)}
	good := bytes.TrimSuffix(c.record(`{"a":1}`), []byte("\n"))
	h, err := parseHeader(good)
	if err != nil || h.seq != 1 || string(h.instance) != instA || h.kind != KindRecord || string(h.time) != "2026-01-02T03:04:05.000006Z" {
		t.Fatalf("good line: %v %+v", err, h)
	}
	for _, bad := range []string{
		`{"seq":01,` + string(good[len(`{"seq":1,`):]),
		strings.Replace(string(good), `"kind":"record"`, `"kind":"other"`, 1),
		strings.Replace(string(good), `"instance":"`, `"instance":"a b`, 1),
		strings.Replace(string(good), hex.EncodeToString(make([]byte, 32)), strings.Repeat("A", 64), 1),
		`{"seq":1}`,
	} {
		if _, err := parseHeader([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func BenchmarkVerify100k(b *testing.B) {
	key := []byte("bench-key-0123456789")
	signer := NewHMACSigner(writeFile(b, b.TempDir(), "k", key))
	stream := buildStream(b, 100_000, 1000, signer, instA)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := Verify(bytes.NewReader(stream), VerifyOptions{HMACKey: key})
		if err != nil || !rep.OK || rep.Records != 100_000 {
			b.Fatalf("%v %s", err, rep)
		}
	}
}
