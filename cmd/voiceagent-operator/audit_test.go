package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
)

// TestMain lets the tests run the real main() in a child process, to see its exit code.
func TestMain(m *testing.M) {
	if os.Getenv("VOICEAGENT_OPERATOR_RUN_MAIN") == "1" {
		os.Args = append([]string{"voiceagent-operator"}, strings.Fields(os.Getenv("VOICEAGENT_OPERATOR_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// gatewayStream is what a stdout sink received from a real audit log: 20 records with a
// checkpoint every 5, signed with the key in keyFile.
func gatewayStream(t *testing.T, keyFile string) [][]byte {
	t.Helper()
	var out lockedBuffer
	sink, err := audit.NewSink(audit.SinkConfig{Name: "stdout", Type: audit.SinkStdout, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(audit.Options{
		Dir: t.TempDir(), Pod: "support-line-0", Signer: audit.NewHMACSigner(keyFile),
		CheckpointEvery: 5, CheckpointInterval: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, []audit.NamedSink{{Name: "stdout", Sink: sink}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := l.Append([]byte(fmt.Sprintf(`{"requestId":"req-%d","decision":"allowed","status":200}`, i)), false); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	for _, line := range bytes.SplitAfter(out.b.Bytes(), []byte("\n")) {
		if len(line) > 0 {
			lines = append(lines, line)
		}
	}
	if len(lines) != 24 {
		t.Fatalf("%d lines, want 20 records and 4 checkpoints", len(lines))
	}
	return lines
}

// appendForged adds a record chained to the last line, as anyone without the key can.
func appendForged(lines [][]byte, checkpoint bool) [][]byte {
	last := bytes.TrimSuffix(lines[len(lines)-1], []byte("\n"))
	var seq int
	var inst string
	if _, err := fmt.Sscanf(string(last), `{"seq":%d,`, &seq); err != nil {
		panic(fmt.Sprintf("appendForged: no seq in the last line: %v", err)) // a broken fixture, not a verdict
	}
	inst = strings.SplitN(strings.SplitN(string(last), `"instance":"`, 2)[1], `"`, 2)[0]
	link := func(prev []byte, body string) []byte {
		seq++
		sum := sha256.Sum256(prev)
		return []byte(fmt.Sprintf(`{"seq":%d,"instance":"%s","prev":"%s",%s}`, seq, inst, hex.EncodeToString(sum[:]), body))
	}
	rec := link(last, `"kind":"record","time":"2026-11-24T12:00:00.000000Z","payload":{"decision":"allowed","note":"forged"}`)
	lines = append(lines, append(rec, '\n'))
	if checkpoint {
		sum := sha256.Sum256(rec)
		cp := link(rec, fmt.Sprintf(`"kind":"checkpoint","time":"2026-11-24T12:00:00.000000Z","checkpoint":{"seq":%d,"hash":"%s","alg":"HMAC-SHA256","sig":"%s"}`,
			seq, hex.EncodeToString(sum[:]), strings.Repeat("ab", 32)))
		lines = append(lines, append(cp, '\n'))
	}
	return lines
}

func TestAuditVerifyCommand(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("cli-test-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(dir, "other")
	if err := os.WriteFile(otherKey, []byte("another-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := gatewayStream(t, keyFile)
	tests := []struct {
		name    string
		tamper  func([][]byte) [][]byte
		args    []string // before the file
		code    int
		verdict string
	}{
		{"intact", nil, nil, 0, "OK: 20 records and 4 checkpoints"},
		{"one record deleted", func(l [][]byte) [][]byte { return append(l[:3:3], l[4:]...) }, nil, 1, "first bad seq 4 "},
		{"one record altered", func(l [][]byte) [][]byte {
			l[7] = bytes.Replace(l[7], []byte(`"status":200`), []byte(`"status":403`), 1)
			return l
		}, nil, 1, "first bad seq 8 "},
		{"two records swapped", func(l [][]byte) [][]byte { l[12], l[13] = l[13], l[12]; return l }, nil, 1, "reorder"},
		{"tail cut", func(l [][]byte) [][]byte { return l[:len(l)-2] }, nil, 1, "truncated"},
		{"forged record appended", func(l [][]byte) [][]byte { return appendForged(l, false) }, nil, 1, "truncated"},
		{"forged record and checkpoint appended", func(l [][]byte) [][]byte { return appendForged(l, true) }, nil, 1, "bad_signature"},
		{"verified with another key", nil, []string{"--hmac-key-file", otherKey}, 1, "bad_signature"},
		{"without a key", nil, []string{}, 0, "signatures NOT checked"},
		{"two keys", nil, []string{"--hmac-key-file", keyFile, "--ed25519-public-key-file", keyFile}, 2, ""},
		{"missing key file", nil, []string{"--hmac-key-file", filepath.Join(dir, "nope")}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := append([][]byte{}, base...)
			if tt.tamper != nil {
				lines = tt.tamper(lines)
			}
			file := filepath.Join(t.TempDir(), "audit.jsonl")
			if err := os.WriteFile(file, bytes.Join(lines, nil), 0o600); err != nil {
				t.Fatal(err)
			}
			args := tt.args
			if args == nil {
				args = []string{"--hmac-key-file", keyFile}
			}
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "VOICEAGENT_OPERATOR_RUN_MAIN=1",
				"VOICEAGENT_OPERATOR_ARGS="+strings.Join(append(append([]string{"audit", "verify"}, args...), file), " "))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(stdout.String(), tt.verdict) {
				t.Fatalf("exit %d (want %d), stdout %q, stderr %q", code, tt.code, stdout.String(), stderr.String())
			}
			if tt.code == 1 && (!strings.HasPrefix(stdout.String(), "FAIL: first bad seq") || strings.Count(stdout.String(), "\n") != 1) {
				t.Fatalf("verdict is not one FAIL line: %q", stdout.String())
			}
		})
	}
}

func TestAuditVerifyReadsStdin(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("stdin-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	stream := bytes.Join(gatewayStream(t, keyFile), nil)
	var stdout, stderr bytes.Buffer
	if code := runAudit([]string{"verify", "--hmac-key-file", keyFile, "-"}, bytes.NewReader(stream), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	if code := runAudit([]string{"frobnicate"}, nil, &stdout, &stderr); code != 2 {
		t.Fatalf("unknown tool: exit %d", code)
	}
}
