// Command gateway-bench measures what the gateway adds to a model call, side by side
// with calling the upstream directly and with nginx as a rate-limiting reverse proxy,
// all on loopback with the same open-loop load generator in one run.
//
//	go run ./test/bench/gateway -rate 1000 -duration 10s
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/gateway"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

const reply = `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`

func main() {
	rate := flag.Int("rate", 1000, "requests per second (open loop)")
	duration := flag.Duration("duration", 10*time.Second, "measurement time per target")
	warmup := flag.Duration("warmup", 2*time.Second, "warm-up time per target")
	durability := flag.String("durability", gw.AuditDurabilityWrite, "the gateway's audit durability: Write or Fsync")
	only := flag.String("only", "", "measure only this target besides direct (gateway or nginx)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the measured run to this file (with -gateway-bin \"\", it covers the gateway)")
	upstreamProcess := flag.Bool("upstream-process", true, "run the upstream as its own process, as a provider is; false serves it from the load generator's process, where a direct call never has to wake another process and so looks cheaper than it is")
	serveUpstream := flag.String("serve-upstream", "", "internal: serve as the upstream on this address (the bench starts itself so)")
	upstreamCertOut := flag.String("upstream-cert-out", "", "internal: where -serve-upstream writes its certificate")
	reverseProxyListen := flag.String("serve-go-reverseproxy", "", "internal: serve as the plain Go reverse proxy on this address (the bench starts itself so)")
	reverseProxyUpstream := flag.String("reverseproxy-upstream", "", "internal: the upstream of -serve-go-reverseproxy")
	gatewayBin := flag.String("gateway-bin", "bin/voiceagent-operator", "run the gateway as its own process from this binary, as in a pod and like nginx; empty runs it inside the bench process")
	throughput := flag.Int("throughput", 0, "measure throughput instead: this many clients per target, each sending its next request as soon as the last is answered (closed loop)")
	withStore := flag.Bool("limit-store", true, "also measure target gateway-store: the gateway with its limits in a redis-server on loopback over TLS (the distribution's package; with -gateway-bin), with Redis round trips and redis-server CPU per call")
	podShape := flag.Bool("pod-shape", true, "also measure target gateway-pod: the gateway as it runs in its own pods, TLS on the proxy port and the agent token on every call (with -gateway-bin)")
	compareBin := flag.String("compare-bin", "", "also run a gateway from this binary (another build) as target gateway-compare, measured in the same turns: an A/B test under the same noise")
	slice := flag.Duration("slice", 100*time.Millisecond, "targets take turns of this length, so that the machine's noise falls on all of them alike")
	flag.Parse()
	if *reverseProxyListen != "" {
		serveGoReverseProxy(*reverseProxyListen, *reverseProxyUpstream)
		return
	}

	// The rate limits are on, above the offered load: nothing is refused.
	limit := *rate * 2
	if *throughput > 0 {
		limit = 1_000_000
	}
	if *serveUpstream != "" {
		serveUpstreamProcess(*serveUpstream, *upstreamCertOut)
		return
	}

	dir, _ := os.MkdirTemp("", "gateway-bench-")
	defer os.RemoveAll(dir)
	var upstream *benchUpstream
	if *upstreamProcess {
		u, err := startUpstreamProcess(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "upstream:", err)
			os.Exit(1)
		}
		upstream = u
	} else {
		upstream = startUpstreamInProcess()
	}
	defer upstream.stop()
	var gwURL string
	var stopGW func()
	if *gatewayBin != "" {
		u, stop, err := startGatewayProcess(*gatewayBin, dir, upstream, float64(limit), *durability)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gateway:", err)
			os.Exit(1)
		}
		gwURL, stopGW = u, stop
	} else {
		gwURL, stopGW = startGateway(dir, upstream, float64(limit), *durability)
	}
	defer stopGW()
	targets := []target{
		{name: "direct", url: upstream.URL + "/v1/chat/completions"},
		{name: "gateway", url: gwURL + "/model/chat/completions"},
	}
	if *gatewayBin != "" && *podShape {
		pdir := filepath.Join(dir, "pod")
		if err := os.Mkdir(pdir, 0o700); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		u, token, stop, err := startPodShapedGateway(*gatewayBin, pdir, upstream, float64(limit), *durability)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gateway-pod:", err)
			os.Exit(1)
		}
		defer stop()
		targets = append(targets, target{name: "gateway-pod", url: u + "/model/chat/completions", token: token})
	}
	var store *benchRedis
	if *gatewayBin != "" && *withStore {
		sdir := filepath.Join(dir, "store")
		if err := os.Mkdir(sdir, 0o700); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r, err := startBenchRedis(sdir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gateway-store not measured:", err)
		} else {
			defer r.stop()
			u, stop, err := startGatewayProcessShaped(*gatewayBin, sdir, upstream, float64(limit), *durability, "", r.configure(float64(limit)))
			if err != nil {
				fmt.Fprintln(os.Stderr, "gateway-store:", err)
				os.Exit(1)
			}
			defer stop()
			store = r
			targets = append(targets, target{name: "gateway-store", url: u + "/model/chat/completions"})
		}
	}
	if *compareBin != "" {
		cdir := filepath.Join(dir, "compare")
		if err := os.Mkdir(cdir, 0o700); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		u, stop, err := startGatewayProcess(*compareBin, cdir, upstream, float64(limit), *durability)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gateway-compare:", err)
			os.Exit(1)
		}
		defer stop()
		targets = append(targets, target{name: "gateway-compare", url: u + "/model/chat/completions"})
	}
	if *only == "" || *only == "go-reverseproxy" {
		u, stop, err := startGoReverseProxy(dir, upstream)
		if err != nil {
			fmt.Fprintln(os.Stderr, "go-reverseproxy not measured:", err)
		} else {
			defer stop()
			targets = append(targets, target{name: "go-reverseproxy", url: u + "/v1/chat/completions"})
		}
	}
	if *only == "gateway" || *only == "go-reverseproxy" {
		// nginx not wanted in this run
	} else if nginxURL, stop, err := startNginx(dir, upstream.URL, limit); err != nil {
		fmt.Fprintln(os.Stderr, "nginx not measured:", err)
	} else {
		defer stop()
		targets = append(targets, target{name: "nginx", url: nginxURL + "/v1/chat/completions"})
	}

	if *only == "gateway" || *only == "go-reverseproxy" || *only == "nginx" {
		// haproxy not wanted in this run
	} else if haproxyURL, stop, err := startHAProxy(dir, upstream.URL, limit); err != nil {
		fmt.Fprintln(os.Stderr, "haproxy not measured:", err)
	} else {
		defer stop()
		targets = append(targets, target{name: "haproxy", url: haproxyURL + "/v1/chat/completions"})
	}

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 512, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the bench's own upstream
	}}
	var measured []target
	for _, t := range targets {
		if *only == "" || t.name == "direct" || t.name == *only || t.name == "gateway-compare" || (*only == "gateway" && (t.name == "gateway-pod" || t.name == "gateway-store")) {
			measured = append(measured, t)
		}
	}
	if *throughput > 0 {
		saturate(client, measured, *throughput, *warmup, *slice)
		results := saturate(client, measured, *throughput, *duration, *slice)
		direct := results["direct"]
		fmt.Printf("closed loop: %d clients per target, %s each, in turns of %s, loopback, %d cores (load generator, upstream and proxy share them)\n\n", *throughput, *duration, *slice, runtime.NumCPU())
		fmt.Printf("%-16s %8s %10s %10s %10s %12s\n", "target", "ok", "req/s", "p50", "p99", "of direct")
		for _, t := range measured {
			r := results[t.name]
			fmt.Printf("%-16s %8d %10.0f %10s %10s %11.0f%%\n", t.name, r.ok, r.perSecond, r.p50, r.p99, 100*r.perSecond/direct.perSecond)
			if r.failed > 0 {
				fmt.Printf("                 %d requests failed or were limited\n", r.failed)
			}
		}
		return
	}
	load(client, measured, *rate, *warmup, *slice)
	var stopProfile func()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
	}
	cpuBefore := proxyCPU(measured)
	var storeBefore redisCounters
	if store != nil {
		storeBefore = store.counters()
	}
	results := load(client, measured, *rate, *duration, *slice)
	cpuAfter := proxyCPU(measured)
	var storeAfter redisCounters
	if store != nil {
		storeAfter = store.counters()
	}
	if stopProfile != nil {
		stopProfile()
	}
	direct := results["direct"]
	where := "its own process"
	if !*upstreamProcess {
		where = "the load generator's process"
	}
	fmt.Printf("open-loop load: %d req/s per target for %s each, in turns of %s, loopback, %d cores; upstream in %s\n\n", *rate, *duration, *slice, runtime.NumCPU(), where)
	fmt.Printf("%-16s %8s %10s %10s %10s %12s %12s %14s\n", "target", "ok", "p50", "p99", "max", "added p50", "added p99", "CPU per call")
	perCall := map[string]time.Duration{}
	for _, t := range measured {
		r := results[t.name]
		cpu := "-"
		if before, ok := cpuBefore[t.name]; ok && r.ok > 0 {
			perCall[t.name] = (cpuAfter[t.name] - before) / time.Duration(r.ok)
			cpu = perCall[t.name].String()
		}
		fmt.Printf("%-16s %8d %10s %10s %10s %12s %12s %14s\n", t.name, r.ok, r.p50, r.p99, r.max, r.p50-direct.p50, r.p99-direct.p99, cpu)
		if r.failed > 0 {
			fmt.Printf("                 %d requests failed or were limited\n", r.failed)
		}
	}
	// CPU per call is the proxy process's own user+system time over the calls it
	// served: scheduling noise moves it far less than a p99.
	if g, ok := perCall["gateway"]; ok {
		fmt.Println()
		for _, other := range []string{"gateway-store", "go-reverseproxy", "nginx", "haproxy"} {
			if o, ok := perCall[other]; ok && o > 0 {
				fmt.Printf("CPU per call, gateway / %s: %.2f\n", other, float64(g)/float64(o))
			}
		}
	}
	if r, ok := results["gateway-store"]; ok && store != nil && r.ok > 0 {
		trips := storeAfter.roundTrips - storeBefore.roundTrips
		fmt.Printf("\nlimit store: %d Redis round trips for %d calls of gateway-store (%.3f per call); redis-server CPU per call %s\n",
			trips, r.ok, float64(trips)/float64(r.ok), (storeAfter.cpu-storeBefore.cpu)/time.Duration(r.ok))
		if g, ok := results["gateway"]; ok {
			fmt.Printf("gateway-store vs gateway (per-replica limits): added p50 %s, added p99 %s\n", r.p50-g.p50, r.p99-g.p99)
		}
	}
}

// proxyPIDs are the processes of the proxies measured, by base URL, so that the CPU
// each spends can be read from /proc.
var proxyPIDs = map[string]int{}

// proxyCPU reads the user+system CPU time so far of each target's process and its
// children (nginx's and haproxy's workers).
func proxyCPU(targets []target) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, t := range targets {
		for base, pid := range proxyPIDs {
			if len(t.url) >= len(base) && t.url[:len(base)] == base {
				out[t.name] = treeCPU(pid)
			}
		}
	}
	return out
}

// clockTicks is Linux's USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
const clockTicks = 100

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
		// The command name (field 2) can hold spaces: fields are counted after its ')'.
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

// startHAProxy runs Debian's haproxy as a second well-known proxy, with a request-rate
// limit like nginx's limit_req and kept-alive upstream connections.
func startHAProxy(dir, upstreamURL string, rps int) (string, func(), error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/haproxy"); e == nil {
			bin = "/usr/sbin/haproxy"
		} else {
			return "", nil, fmt.Errorf("haproxy is not installed (apt-get install haproxy)")
		}
	}
	addr := freeAddr()
	conf := fmt.Sprintf(`global
  maxconn 4096
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend model
  bind %[1]s
  stick-table type integer size 1 expire 10s store http_req_rate(1s)
  http-request track-sc0 int(1)
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt %[3]d }
  default_backend upstream
backend upstream
  http-request set-header Authorization "Bearer bench-key"
  server model %[2]s ssl verify none
`, addr, upstreamURL[len("https://"):], rps)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	if !waitUntil(5*time.Second, func() bool { return listening(addr) }) {
		_ = cmd.Process.Kill()
		return "", nil, fmt.Errorf("haproxy did not start: %s", stderr.String())
	}
	proxyPIDs["http://"+addr] = cmd.Process.Pid
	return "http://" + addr, func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }, nil
}

// target is one proxy measured; token, when set, is sent as the agent token (Bearer).
type target struct{ name, url, token string }

// benchConfig is the gateway configuration measured: limits, budget, breaker and a
// FailClosed audit trail with PII redaction all on.
func benchConfig(dir, endpoint, proxy, admin string, rps float64, durability string) *gw.Config {
	key := filepath.Join(dir, "key")
	_ = os.WriteFile(key, []byte("bench-key"), 0o400)
	return &gw.Config{
		Version: gw.ContentsVersion, VoiceAgent: "bench", Namespace: "bench", Replicas: 1,
		Listen: gw.Listen{Proxy: proxy, Admin: admin},
		Models: []gw.Model{{Provider: "openai", Name: "m", Endpoint: endpoint + "/v1", Timeout: gw.Duration{Duration: 10 * time.Second},
			CredentialFile: key, Pricing: &gw.Pricing{InputPerMillionTokens: "0.15", OutputPerMillionTokens: "0.60"}}},
		Limits:   gw.Limits{RequestsPerSecond: rps, Burst: int(rps), MaxConcurrentCalls: 10000, TokensPerMinute: 1e9},
		Budget:   &gw.Budget{Daily: "1000000", OnExceeded: "Block", AlertAtPercent: 80},
		Breaker:  gw.Breaker{FailureThreshold: 5, OpenDuration: gw.Duration{Duration: 30 * time.Second}},
		Audit:    gw.Audit{RedactPII: true, FailurePolicy: "FailClosed", QueueDir: filepath.Join(dir, "audit"), Durability: durability},
		StateDir: dir,
	}
}

// startGatewayProcess runs `<bin> gateway --config FILE` with the upstream's test CA
// trusted through SSL_CERT_FILE, and waits for /readyz.
func startGatewayProcess(bin, dir string, upstream *benchUpstream, rps float64, durability string) (string, func(), error) {
	return startGatewayProcessShaped(bin, dir, upstream, rps, durability, "", nil)
}

// startPodShapedGateway runs the gateway as it runs in its own pods: the agent token
// required on every call, and TLS on the proxy port (a certificate made here, as
// cert-manager's would be). It returns the base URL and the token.
func startPodShapedGateway(bin, dir string, upstream *benchUpstream, rps float64, durability string) (string, string, func(), error) {
	token := "vat_bench-agent-token-0123456789abcdef"
	u, stop, err := startGatewayProcessShaped(bin, dir, upstream, rps, durability, token, nil)
	return u, token, stop, err
}

func startGatewayProcessShaped(bin, dir string, upstream *benchUpstream, rps float64, durability, token string, mutate func(*gw.Config)) (string, func(), error) {
	if _, err := os.Stat(bin); err != nil {
		return "", nil, fmt.Errorf("%w (make build)", err)
	}
	proxy, admin := freeAddr(), freeAddr()
	cfg := benchConfig(dir, upstream.URL, proxy, admin, rps, durability)
	if mutate != nil {
		mutate(cfg)
	}
	scheme := "http://"
	if token != "" {
		tokenFile := filepath.Join(dir, "agent-token")
		if err := os.WriteFile(tokenFile, []byte(token), 0o400); err != nil {
			return "", nil, err
		}
		certFile, keyFile, err := writeServingCert(dir)
		if err != nil {
			return "", nil, err
		}
		cfg.AgentAuth = &gw.AgentAuth{TokenFile: tokenFile}
		cfg.Listen.ProxyTLS = &gw.TLSFiles{CertFile: certFile, KeyFile: keyFile}
		scheme = "https://"
	}
	data, err := cfg.Marshal()
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, gw.FileName)
	ca := filepath.Join(dir, "upstream-ca.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(ca, upstream.certPEM, 0o600); err != nil {
		return "", nil, err
	}
	out, err := os.Create(filepath.Join(dir, "gateway-stdout.jsonl")) // the stdout audit sink
	if err != nil {
		return "", nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "gateway", "--config", path)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca, "POD_NAME=bench-0")
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		out.Close()
		if cmd.ProcessState != nil && !cmd.ProcessState.Success() {
			fmt.Fprint(os.Stderr, "gateway: ", cmd.ProcessState, "\n", stderr.String())
		}
	}
	proxyPIDs[scheme+proxy] = cmd.Process.Pid
	ready := waitUntil(10*time.Second, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if !ready {
		stop()
		return "", nil, fmt.Errorf("not ready after 10s: %s", stderr.String())
	}
	return scheme + proxy, stop, nil
}

// writeServingCert writes a self-signed ECDSA P-256 serving certificate for 127.0.0.1,
// the kind cert-manager issues the gateway Service.
func writeServingCert(dir string) (string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench-gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile := filepath.Join(dir, "proxy-tls.crt"), filepath.Join(dir, "proxy-tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func freeAddr() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
}

func startGateway(dir string, upstream *benchUpstream, rps float64, durability string) (string, func()) {
	cfg := benchConfig(dir, upstream.URL, "127.0.0.1:0", "127.0.0.1:0", rps, durability)
	data, _ := cfg.Marshal()
	path := filepath.Join(dir, gw.FileName)
	_ = os.WriteFile(path, data, 0o600)
	audit, _ := os.Create(filepath.Join(dir, "audit.jsonl"))
	// The same keep-alive pool size as nginx's upstream block below.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = upstream.tlsConfig()
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
	if !waitUntil(5*time.Second, func() bool { return listening(addr) }) {
		_ = cmd.Process.Kill()
		return "", nil, fmt.Errorf("nginx did not start: %s", stderr.String())
	}
	proxyPIDs["http://"+addr] = cmd.Process.Pid
	// SIGTERM, not SIGKILL: nginx's master stops its workers only when it is told to.
	return "http://" + addr, func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }, nil
}

// callBody is the model call every target gets, with a phone number for the redactor.
var callBody = []byte(`{"model":"m","messages":[{"role":"user","content":"Call me at +1 415 555 2671"}]}`)

// call makes one model call and reports how long it took and whether it was answered
// 200 OK.
func call(client *http.Client, t target) (time.Duration, bool) {
	t0 := time.Now()
	req, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader(callBody))
	if err != nil {
		return 0, false
	}
	req.Header.Set("Content-Type", "application/json")
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(t0), resp.StatusCode == http.StatusOK
}

type stats struct {
	ok, failed    int
	p50, p99, max time.Duration
	perSecond     float64 // answered calls per second of the target's turns (closed loop)
}

// load sends requests at a fixed rate regardless of how fast answers come (open loop),
// so that a slow proxy shows up as latency instead of as a lower request rate. The
// targets take turns of one slice each until every target has had d: a machine that is
// noisy for a while (other tenants, a host's own work) then weighs on every target
// alike, instead of on whichever happened to be measured at that moment.
func load(client *http.Client, targets []target, rate int, d, slice time.Duration) map[string]stats {
	interval := time.Second / time.Duration(rate)
	perSlice := max(1, int(slice/interval))
	turns := max(1, int(d/slice))
	lat := make([][]time.Duration, len(targets))
	failed := make([]int, len(targets))
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	i := 0
	for turn := 0; turn < turns*len(targets); turn++ {
		ti := turn % len(targets)
		tg := targets[ti]
		for k := 0; k < perSlice; k, i = k+1, i+1 {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait) // pacing the open-loop generator
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				el, ok := call(client, tg)
				mu.Lock()
				defer mu.Unlock()
				if !ok {
					failed[ti]++
					return
				}
				lat[ti] = append(lat[ti], el)
			}()
		}
	}
	wg.Wait()
	return summarize(targets, lat, failed)
}

// saturate measures throughput: in each of a target's turns, clients goroutines send
// request after request until the turn ends; the target's rate is its answered calls
// over the time its turns took (a turn ends when its last call is answered).
func saturate(client *http.Client, targets []target, clients int, d, slice time.Duration) map[string]stats {
	turns := max(1, int(d/slice))
	lat := make([][]time.Duration, len(targets))
	failed := make([]int, len(targets))
	busy := make([]time.Duration, len(targets))
	var mu sync.Mutex
	for turn := 0; turn < turns*len(targets); turn++ {
		ti := turn % len(targets)
		tg := targets[ti]
		start := time.Now()
		end := start.Add(slice)
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				bad := 0
				for time.Now().Before(end) {
					if el, ok := call(client, tg); ok {
						mine = append(mine, el)
					} else {
						bad++
					}
				}
				mu.Lock()
				defer mu.Unlock()
				lat[ti] = append(lat[ti], mine...)
				failed[ti] += bad
			}()
		}
		wg.Wait()
		busy[ti] += time.Since(start)
	}
	out := summarize(targets, lat, failed)
	for ti, t := range targets {
		r := out[t.name]
		r.perSecond = float64(r.ok) / busy[ti].Seconds()
		out[t.name] = r
	}
	return out
}

// summarize sorts each target's latencies into its stats.
func summarize(targets []target, lat [][]time.Duration, failed []int) map[string]stats {
	out := make(map[string]stats, len(targets))
	for ti, t := range targets {
		l := lat[ti]
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		if len(l) == 0 {
			out[t.name] = stats{failed: failed[ti]}
			continue
		}
		pct := func(p float64) time.Duration { return l[int(p*float64(len(l)-1))] }
		out[t.name] = stats{ok: len(l), failed: failed[ti], p50: pct(0.50), p99: pct(0.99), max: l[len(l)-1]}
	}
	return out
}

// startGoReverseProxy runs this program again as a plain net/http reverse proxy
// (httputil.ReverseProxy, none of the gateway's controls), as its own process: the
// baseline of what any Go proxy adds on the machine.
func startGoReverseProxy(dir string, upstream *benchUpstream) (string, func(), error) {
	ca := filepath.Join(dir, "reverseproxy-ca.pem")
	if err := os.WriteFile(ca, upstream.certPEM, 0o600); err != nil {
		return "", nil, err
	}
	addr := freeAddr()
	stop, pid, err := startSelf([]string{"SSL_CERT_FILE=" + ca}, func() bool { return listening(addr) },
		"-serve-go-reverseproxy", addr, "-reverseproxy-upstream", upstream.URL)
	if err != nil {
		return "", nil, err
	}
	proxyPIDs["http://"+addr] = pid
	return "http://" + addr, stop, nil
}

// startSelf runs this program again with args (and env added to this process's), as
// one of the bench's own processes, and waits until ready holds. stop kills it.
func startSelf(env []string, ready func() bool, args ...string) (stop func(), pid int, err error) {
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
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	if !waitUntil(10*time.Second, ready) {
		stop()
		return nil, 0, fmt.Errorf("%s not ready after 10s: %s", args[0], stderr.String())
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

func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func serveGoReverseProxy(listen, upstreamURL string) {
	u, err := url.Parse(upstreamURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256 // as the gateway's and nginx's upstream pools
	rp := &httputil.ReverseProxy{Transport: transport, Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Header.Set("Authorization", "Bearer bench-key")
	}}
	fmt.Fprintln(os.Stderr, http.ListenAndServe(listen, rp))
	os.Exit(1)
}

// benchUpstream is the model provider of the bench: a TLS server answering every call
// with one chat completion.
type benchUpstream struct {
	URL     string
	certPEM []byte
	stop    func()
}

func (u *benchUpstream) tlsConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(u.certPEM)
	return &tls.Config{RootCAs: pool}
}

func newUpstreamServer() *httptest.Server {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, reply)
	}))
	s.EnableHTTP2 = false
	return s
}

func startUpstreamInProcess() *benchUpstream {
	s := newUpstreamServer()
	s.StartTLS()
	return &benchUpstream{URL: s.URL, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), stop: s.Close}
}

// startUpstreamProcess runs this program again as the upstream, as its own process.
func startUpstreamProcess(dir string) (*benchUpstream, error) {
	addr, certFile := freeAddr(), filepath.Join(dir, "upstream-cert.pem")
	var certPEM []byte
	stop, _, err := startSelf(nil, func() bool {
		certPEM, _ = os.ReadFile(certFile)
		return len(certPEM) > 0 && listening(addr)
	}, "-serve-upstream", addr, "-upstream-cert-out", certFile)
	if err != nil {
		return nil, err
	}
	return &benchUpstream{URL: "https://" + addr, certPEM: certPEM, stop: stop}, nil
}

func serveUpstreamProcess(addr, certOut string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s := newUpstreamServer()
	s.Listener = ln
	s.StartTLS()
	// Written whole under another name, then renamed: the bench never reads half of it.
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(certOut+".tmp", certPEM, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := os.Rename(certOut+".tmp", certOut); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	select {} // until the bench kills it
}
