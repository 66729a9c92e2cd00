// Command realtime-bench measures what the gateway adds to realtime voice sessions,
// side by side with a plain Go WebSocket relay (the same library, no controls) and with
// the upstream reached directly, each its own process on loopback:
//
//	go run ./test/bench/realtime -sessions 100 -fps 50 -duration 30s
//
// Every session sends one OpenAI Realtime input_audio_buffer.append event of 20 ms of
// 16 kHz PCM16 (base64 in JSON) per frame interval, and the upstream answers each with
// an audio delta of the same size. Reported per target: per-frame round-trip latency
// p50/p99 (added against direct), CPU per relayed frame of the proxy process (its
// user+system time over the frames it relayed, both directions), and memory per open
// session (the process's RSS with all sessions open, less its RSS before).
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

var audioFrame = `{"type":"input_audio_buffer.append","audio":"` + base64.StdEncoding.EncodeToString(make([]byte, 640)) + `"}`

func main() {
	sessions := flag.Int("sessions", 100, "concurrent sessions per target")
	fps := flag.Int("fps", 50, "frames per second each session sends (and gets back)")
	duration := flag.Duration("duration", 30*time.Second, "measurement time per target")
	gatewayBin := flag.String("gateway-bin", "bin/voiceagent-operator", "the gateway binary")
	serveUpstream := flag.String("serve-upstream", "", "internal: serve as the upstream on this address")
	certOut := flag.String("cert-out", "", "internal: where -serve-upstream writes its certificate")
	serveRelay := flag.String("serve-relay", "", "internal: serve as the plain relay on this address")
	relayTarget := flag.String("relay-target", "", "internal: the plain relay's upstream")
	flag.Parse()
	switch {
	case *serveUpstream != "":
		runUpstream(*serveUpstream, *certOut)
		return
	case *serveRelay != "":
		runPlainRelay(*serveRelay, *relayTarget)
		return
	}
	dir, _ := os.MkdirTemp("", "realtime-bench-")
	defer os.RemoveAll(dir)

	upAddr, certFile := freeAddr(), filepath.Join(dir, "upstream.pem")
	stopUp, _, err := startSelf(nil, func() bool { _, err := os.Stat(certFile); return err == nil && listening(upAddr) },
		"-serve-upstream", upAddr, "-cert-out", certFile)
	must(err)
	defer stopUp()
	certPEM, _ := os.ReadFile(certFile)

	relayAddr := freeAddr()
	stopRelay, relayPID, err := startSelf([]string{"SSL_CERT_FILE=" + certFile}, func() bool { return listening(relayAddr) },
		"-serve-relay", relayAddr, "-relay-target", "wss://"+upAddr)
	must(err)
	defer stopRelay()

	gwURL, gwPID, stopGW, err := startGateway(*gatewayBin, dir, upAddr, certFile, *sessions)
	must(err)
	defer stopGW()

	targets := []target{
		{name: "direct", url: "wss://" + upAddr + "/v1/realtime?model=gpt-realtime"},
		{name: "gateway", url: "ws://" + strings.TrimPrefix(gwURL, "http://") + "/model/realtime?model=gpt-realtime", pid: gwPID},
		{name: "plain-relay", url: "ws://" + relayAddr + "/v1/realtime?model=gpt-realtime", pid: relayPID},
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	fmt.Printf("%d sessions per target, %d frames/s each way per session, %s per target, loopback, %d cores\n\n",
		*sessions, *fps, *duration, runtime.NumCPU())
	fmt.Printf("%-12s %9s %10s %10s %11s %11s %14s %14s\n", "target", "frames", "p50", "p99", "added p50", "added p99", "CPU per frame", "mem/session")
	var direct result
	perFrame := map[string]time.Duration{}
	for _, t := range targets {
		r := run(t, pool, *sessions, *fps, *duration)
		if t.name == "direct" {
			direct = r
		}
		cpu, mem := "-", "-"
		if t.pid != 0 && r.relayed > 0 {
			perFrame[t.name] = r.cpu / time.Duration(r.relayed)
			cpu = perFrame[t.name].String()
			mem = fmt.Sprintf("%d KiB", r.rssGrowth/int64(*sessions)/1024)
		}
		fmt.Printf("%-12s %9d %10s %10s %11s %11s %14s %14s\n", t.name, r.frames, r.p50, r.p99, r.p50-direct.p50, r.p99-direct.p99, cpu, mem)
		if r.failed > 0 {
			fmt.Printf("             %d sessions failed\n", r.failed)
		}
	}
	if g, p := perFrame["gateway"], perFrame["plain-relay"]; p > 0 {
		fmt.Printf("\nCPU per frame, gateway / plain relay: %.2f\n", float64(g)/float64(p))
	}
}

type target struct {
	name, url string
	pid       int
}

type result struct {
	frames, relayed int64
	failed          int
	p50, p99        time.Duration
	cpu             time.Duration
	rssGrowth       int64
}

// run opens every session, then sends frames at the rate for d, measuring each frame's
// round trip (the upstream answers frames in order).
func run(t target, pool *x509.CertPool, sessions, fps int, d time.Duration) result {
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}
	var rssBefore int64
	if t.pid != 0 {
		rssBefore = rss(t.pid)
	}
	conns := make([]*websocket.Conn, 0, sessions)
	failed := 0
	for i := 0; i < sessions; i++ {
		c, _, err := dialer.Dial(t.url, http.Header{"Authorization": {"Bearer agent"}})
		if err != nil {
			failed++
			continue
		}
		conns = append(conns, c)
	}
	var res result
	res.failed = failed
	cpuBefore := time.Duration(0)
	if t.pid != 0 {
		cpuBefore = treeCPU(t.pid)
	}
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(fps)
	end := time.Now().Add(d)
	var peakRSS int64
	for _, c := range conns {
		wg.Add(2)
		sent := make(chan time.Time, 4*fps)
		go func() { // sender
			defer wg.Done()
			defer close(sent)
			next := time.Now()
			for time.Now().Before(end) {
				sent <- time.Now()
				if err := c.WriteMessage(websocket.TextMessage, []byte(audioFrame)); err != nil {
					return
				}
				next = next.Add(interval)
				time.Sleep(time.Until(next)) // pacing the frames, as a microphone does
			}
		}()
		go func() { // receiver
			defer wg.Done()
			var mine []time.Duration
			for at := range sent {
				if _, _, err := c.ReadMessage(); err != nil {
					break
				}
				mine = append(mine, time.Since(at))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	if t.pid != 0 {
		time.Sleep(d / 2) // halfway: every session is open and busy
		peakRSS = rss(t.pid)
	}
	wg.Wait()
	if t.pid != 0 {
		res.cpu = treeCPU(t.pid) - cpuBefore
		res.rssGrowth = peakRSS - rssBefore
	}
	for _, c := range conns {
		_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		c.Close()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res.frames = int64(len(lat))
	res.relayed = 2 * res.frames
	if len(lat) > 0 {
		res.p50, res.p99 = lat[len(lat)/2], lat[int(0.99*float64(len(lat)-1))]
	}
	return res
}

// runUpstream answers every frame of every session with an audio delta of the same size.
func runUpstream(addr, certOut string) {
	ln, err := net.Listen("tcp", addr)
	must(err)
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		reply := []byte(strings.Replace(audioFrame, "input_audio_buffer.append", "response.output_audio.delta", 1))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
			if err := c.WriteMessage(websocket.TextMessage, reply); err != nil {
				return
			}
		}
	}))
	s.Listener = ln
	s.EnableHTTP2 = false
	s.StartTLS()
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	must(os.WriteFile(certOut+".tmp", pemBytes, 0o600))
	must(os.Rename(certOut+".tmp", certOut))
	select {}
}

// runPlainRelay is the baseline: a WebSocket relay with the same library and no
// controls, copying messages frame by frame both ways.
func runPlainRelay(addr, target string) {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	fmt.Fprintln(os.Stderr, http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := http.Header{"Authorization": {"Bearer bench-key"}}
		u, _, err := websocket.DefaultDialer.Dial(target+r.URL.RequestURI(), h)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		a, err := up.Upgrade(w, r, nil)
		if err != nil {
			u.Close()
			return
		}
		copyWS := func(dst, src *websocket.Conn) {
			for {
				typ, rd, err := src.NextReader()
				if err != nil {
					break
				}
				wr, err := dst.NextWriter(typ)
				if err != nil {
					break
				}
				if _, err := io.Copy(wr, rd); err != nil {
					break
				}
				if wr.Close() != nil {
					break
				}
			}
			dst.Close()
			src.Close()
		}
		go copyWS(u, a)
		copyWS(a, u)
	})))
	os.Exit(1)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// startGateway runs `<bin> gateway` with an OpenAI-format model at the upstream, the
// session limits above the load, limits, budget and audit on.
func startGateway(bin, dir, upAddr, certFile string, sessions int) (string, int, func(), error) {
	if _, err := os.Stat(bin); err != nil {
		return "", 0, nil, fmt.Errorf("%w (make build)", err)
	}
	key := filepath.Join(dir, "key")
	must(os.WriteFile(key, []byte("bench-key"), 0o400))
	proxy, admin := freeAddr(), freeAddr()
	cfg := &gw.Config{
		Version: gw.ContentsVersion, VoiceAgent: "bench", Namespace: "bench", Replicas: 1,
		Listen: gw.Listen{Proxy: proxy, Admin: admin},
		Models: []gw.Model{{Provider: "openai", Name: "gpt-realtime", Endpoint: "https://" + upAddr + "/v1", Timeout: gw.Duration{Duration: 10 * time.Second},
			CredentialFile: key, Pricing: &gw.Pricing{InputPerMillionTokens: "4.00", OutputPerMillionTokens: "16.00"}}},
		Limits:   gw.Limits{RequestsPerSecond: 1e6, Burst: 1e6, MaxConcurrentCalls: 10000, TokensPerMinute: 1e12},
		Voice:    gw.Voice{MaxConcurrentSessions: 10 * sessions, SessionsPerMinute: 1e6},
		Budget:   &gw.Budget{Daily: "1000000", OnExceeded: "Block", AlertAtPercent: 80},
		Breaker:  gw.Breaker{FailureThreshold: 5, OpenDuration: gw.Duration{Duration: 30 * time.Second}},
		Audit:    gw.Audit{RedactPII: true, FailurePolicy: "FailClosed", QueueDir: filepath.Join(dir, "audit")},
		StateDir: dir,
	}
	data, err := cfg.Marshal()
	if err != nil {
		return "", 0, nil, err
	}
	path := filepath.Join(dir, gw.FileName)
	must(os.WriteFile(path, data, 0o600))
	out, _ := os.Create(filepath.Join(dir, "gateway-stdout.jsonl"))
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "gateway", "--config", path)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+certFile, "POD_NAME=bench-0")
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait(); out.Close() }
	if !waitUntil(10*time.Second, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		stop()
		return "", 0, nil, fmt.Errorf("gateway not ready: %s", stderr.String())
	}
	return "http://" + proxy, cmd.Process.Pid, stop, nil
}

// startSelf runs this program again with args, waits until ready holds; stop kills it.
func startSelf(env []string, ready func() bool, args ...string) (func(), int, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, 0, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	if !waitUntil(10*time.Second, ready) {
		stop()
		return nil, 0, fmt.Errorf("%s not ready: %s", args[0], stderr.String())
	}
	return stop, cmd.Process.Pid, nil
}

// waitUntil polls ready until it holds or d has passed.
func waitUntil(d time.Duration, ready func() bool) bool {
	deadline := time.Now().Add(d)
	for !ready() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling, with a deadline
	}
	return true
}

func freeAddr() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
}

func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// clockTicks is Linux's USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
const clockTicks = 100

// treeCPU is the user+system CPU time of pid and its children so far.
func treeCPU(root int) time.Duration {
	var total time.Duration
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		rest := string(data[bytes.LastIndexByte(data, ')')+2:])
		var state string
		var ppid, pgrp, session, tty, tpgid int
		var flags, minflt, cminflt, majflt, cmajflt, utime, stime uint64
		if _, err := fmt.Sscan(rest, &state, &ppid, &pgrp, &session, &tty, &tpgid, &flags, &minflt, &cminflt, &majflt, &cmajflt, &utime, &stime); err != nil {
			continue
		}
		if pid == root || ppid == root {
			total += time.Duration(utime+stime) * time.Second / clockTicks
		}
	}
	return total
}

// rss is the resident set of pid in bytes.
func rss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
