// Command gateway-bench measures what the gateway adds to a model call, side by side
// with calling the upstream directly and with nginx as a rate-limiting reverse proxy,
// all on loopback with the same open-loop load generator in one run.
//
//	go run ./test/bench/gateway -rate 1000 -duration 10s
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/gateway"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

const reply = `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`

func main() {
	rate := flag.Int("rate", 1000, "requests per second (open loop)")
	duration := flag.Duration("duration", 10*time.Second, "measurement time per target")
	warmup := flag.Duration("warmup", 2*time.Second, "warm-up time per target")
	flag.Parse()

	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, reply)
	}))
	upstream.EnableHTTP2 = false
	upstream.StartTLS()
	defer upstream.Close()

	dir, _ := os.MkdirTemp("", "gateway-bench-")
	defer os.RemoveAll(dir)
	gwURL, stopGW := startGateway(dir, upstream, float64(*rate)*2)
	defer stopGW()
	targets := []struct{ name, url string }{
		{"direct", upstream.URL + "/v1/chat/completions"},
		{"gateway", gwURL + "/model/chat/completions"},
	}
	if nginxURL, stop, err := startNginx(dir, upstream.URL, *rate*2); err != nil {
		fmt.Fprintln(os.Stderr, "nginx not measured:", err)
	} else {
		defer stop()
		targets = append(targets, struct{ name, url string }{"nginx", nginxURL + "/v1/chat/completions"})
	}

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 512, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the bench's own upstream
	}}
	results := map[string]stats{}
	for _, t := range targets {
		load(client, t.url, *rate, *warmup)
		results[t.name] = load(client, t.url, *rate, *duration)
	}
	direct := results["direct"]
	fmt.Printf("open-loop load: %d req/s for %s per target, loopback, 2 cores\n\n", *rate, *duration)
	fmt.Printf("%-8s %8s %10s %10s %10s %12s %12s\n", "target", "ok", "p50", "p99", "max", "added p50", "added p99")
	for _, t := range targets {
		r := results[t.name]
		fmt.Printf("%-8s %8d %10s %10s %10s %12s %12s\n", t.name, r.ok, r.p50, r.p99, r.max, r.p50-direct.p50, r.p99-direct.p99)
		if r.failed > 0 {
			fmt.Printf("         %d requests failed or were limited\n", r.failed)
		}
	}
}

func startGateway(dir string, upstream *httptest.Server, rps float64) (string, func()) {
	key := filepath.Join(dir, "key")
	_ = os.WriteFile(key, []byte("bench-key"), 0o400)
	cfg := &gw.Config{
		Version: gw.ContentsVersion, VoiceAgent: "bench", Namespace: "bench", Replicas: 1,
		Listen: gw.Listen{Proxy: "127.0.0.1:0", Admin: "127.0.0.1:0"},
		Models: []gw.Model{{Provider: "openai", Name: "m", Endpoint: upstream.URL + "/v1", Timeout: gw.Duration{Duration: 10 * time.Second},
			CredentialFile: key, Pricing: &gw.Pricing{InputPerMillionTokens: "0.15", OutputPerMillionTokens: "0.60"}}},
		Limits:   gw.Limits{RequestsPerSecond: rps, Burst: int(rps), MaxConcurrentCalls: 10000, TokensPerMinute: 1e9},
		Budget:   &gw.Budget{Daily: "1000000", OnExceeded: "Block", AlertAtPercent: 80},
		Breaker:  gw.Breaker{FailureThreshold: 5, OpenDuration: gw.Duration{Duration: 30 * time.Second}},
		Audit:    gw.Audit{RedactPII: true, FailurePolicy: "FailClosed", QueueDir: filepath.Join(dir, "audit")},
		StateDir: dir,
	}
	data, _ := cfg.Marshal()
	path := filepath.Join(dir, gw.FileName)
	_ = os.WriteFile(path, data, 0o600)
	audit, _ := os.Create(filepath.Join(dir, "audit.jsonl"))
	// The same keep-alive pool size as nginx's upstream block below.
	transport := upstream.Client().Transport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256
	g, err := gateway.New(gateway.Options{ConfigPath: path, AuditOut: audit, Transport: transport,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: g.Handler()}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Shutdown(context.Background()); audit.Close() }
}

func startNginx(dir, upstreamURL string, rps int) (string, func(), error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/nginx"); e == nil {
			bin = "/usr/sbin/nginx"
		} else {
			return "", nil, fmt.Errorf("nginx is not installed (apt-get install nginx-light)")
		}
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	conf := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fcgi; uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  limit_req_zone $server_name zone=model:1m rate=%[4]dr/s;
  upstream model { server %[3]s; keepalive 256; }
  server {
    listen %[2]s;
    location / {
      limit_req zone=model burst=%[4]d nodelay;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer bench-key";
      proxy_ssl_verify off;
      proxy_pass https://model;
    }
  }
}
`, dir, addr, upstreamURL[len("https://"):], rps)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-c", path, "-p", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return "", nil, fmt.Errorf("nginx did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }, nil
}

type stats struct {
	ok, failed    int
	p50, p99, max time.Duration
}

// load sends requests at a fixed rate regardless of how fast answers come (open loop),
// so that a slow proxy shows up as latency instead of as a lower request rate.
func load(client *http.Client, url string, rate int, d time.Duration) stats {
	interval := time.Second / time.Duration(rate)
	n := int(d / interval)
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := 0
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"Call me at +1 415 555 2671"}]}`)
	start := time.Now()
	for i := 0; i < n; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait) // pacing the open-loop generator
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			el := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || resp.StatusCode != http.StatusOK {
				failed++
				return
			}
			lat = append(lat, el)
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		return stats{failed: failed}
	}
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	return stats{ok: len(lat), failed: failed, p50: pct(0.50), p99: pct(0.99), max: lat[len(lat)-1]}
}
