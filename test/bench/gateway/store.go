package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// benchRedis is a redis-server on loopback serving TLS only, as a limit store in a
// cluster would (TLS is the default of spec.limitStore.redis).
type benchRedis struct {
	addr, caFile string
	cmd          *exec.Cmd
	admin        *redis.Client
}

func startBenchRedis(dir string) (*benchRedis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is not installed (hack/install-redis.sh)")
	}
	certFile, keyFile, err := writeServingCert(dir) // self-signed: its own CA
	if err != nil {
		return nil, err
	}
	addr := freeAddr()
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", "0", "--tls-port", port,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile, "--tls-auth-clients", "no",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &benchRedis{addr: addr, caFile: certFile, cmd: cmd}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		r.stop()
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	r.admin = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1,
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}})
	if !waitUntil(10*time.Second, func() bool { return r.admin.Ping(context.Background()).Err() == nil }) {
		r.stop()
		return nil, fmt.Errorf("redis-server did not answer on %s", addr)
	}
	return r, nil
}

// configure puts the gateway's limits in the store: the same limits as the others',
// for the whole VoiceAgent.
func (r *benchRedis) configure(rps float64) func(*gw.Config) {
	return func(c *gw.Config) {
		c.LimitStore = &gw.LimitStore{
			Redis:         gw.RedisStore{Address: r.addr, TLS: gw.RedisTLS{CAFile: r.caFile, ServerName: "127.0.0.1"}},
			FailurePolicy: gw.LimitStoreFailClosed, // a call the store did not admit fails: the figures are the store's
			KeyPrefix:     "voiceagent:{bench/bench}:",
			Global: gw.GlobalLimits{RequestsPerSecond: rps, Burst: int(rps), MaxConcurrentCalls: 10000, TokensPerMinute: 1e9,
				Daily: c.Budget.Daily},
		}
	}
}

type redisCounters struct {
	roundTrips int64
	cpu        time.Duration
}

// counters are the scripts and pings redis-server ran (the gateway's round trips; the
// bench's own INFO is not counted) and its CPU time so far.
func (r *benchRedis) counters() redisCounters {
	var c redisCounters
	info, err := r.admin.Info(context.Background(), "commandstats").Result()
	if err == nil {
		for _, line := range strings.Split(info, "\n") {
			for _, cmd := range []string{"cmdstat_evalsha:", "cmdstat_eval:", "cmdstat_ping:"} {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
					calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
					n, _ := strconv.ParseInt(calls, 10, 64)
					c.roundTrips += n
				}
			}
		}
	}
	c.cpu = treeCPU(r.cmd.Process.Pid)
	return c
}

func (r *benchRedis) stop() {
	if r.admin != nil {
		_ = r.admin.Close()
	}
	_ = r.cmd.Process.Signal(os.Interrupt)
	_ = r.cmd.Wait()
}
