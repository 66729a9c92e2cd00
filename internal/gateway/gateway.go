package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/semaphore"
	"k8s.io/utils/clock"

	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
	"github.com/voiceagent-dev/voiceagent-operator/internal/breaker"
	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/ratelimit"
)

// Options are the gateway's process-level settings; everything about the VoiceAgent
// comes from the configuration file.
type Options struct {
	ConfigPath string
	// Clock is the gateway's clock; tests inject a fake one. Nil means the real one.
	Clock clock.PassiveClock
	// AuditOut receives the records of stdout audit sinks (and of the default sink when
	// none is configured) as JSON lines; os.Stdout by default.
	AuditOut io.Writer
	// AuditBackoffBase and AuditBackoffMax tune retries of audit delivery; zero values
	// mean the audit package's defaults.
	AuditBackoffBase, AuditBackoffMax time.Duration
	// PodName identifies this replica in audit records.
	PodName string
	// Transport for upstream calls; tests inject one that trusts their CA.
	Transport http.RoundTripper
	Logger    *slog.Logger
	// ReloadInterval is how often the config file is checked; 2s by default.
	ReloadInterval time.Duration
	// Retry tuning; zero values mean the defaults.
	MaxRetries  int
	BackoffBase time.Duration
	// MaxBufferedBodyBytes bounds the body bytes held in memory at once; 0 means
	// maxBufferedBodyBytes. Tests set a small one.
	MaxBufferedBodyBytes int64
	// TerminationLog receives the ShutdownReport at exit when records are left
	// undelivered; empty: none is written.
	TerminationLog string
}

// Gateway is one running gateway.
type Gateway struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	trail   *audit.Log
	client  *http.Client

	cfg     atomic.Pointer[gw.Config]
	rawCfg  []byte
	reloadM sync.Mutex

	requests    *ratelimit.Bucket
	tokens      *ratelimit.Bucket
	concurrency *ratelimit.Concurrency
	sessions    *ratelimit.Concurrency
	sessionRate *ratelimit.Bucket
	budget      *budget.Tracker
	// shared is the limit store that enforces the VoiceAgent-wide limits, nil without
	// one; limitStoreFallbackCalls counts calls admitted on this replica's shares
	// because it could not answer.
	shared                  atomic.Pointer[sharedLimits]
	limitStoreFallbackCalls atomic.Int64

	// bodyMemory bounds the bytes of request and answer bodies held in memory at once;
	// integrationSlots the integration calls in flight.
	bodyMemory       *semaphore.Weighted
	integrationSlots *semaphore.Weighted
	refusals         *refusalSummary
	// agentToken and authThrottle authenticate the agent when the configuration has
	// agentAuth.
	agentToken   *agentToken
	authThrottle *authThrottle
	// proxyExposed: Run listens beyond loopback, where every call needs the agent token
	// whatever a reloaded configuration says. proxyCerts serve the proxy's TLS, and
	// proxyAddr is where it listens, once Run has bound it.
	proxyExposed atomic.Bool
	proxyCerts   atomic.Pointer[certReloader]
	proxyAddr    atomic.Pointer[net.Addr]

	// draining: SIGTERM came; readiness fails so that no new call is routed here,
	// while the sessions in progress (liveSessions) run on until the drain timeout.
	tokenCount tokenCounter

	draining     atomic.Bool
	sessionsMu   sync.Mutex
	liveSessions map[*session]struct{}

	mu           sync.Mutex
	breakers     map[string]*breaker.Breaker
	integBuckets map[string]*ratelimit.Bucket
	credentials  map[string]*credentialFile
}

// New loads the configuration and prepares the limiters. It fails on an invalid
// configuration: a gateway must never run with controls it could not read.
func New(opts Options) (*Gateway, error) {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.AuditOut == nil {
		opts.AuditOut = os.Stdout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opts.ReloadInterval == 0 {
		opts.ReloadInterval = 2 * time.Second
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 2
	}
	if opts.BackoffBase == 0 {
		opts.BackoffBase = 100 * time.Millisecond
	}
	if opts.MaxBufferedBodyBytes == 0 {
		opts.MaxBufferedBodyBytes = maxBufferedBodyBytes
	}
	if opts.Transport == nil {
		// The per-model timeout (the call's context) bounds every upstream call.
		opts.Transport = newUpstreamTransport(nil)
	}
	now := opts.Clock
	g := &Gateway{
		opts:         opts,
		log:          opts.Logger,
		metrics:      newMetrics(),
		client:       &http.Client{Transport: opts.Transport, CheckRedirect: noRedirects},
		requests:     ratelimit.NewBucket(0, 0, now),
		tokens:       ratelimit.NewBucket(0, 0, now),
		concurrency:  ratelimit.NewConcurrency(0),
		sessions:     ratelimit.NewConcurrency(0),
		sessionRate:  ratelimit.NewBucket(0, 0, now),
		breakers:     map[string]*breaker.Breaker{},
		integBuckets: map[string]*ratelimit.Bucket{},
		credentials:  map[string]*credentialFile{},

		bodyMemory:       semaphore.NewWeighted(opts.MaxBufferedBodyBytes),
		integrationSlots: semaphore.NewWeighted(maxIntegrationCalls),
		refusals:         newRefusalSummary(opts.Clock),
		agentToken:       &agentToken{clock: opts.Clock},
		authThrottle:     newAuthThrottle(now, maxAuthSources),
		liveSessions:     map[*session]struct{}{},
	}
	cfg, raw, err := g.readConfig()
	if err != nil {
		return nil, err
	}
	tracker, err := budget.Open(filepath.Join(cfg.StateDir, "budget.json"), opts.Clock)
	if err != nil {
		return nil, fmt.Errorf("open budget state: %w", err)
	}
	tracker.EnableWriteBehind()
	g.budget = tracker
	// The audit trail is open before the first call can be served, so that no call goes
	// unrecorded.
	if g.trail, err = g.openAudit(cfg); err != nil {
		return nil, fmt.Errorf("open audit trail: %w", err)
	}
	g.apply(cfg, raw)
	g.recordConfig(nil, cfg, "gateway started with this configuration")
	return g, nil
}

// The gateway's memory bounds: its container has 256Mi by default. Bodies that must be
// read whole (a model request, for its model, its stream options and retries; a
// fallback's answer, for translation) share 96 MiB; everything else streams.
const (
	maxBufferedBodyBytes = 96 << 20
	maxIntegrationCalls  = 64
)

// noRedirects keeps the gateway from following an upstream's redirect to a host the
// NetworkPolicy and the configuration never allowed.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func (g *Gateway) readConfig() (*gw.Config, []byte, error) {
	raw, err := os.ReadFile(g.opts.ConfigPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read gateway config: %w", err)
	}
	cfg, err := gw.Parse(raw)
	if err != nil {
		return nil, nil, err
	}
	return cfg, raw, nil
}

// Reload re-reads the configuration file and applies it if it changed. An invalid file
// is refused and the running configuration stays in force.
func (g *Gateway) Reload() error {
	g.reloadM.Lock()
	defer g.reloadM.Unlock()
	raw, err := os.ReadFile(g.opts.ConfigPath)
	if err != nil {
		g.metrics.configReloads.WithLabelValues("error").Inc()
		return fmt.Errorf("read gateway config: %w", err)
	}
	if bytes.Equal(raw, g.rawCfg) {
		return nil
	}
	cfg, err := gw.Parse(raw)
	if err != nil {
		g.metrics.configReloads.WithLabelValues("invalid").Inc()
		return err
	}
	if cfg.AgentAuth == nil && g.proxyExposed.Load() {
		g.metrics.configReloads.WithLabelValues("invalid").Inc()
		return fmt.Errorf("agentAuth: cannot be removed while the proxy listens on %s beyond loopback; restart the gateway to listen on loopback", g.cfg.Load().Listen.Proxy)
	}
	if err := g.reloadAuditSinks(g.cfg.Load(), cfg); err != nil {
		g.metrics.configReloads.WithLabelValues("invalid").Inc()
		return err
	}
	old := g.cfg.Load()
	g.apply(cfg, raw)
	g.metrics.configReloads.WithLabelValues("applied").Inc()
	if cfg.Generation != old.Generation {
		g.recordConfig(old, cfg, fmt.Sprintf("configuration of generation %d put in force (was %d)", cfg.Generation, old.Generation))
	}
	g.log.Info("configuration reloaded", "voiceAgent", cfg.VoiceAgent)
	return nil
}

// apply puts a configuration in force. Limiters keep their state across reloads.
func (g *Gateway) apply(cfg *gw.Config, raw []byte) {
	g.requests.Update(cfg.Limits.RequestsPerSecond, cfg.Limits.Burst)
	g.tokens.Update(cfg.Limits.TokensPerMinute/60, int(cfg.Limits.TokensPerMinute))
	g.concurrency.SetMax(cfg.Limits.MaxConcurrentCalls)
	g.sessions.SetMax(cfg.Voice.MaxConcurrentSessions)
	g.sessionRate.Update(cfg.Voice.SessionsPerMinute/60, sessionBurst(cfg.Voice.SessionsPerMinute))
	g.budget.SetLimits(budgetLimits(cfg.Budget))
	g.applyLimitStore(cfg)
	g.agentToken.configure(cfg.AgentAuth)
	g.mu.Lock()
	for _, m := range cfg.Models {
		g.breakerLocked(m.Endpoint).Update(cfg.Breaker.FailureThreshold, cfg.Breaker.OpenDuration.Duration)
	}
	for _, in := range cfg.Integrations {
		g.breakerLocked(in.Endpoint).Update(cfg.Breaker.FailureThreshold, cfg.Breaker.OpenDuration.Duration)
		b, ok := g.integBuckets[in.Name]
		if !ok {
			b = ratelimit.NewBucket(0, 0, g.opts.Clock)
			g.integBuckets[in.Name] = b
		}
		b.Update(in.RequestsPerMinute/60, in.Burst)
	}
	g.mu.Unlock()
	g.rawCfg = raw
	g.cfg.Store(cfg)
}

// sessionBurst lets a minute's worth of sessions start at once (a shift starting), never
// fewer than one.
func sessionBurst(perMinute float64) int {
	if perMinute <= 0 {
		return 0
	}
	return max(1, int(perMinute))
}

func budgetLimits(b *gw.Budget) budget.Limits {
	if b == nil {
		return budget.Limits{}
	}
	l := budget.Limits{AlertAtPercent: b.AlertAtPercent, Block: b.OnExceeded != "AlertOnly"}
	if b.Daily != "" {
		l.Daily, _ = budget.ParseMicros(b.Daily) // validated by gatewayconfig.Parse
	}
	if b.Monthly != "" {
		l.Monthly, _ = budget.ParseMicros(b.Monthly)
	}
	if c := b.Carried; c != nil {
		l.CarriedDay, l.CarriedDaily = c.Day, budget.Micros(c.DailyMicros)
		l.CarriedMonth, l.CarriedMonthly = c.Month, budget.Micros(c.MonthMicros)
	}
	return l
}

func (g *Gateway) breakerLocked(upstream string) *breaker.Breaker {
	b, ok := g.breakers[upstream]
	if !ok {
		cfg := g.cfg.Load()
		threshold, open := 5, 30*time.Second
		if cfg != nil {
			threshold, open = cfg.Breaker.FailureThreshold, cfg.Breaker.OpenDuration.Duration
		}
		b = breaker.New(threshold, open, g.opts.Clock)
		g.breakers[upstream] = b
	}
	return b
}

func (g *Gateway) breaker(upstream string) *breaker.Breaker {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.breakerLocked(upstream)
}

func (g *Gateway) credential(path string) *credentialFile {
	if path == "" {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.credentials[path]
	if !ok {
		c = newCredentialFile(path, g.opts.Clock)
		g.credentials[path] = c
	}
	return c
}

// Handler is the proxy the agent calls.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/model/", g.serveModel)
	mux.HandleFunc("/integrations/", g.serveIntegration)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c := g.newCall(r, "unknown", "")
		defer c.finish()
		c.deny(w, http.StatusNotFound, "not_found", "unknown route: use /model/ or /integrations/<name>/", 0)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Before anything else reads the request: an unauthenticated caller learns
		// nothing of routes, limits or the audit policy.
		if (g.cfg.Load().AgentAuth != nil || g.proxyExposed.Load()) && !g.authenticateAgent(w, r) {
			return
		}
		if why := requestRefusal(r); why != "" {
			g.refuseRequest(w, r, why)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// AdminHandler serves health, readiness, metrics and the audit delivery summary.
func (g *Gateway) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := g.checkReady(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(g.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /audit/status", g.serveAuditStatus)
	mux.HandleFunc("GET /spend", g.serveSpend)
	return mux
}

// checkReady is true when every credential file of the configuration is readable and
// the gateway is not draining.
func (g *Gateway) checkReady() error {
	if g.draining.Load() {
		return errors.New("draining: the gateway is shutting down")
	}
	cfg := g.cfg.Load()
	for _, m := range cfg.Models {
		if _, err := g.credential(m.CredentialFile).Value(); err != nil {
			return errors.New("model credential not readable")
		}
	}
	if cfg.AgentAuth != nil {
		if err := g.agentToken.ready(); err != nil {
			return err
		}
	}
	if certs := g.proxyCerts.Load(); certs != nil {
		if _, err := certs.get(); err != nil {
			return fmt.Errorf("proxy %w", err)
		}
	}
	return nil
}

// ProxyAddr is the address the proxy listens on, nil until Run has bound it.
func (g *Gateway) ProxyAddr() net.Addr {
	if a := g.proxyAddr.Load(); a != nil {
		return *a
	}
	return nil
}

// listenProxy binds the agent's side. Beyond loopback only with agentAuth: anyone on
// the pod network can reach it there, and only the token tells the agent apart.
func (g *Gateway) listenProxy(cfg *gw.Config) (net.Listener, error) {
	if cfg.AgentAuth == nil {
		return listenLoopback(cfg.Listen.Proxy)
	}
	ln, err := net.Listen("tcp", cfg.Listen.Proxy)
	if err != nil {
		return nil, err
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen.Proxy); !isLoopbackHost(host) {
		g.proxyExposed.Store(true)
	}
	return ln, nil
}

func isLoopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Run serves until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	cfg := g.cfg.Load()
	proxy := newAgentServer(g.Handler())
	servers := []*http.Server{
		{Addr: cfg.Listen.Admin, Handler: g.AdminHandler(), ReadHeaderTimeout: 10 * time.Second},
	}
	if cfg.Inbound != nil {
		in, err := newInbound(cfg.Inbound)
		if err != nil {
			return err
		}
		servers = append(servers, in)
	}
	proxyListener, err := g.listenProxy(cfg)
	if err != nil {
		return err
	}
	addr := proxyListener.Addr()
	g.proxyAddr.Store(&addr)
	if t := cfg.Listen.ProxyTLS; t != nil {
		certs := &certReloader{certFile: t.CertFile, keyFile: t.KeyFile}
		// A certificate cert-manager has not issued yet is no reason to crash: the
		// gateway stays not ready, refusing handshakes, until it can be read.
		if _, err := certs.get(); err != nil {
			g.log.Error("proxy TLS certificate not loadable; not ready until it is", "error", err.Error())
		}
		g.proxyCerts.Store(certs)
		proxy.TLSConfig = serverTLSConfig(certs)
		// HTTP/1.1 only: a realtime session is an HTTP/1.1 upgrade, and the agent-side
		// limits (head size, body deadlines, idle connections) are set and measured for
		// one request at a time per connection, not for HTTP/2's streams.
		proxy.TLSConfig.NextProtos = []string{"http/1.1"}
		proxy.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	errc := make(chan error, len(servers)+1)
	go func() {
		var err error
		if proxy.TLSConfig != nil {
			err = proxy.ServeTLS(proxyListener, "", "")
		} else {
			err = proxy.Serve(proxyListener)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("listen %s: %w", cfg.Listen.Proxy, err)
		}
	}()
	for _, s := range servers {
		go func(s *http.Server) {
			var err error
			if s.TLSConfig != nil {
				err = s.ListenAndServeTLS("", "")
			} else {
				err = s.ListenAndServe()
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("listen %s: %w", s.Addr, err)
			}
		}(s)
	}
	g.log.Info("gateway serving", "proxy", addr.String(), "admin", cfg.Listen.Admin, "tls", cfg.Inbound != nil,
		"proxyTLS", cfg.Listen.ProxyTLS != nil, "agentAuth", cfg.AgentAuth != nil)
	ticker := time.NewTicker(g.opts.ReloadInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			g.Drain(g.cfg.Load().Voice.DrainTimeout.Duration)
			shutdown, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = proxy.Shutdown(shutdown)
			for _, s := range servers {
				_ = s.Shutdown(shutdown)
			}
			err := errors.Join(g.Close(), g.Stop(shutdown))
			g.reportUndelivered()
			return err
		case err := <-errc:
			return err
		case <-ticker.C:
			g.flushRefusals()
			if err := g.budget.Flush(); err != nil {
				g.log.Error("spend not persisted", "error", err.Error())
			}
			if err := g.Reload(); err != nil {
				g.log.Error("configuration not reloaded; the previous one stays in force", "error", err.Error())
			}
		}
	}
}

// reportUndelivered says, at exit, how many audit records each sink still has not
// taken: they stay in the pod's queue and are lost with it if the pod goes. (With the
// stdout sink nothing is held back: the container log takes every record.)
//
// The counts also go to the container's termination message (Options.TerminationLog,
// /dev/termination-log in a pod), which the kubelet puts in the pod's status: the
// operator reads them from there, after the process is gone, into the AuditSink's
// status.delivery.recordsLostOnShutdown, a metric and an Event.
func (g *Gateway) reportUndelivered() {
	lost := map[string]uint64{}
	for _, s := range g.trail.Status().Sinks {
		if s.Backlog > 0 {
			g.log.Error("audit records not delivered at shutdown", "sink", s.Name, "records", s.Backlog)
			lost[s.Name] = s.Backlog
		}
	}
	if len(lost) == 0 || g.opts.TerminationLog == "" {
		return
	}
	msg, err := json.Marshal(gw.ShutdownReport{AuditRecordsLost: lost})
	if err == nil {
		err = os.WriteFile(g.opts.TerminationLog, msg, 0o644)
	}
	if err != nil {
		g.log.Error("termination message not written", "file", g.opts.TerminationLog, "error", err.Error())
	}
}

// Drain turns the gateway not-ready at once, so that no new call or session is routed
// to it, and lets the realtime sessions in progress run until they end or timeout
// passes (0: none are waited for); those still open are then closed with 1001 "going
// away", which tells the agent to reconnect elsewhere. Calls keep being served
// meanwhile: a sidecar's agent may still be finishing its own.
func (g *Gateway) Drain(timeout time.Duration) {
	g.draining.Store(true)
	deadline := time.Now().Add(timeout)
	for g.activeSessions() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // polling the session count, within the deadline
	}
	g.sessionsMu.Lock()
	open := make([]*session, 0, len(g.liveSessions))
	for s := range g.liveSessions {
		open = append(open, s)
	}
	g.sessionsMu.Unlock()
	for _, s := range open {
		s.stop(closeGoingAway, "the gateway is shutting down (spec.voice.drainTimeout passed); reconnect")
	}
	if len(open) > 0 {
		g.log.Info("sessions closed at the end of the drain", "sessions", len(open))
	}
}

func (g *Gateway) activeSessions() int {
	g.sessionsMu.Lock()
	defer g.sessionsMu.Unlock()
	return len(g.liveSessions)
}

// Close persists what must survive a restart: spend, and a checkpoint that seals the
// audit records so far. The gateway keeps serving; Stop ends the audit trail.
func (g *Gateway) Close() error {
	g.flushRefusals()
	if err := g.budget.Flush(); err != nil {
		return fmt.Errorf("persist spend: %w", err)
	}
	if err := g.trail.Checkpoint(); err != nil {
		return fmt.Errorf("audit checkpoint: %w", err)
	}
	return nil
}

// Stop seals the audit chain, gives the sinks until ctx ends to take the backlog (what
// is left stays queued for the next start) and closes the queue. Calls after Stop are
// refused under FailClosed.
func (g *Gateway) Stop(ctx context.Context) error {
	if s := g.shared.Swap(nil); s != nil && s.store != nil {
		if err := s.store.Close(); err != nil { // settles what it holds first
			g.log.Error("limit store not closed cleanly", "error", err.Error())
		}
	}
	return g.trail.Shutdown(ctx)
}

// requestID is the caller's X-Request-ID when it is sane, else a new random one.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-ID"); id != "" && len(id) <= 128 && isToken(id) {
		return id
	}
	return newRequestID()
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func isToken(s string) bool {
	for _, c := range s {
		if !(c == '-' || c == '_' || c == '.' || c == ':' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			return false
		}
	}
	return true
}

func writeError(w http.ResponseWriter, status int, kind, message, rid string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-ID", rid)
	w.WriteHeader(status)
	_, _ = w.Write(errorBody(status, kind, message, rid))
}

// listenLoopback refuses to listen anywhere but loopback: the proxy must be reachable
// from the agent's container only.
func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("proxy address %s is not loopback", addr)
	}
	return net.Listen("tcp", addr)
}
