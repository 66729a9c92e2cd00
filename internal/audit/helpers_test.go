package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memChain writes one instance's chain in memory with the same encoder and signature
// message as Log, for streams too large to fsync record by record.
type memChain struct {
	instance string
	seq      uint64
	prev     [sha256.Size]byte
	signer   Signer
	now      time.Time
}

func (c *memChain) line(e *envelope) []byte {
	c.seq++
	e.seq, e.instance, e.prev, e.time = c.seq, c.instance, c.prev, c.now
	c.now = c.now.Add(time.Millisecond)
	b := e.appendLine(nil)
	c.prev = hashLine(b)
	return append(b, '\n')
}

func (c *memChain) record(payload string) []byte {
	return c.line(&envelope{kind: KindRecord, payload: []byte(payload)})
}

func (c *memChain) checkpoint(t testing.TB) []byte {
	cp := &Checkpoint{Seq: c.seq, Hash: hex.EncodeToString(c.prev[:]), Alg: AlgNone}
	if c.signer != nil {
		sig, err := c.signer.Sign(checkpointMessage(c.instance, cp.Seq, cp.Hash))
		if err != nil {
			t.Fatal(err)
		}
		cp.Alg, cp.Sig = c.signer.Alg(), hex.EncodeToString(sig)
	}
	return c.line(&envelope{kind: KindCheckpoint, checkpoint: cp})
}

// buildStream interleaves n records of each instance round-robin, with a checkpoint
// every `every` records and a final one.
func buildStream(t testing.TB, n, every int, signer Signer, instances ...string) []byte {
	var out bytes.Buffer
	chains := make([]*memChain, len(instances))
	for i, in := range instances {
		chains[i] = &memChain{instance: in, signer: signer, now: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	}
	for i := 1; i <= n; i++ {
		for _, c := range chains {
			fmt.Fprintf(&out, "%s", c.record(fmt.Sprintf(`{"voiceAgent":"support-line","namespace":"callcenter","requestId":"req-%08d","route":"model","target":"gemini/gemini-2.5-flash","decision":"allowed","status":200,"latencyMs":412.5,"inputTokens":1200,"outputTokens":300,"costUSD":"0.001110"}`, i)))
			if i%every == 0 {
				out.Write(c.checkpoint(t))
			}
		}
	}
	for _, c := range chains {
		if n%every != 0 {
			out.Write(c.checkpoint(t))
		}
	}
	return out.Bytes()
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// memSink collects delivered lines; while down it refuses batches.
type memSink struct {
	mu      sync.Mutex
	lines   [][]byte
	batches int
	down    atomic.Bool
	calls   atomic.Int64
}

func (s *memSink) Deliver(_ context.Context, lines [][]byte) error {
	s.calls.Add(1)
	if s.down.Load() {
		return errors.New("sink down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range lines {
		s.lines = append(s.lines, bytes.Clone(l))
	}
	s.batches++
	return nil
}

func (s *memSink) stream() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	for _, l := range s.lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

// dedupBySeq keeps the first copy of each (instance, seq) in arrival order, as a
// receiver of an at-least-once stream does, and fails when a later copy differs or
// when an instance's seqs do not arrive in order.
func dedupBySeq(t testing.TB, stream []byte) []byte {
	t.Helper()
	seen := map[string]map[uint64][sha256.Size]byte{}
	last := map[string]uint64{}
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(stream, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		h, err := parseHeader(bytes.TrimSuffix(line, []byte("\n")))
		if err != nil {
			t.Fatalf("receiver got a malformed line %q", line)
		}
		in := string(h.instance)
		if seen[in] == nil {
			seen[in] = map[uint64][sha256.Size]byte{}
		}
		sum := sha256.Sum256(line)
		if prev, ok := seen[in][h.seq]; ok {
			if prev != sum {
				t.Fatalf("seq %d delivered twice with different content", h.seq)
			}
			continue
		}
		if h.seq != last[in]+1 {
			t.Fatalf("instance %s: seq %d arrived after %d (order not preserved or a record missing)", in, h.seq, last[in])
		}
		last[in] = h.seq
		seen[in][h.seq] = sum
		out.Write(line)
	}
	return out.Bytes()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testCA is a CA and a server certificate for 127.0.0.1 and localhost, for the
// receivers in this test process.
type testCA struct {
	caFile string
	server tls.Certificate
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "audit test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return &testCA{
		caFile: writeFile(t, t.TempDir(), "ca.pem", caPEM),
		server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
	}
}
