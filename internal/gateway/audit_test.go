package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// siemReceiver is an HTTPS webhook receiver that can be taken down.
type siemReceiver struct {
	*httptest.Server
	caFile string
	down   atomic.Bool
	mu     sync.Mutex
	lines  []byte
}

func newSIEMReceiver(t *testing.T) *siemReceiver {
	r := &siemReceiver{}
	r.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var batch []json.RawMessage
		body, _ := io.ReadAll(req.Body)
		if err := json.Unmarshal(body, &batch); err != nil {
			http.Error(w, "bad batch", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rec := range batch {
			r.lines = append(append(r.lines, rec...), '\n')
		}
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	r.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(r.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *siemReceiver) stream() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.lines)
}

func getAdmin(t *testing.T, g *Gateway, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	g.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d", path, rec.Code)
	}
	return rec.Body.String()
}

func auditStatus(t *testing.T, g *Gateway) audit.Status {
	var st audit.Status
	if err := json.Unmarshal([]byte(getAdmin(t, g, "/audit/status")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// With the SIEM down, the queue (4 records: the start's configuration record and 3
// calls) fills: FailClosed refuses further calls
// with 503 before they reach the provider, FailOpen serves them and counts the records
// it could not keep. Once the SIEM is back everything kept arrives, chained and signed,
// and the next record declares what was dropped.
func TestAuditFailurePolicyWhenTheQueueIsFull(t *testing.T) {
	tests := []struct {
		policy    string
		wantCodes []int
	}{
		{"FailClosed", []int{200, 200, 200, 503, 503}},
		{"FailOpen", []int{200, 200, 200, 200, 200}},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			siem := newSIEMReceiver(t)
			siem.down.Store(true)
			key := []byte("checkpoint-key-0123456789abcdef")
			tg := startGateway(t, "openai", func(c *gw.Config, _ *fakeProviderUpstream) {
				c.Audit.FailurePolicy = tt.policy
				c.Audit.MaxQueueRecords = 4
				c.Audit.CheckpointKeyFile = filepath.Join(filepath.Dir(c.Models[0].CredentialFile), "checkpoint-key")
				if err := os.WriteFile(c.Audit.CheckpointKeyFile, key, 0o400); err != nil {
					t.Fatal(err)
				}
				c.Audit.Sinks = []gw.Sink{{Name: "soc", Type: "webhook", URL: siem.URL + "/ingest", CAFile: siem.caFile}}
			})
			for i, want := range tt.wantCodes {
				resp := tg.post(t, "/model/chat/completions", openaiBody, nil)
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != want {
					t.Fatalf("call %d: status %d, want %d: %s", i, resp.StatusCode, want, body)
				}
				if want == 503 && (!strings.Contains(string(body), "audit_unavailable") || resp.Header.Get("Retry-After") == "") {
					t.Fatalf("refusal without an audit reason or Retry-After: %s", body)
				}
			}
			served := int64(0)
			for _, c := range tt.wantCodes {
				if c == 200 {
					served++
				}
			}
			if got := tg.upstream.calls.Load(); got != served {
				t.Fatalf("the provider got %d calls, want %d", got, served)
			}
			waitForCond(t, "failed deliveries", func() bool { return auditStatus(t, tg.Gateway).Sinks[0].Failures > 0 })
			st := auditStatus(t, tg.Gateway)
			if st.Dropped != 2 || st.Sinks[0].Name != "soc" || st.Sinks[0].Backlog != 4 || st.Sinks[0].LastSuccess != nil {
				t.Fatalf("status during the outage: %+v", st)
			}
			// The backlog gauge follows the background fsync (Durability Write), so poll.
			waitForCond(t, "the metrics to show the drops and the backlog", func() bool {
				m := getAdmin(t, tg.Gateway, "/metrics")
				return strings.Contains(m, "voiceagent_gateway_audit_dropped_total 2") &&
					strings.Contains(m, `voiceagent_gateway_audit_backlog_records{sink="soc"} 4`)
			})

			siem.down.Store(false)
			waitForCond(t, "the backlog to drain", func() bool { return auditStatus(t, tg.Gateway).Sinks[0].Backlog == 0 })
			if s := tg.post(t, "/model/chat/completions", openaiBody, nil).StatusCode; s != 200 {
				t.Fatalf("after recovery: %d", s)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tg.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			rep, err := audit.Verify(bytes.NewReader(siem.stream()), audit.VerifyOptions{HMACKey: key})
			if err != nil || !rep.OK || rep.Records != 5 || rep.Dropped != 2 {
				t.Fatalf("the SIEM's stream: %v %s", err, rep)
			}
			if !bytes.Contains(siem.stream(), []byte(`"droppedBefore":2,"payload":{`)) {
				t.Fatalf("no record declares the drops:\n%s", siem.stream())
			}
		})
	}
}

func waitForCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval
	}
}
