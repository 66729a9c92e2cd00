// Package limitstore enforces a VoiceAgent's limits across all its gateway replicas in
// one Redis: requests (sustained and burst), tokens per minute, concurrent calls and
// sessions (leases that expire, so that a dead gateway's slots come back), sessions per
// minute and the daily and monthly budgets in integer micro-dollars.
//
// A call costs one round trip on its path: one Lua script that checks everything and
// takes what it admits atomically (admit.lua). What calls used afterwards (tokens, spend,
// leases to release or renew) is settled off the call's path by one goroutine that
// sends everything pending in one script (settle.lua): under load many calls share a
// settle, so round trips per call approach one.
package limitstore

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/utils/clock"

	"github.com/voiceagent-dev/voiceagent-operator/internal/budget"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/neterr"
)

var (
	//go:embed common.lua
	commonSource string
	//go:embed admit.lua
	admitSource string
	//go:embed settle.lua
	settleSource string

	admitScript  = redis.NewScript(commonSource + admitSource)
	settleScript = redis.NewScript(commonSource + settleSource)
)

// go-redis logs dial failures with the address on its own: the store's Health says
// what failed, without it.
func init() { redis.SetLogger(discard{}) }

type discard struct{}

func (discard) Printf(context.Context, string, ...any) {}

// Defaults.
const (
	DefaultTimeout = 250 * time.Millisecond
	// LeaseTTL is how long a call's or session's slot outlives its gateway: leases of
	// calls still running are renewed every LeaseTTL/3.
	LeaseTTL = 30 * time.Second
	// probeInterval is how often an unavailable store is tried again; calls meanwhile
	// follow the failure policy at once instead of each waiting for a timeout.
	probeInterval = time.Second
	// settleDelay is how long what a call used waits for the gateway's next admission
	// to carry it before it is sent on its own: the other replicas see it within this.
	settleDelay = 20 * time.Millisecond
	dayTTL      = 50 * time.Hour
	monthTTL    = 33 * 24 * time.Hour
)

// Refusal codes of admit.lua.
const (
	Admitted = iota
	RefusedRequests
	RefusedTokens
	RefusedSessionRate
	RefusedLeases
	RefusedBudget
)

// Reasons of Health, as the VoiceAgent's LimitStoreReady condition carries them.
const (
	ReasonConnected            = "Connected"
	ReasonUnreachable          = "Unreachable"
	ReasonAuthenticationFailed = "AuthenticationFailed"
	ReasonTLSFailed            = "TLSFailed"
	ReasonError                = "Error"
)

// ErrUnavailable is returned while the store is known to be unreachable.
var ErrUnavailable = errors.New("limit store unavailable")

// Kind is what is being admitted.
type Kind int

const (
	// Call is a model call: requests, tokens per minute, concurrent calls, budgets.
	Call Kind = iota
	// Session is a realtime session: requests, tokens per minute, sessions per minute,
	// concurrent sessions, budgets.
	Session
	// Request is any other call through the gateway: the request bucket only.
	Request
	// PricedSession is a priced integration session: requests, sessions per minute,
	// concurrent sessions and budgets.
	PricedSession
	// IntegrationSession is an unpriced integration session: requests, sessions per
	// minute and concurrent sessions.
	IntegrationSession
)

// Decision is the store's answer to one admission.
type Decision struct {
	Code       int
	RetryAfter time.Duration
	// Lease is held until Release; nil when the admission took none.
	Lease *Lease
	// Spent are the VoiceAgent's totals of the day and month as the store saw them.
	DaySpent, MonthSpent budget.Micros
}

// Lease is one call's or session's slot in the store.
type Lease struct {
	id      string
	session bool
}

// Health is the store's state as this gateway sees it.
type Health struct {
	Ready   bool
	Reason  string
	Message string
	Since   time.Time
}

// Store is one VoiceAgent's limits in Redis.
type Store struct {
	rdb      *redis.Client
	keys     keys
	limits   atomic.Pointer[limits]
	owner    string
	seq      atomic.Uint64
	clock    clock.PassiveClock
	timeout  time.Duration
	leaseTTL time.Duration
	addr     string
	tlsOn    bool

	mu sync.Mutex
	// tokens used and not yet settled; own is this gateway's spend by period since
	// Open, sent as absolute figures until the store acknowledged them.
	tokens   int64
	own      map[period]*ownSpend
	active   map[string]bool // lease id -> session: the leases to renew
	released []*Lease
	health   Health
	downTill time.Time
	kick     chan struct{}

	// spent is the last VoiceAgent-wide day and month spend the store reported.
	spentMu              sync.Mutex
	spentDay, spentMonth string
	daySpent, monthSpent budget.Micros

	// clockOffset is the store's clock minus this gateway's, in seconds: the day and
	// month a charge counts in are the store's, the same for every replica.
	clockOffset atomic.Int64
	// renewing is true while the settle loop has renewals in flight: a release of one
	// of them must reach the store after them, so admissions leave releases alone.
	renewing  bool
	lastRenew time.Time

	roundTrips atomic.Int64
	done       chan struct{}
	stop       context.CancelFunc
}

type period struct{ day, month string }

type ownSpend struct{ total, acked int64 }

type keys struct {
	requests, tokens, calls, sessions, sessionRate, spend string
}

// Open connects to the store in ls and starts its settle loop; Close stops it. It does
// not wait for the store: an unreachable one shows in Health.
func Open(ls *gw.LimitStore, clk clock.PassiveClock) (*Store, error) {
	return open(ls, clk, LeaseTTL)
}

func open(ls *gw.LimitStore, clk clock.PassiveClock, leaseTTL time.Duration) (*Store, error) {
	if clk == nil {
		clk = clock.RealClock{}
	}
	opts, err := clientOptions(&ls.Redis)
	if err != nil {
		return nil, err
	}
	owner := make([]byte, 8)
	if _, err := rand.Read(owner); err != nil {
		return nil, fmt.Errorf("limit store: lease owner id: %w", err)
	}
	p := ls.KeyPrefix
	s := &Store{
		rdb:      redis.NewClient(opts),
		keys:     keys{requests: p + "requests", tokens: p + "tokens", calls: p + "calls", sessions: p + "sessions", sessionRate: p + "session-rate", spend: p + "spend:"},
		owner:    hex.EncodeToString(owner),
		clock:    clk,
		timeout:  opts.ReadTimeout,
		addr:     ls.Redis.Address,
		tlsOn:    !ls.Redis.TLS.Disabled,
		leaseTTL: leaseTTL,
		own:      map[period]*ownSpend{},
		active:   map[string]bool{},
		health:   Health{Reason: ReasonUnreachable, Message: "not connected yet", Since: clk.Now()},
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	s.SetLimits(ls.Global, true)
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.run(ctx)
	return s, nil
}

func clientOptions(r *gw.RedisStore) (*redis.Options, error) {
	timeout := r.Timeout.Duration
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	opts := &redis.Options{
		Addr:         r.Address,
		DialTimeout:  4 * timeout,
		ReadTimeout:  timeout,
		WriteTimeout: timeout,
		// A script re-sent after its reply was lost would take twice: no retries. The
		// failure policy decides instead.
		MaxRetries:      -1,
		PoolSize:        64,
		MinIdleConns:    2,
		DisableIdentity: true,
		Protocol:        2,
	}
	if r.UsernameFile != "" || r.PasswordFile != "" {
		// Read on every new connection: a rotated Secret is used without a restart.
		opts.CredentialsProvider = func() (string, string) {
			return readCredential(r.UsernameFile), readCredential(r.PasswordFile)
		}
	}
	if !r.TLS.Disabled {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.TLS.ServerName}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = strings.Cut(r.Address, ":")
		}
		if r.TLS.CAFile != "" {
			pem, err := os.ReadFile(r.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("limit store: read tls.caFile: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("limit store: tls.caFile %s holds no PEM certificate", r.TLS.CAFile)
			}
			cfg.RootCAs = pool
		}
		opts.TLSConfig = cfg
	}
	return opts, nil
}

func readCredential(path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimRight(string(b), "\r\n")
}

// SetLimits puts new VoiceAgent-wide limits in force for the next admission.
func (s *Store) SetLimits(l gw.GlobalLimits, block bool) {
	d, _ := budget.ParseMicros(l.Daily) // validated with the configuration
	m, _ := budget.ParseMicros(l.Monthly)
	s.limits.Store(&limits{GlobalLimits: l, daily: int64(d), monthly: int64(m), block: block})
}

// limits are the VoiceAgent-wide limits in force, with the budgets parsed once and
// the blocking choice, swapped as one.
type limits struct {
	gw.GlobalLimits
	daily, monthly int64
	block          bool
}

// Close stops the settle loop after one last settle of what is pending.
func (s *Store) Close() error {
	s.stop()
	<-s.done
	return s.rdb.Close()
}

// Idle reports whether nothing of this gateway is held or pending in the store: no
// lease in use, nothing to release, charge or acknowledge. A store replaced by a
// reload is closed once idle, so that the calls it admitted keep their leases renewed.
func (s *Store) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.active) > 0 || len(s.released) > 0 || s.tokens > 0 {
		return false
	}
	for _, o := range s.own {
		if o.total > o.acked {
			return false
		}
	}
	return true
}

// RoundTrips is the number of scripts sent to the store.
func (s *Store) RoundTrips() int64 { return s.roundTrips.Load() }

// Health reports the store's state as this gateway last saw it.
func (s *Store) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

// Spent is the VoiceAgent-wide spend of the current day and month as the store last
// reported it, plus what this gateway spent since that the store has not acknowledged.
func (s *Store) Spent() (day, month budget.Micros) {
	p := s.currentPeriod()
	s.mu.Lock()
	for q, o := range s.own { // this gateway's spend not yet acknowledged counts too
		if q.month == p.month {
			month += budget.Micros(o.total - o.acked)
			if q.day == p.day {
				day += budget.Micros(o.total - o.acked)
			}
		}
	}
	s.mu.Unlock()
	s.spentMu.Lock()
	defer s.spentMu.Unlock()
	if s.spentDay == p.day {
		day += s.daySpent
	}
	if s.spentMonth == p.month {
		month += s.monthSpent
	}
	return day, month
}

// noteSpent keeps the totals a reply carried for p. Within a period spend only grows:
// a reply that crossed a later one on another connection does not lower it.
func (s *Store) noteSpent(p period, day, month, serverSecs int64) {
	if serverSecs > 0 {
		s.clockOffset.Store(serverSecs - s.clock.Now().Unix())
	}
	s.spentMu.Lock()
	defer s.spentMu.Unlock()
	if p.day > s.spentDay || (p.day == s.spentDay && budget.Micros(day) > s.daySpent) {
		s.spentDay, s.daySpent = p.day, budget.Micros(day)
	}
	if p.month > s.spentMonth || (p.month == s.spentMonth && budget.Micros(month) > s.monthSpent) {
		s.spentMonth, s.monthSpent = p.month, budget.Micros(month)
	}
}

// currentPeriod is the UTC day and month by the store's clock.
func (s *Store) currentPeriod() period {
	now := s.clock.Now().Add(time.Duration(s.clockOffset.Load()) * time.Second).UTC()
	return period{day: now.Format(time.DateOnly), month: now.Format("2006-01")}
}

// Admit checks and takes, in one round trip, what kind needs, and settles in the same
// round trip what this gateway's earlier calls used. An error means the store could
// not answer (ErrUnavailable while it is known to be down): the caller applies the
// failure policy.
func (s *Store) Admit(ctx context.Context, kind Kind) (Decision, error) {
	l := s.limits.Load()
	p := s.currentPeriod()
	args := make([]any, 13, 32)
	for i := range args {
		args[i] = 0
	}
	if l.RequestsPerSecond > 0 {
		args[0], args[1] = l.RequestsPerSecond, max(float64(l.Burst), 1)
	}
	var lease *Lease
	takeLease := func(maxN int, session bool) {
		if maxN <= 0 {
			return
		}
		lease = &Lease{id: s.owner + ":" + strconv.FormatUint(s.seq.Add(1), 36), session: session}
		args[4], args[5], args[6], args[7] = 1, maxN, lease.id, s.leaseTTL.Milliseconds()
		if session {
			args[4] = 2
		}
	}
	withTokens := func() {
		if l.TokensPerMinute > 0 {
			args[2], args[3] = l.TokensPerMinute/60, l.TokensPerMinute
		}
	}
	withSessionRate := func() {
		if l.SessionsPerMinute > 0 {
			args[8], args[9] = l.SessionsPerMinute/60, sessionBurst(l.SessionsPerMinute)
		}
	}
	withBudget := func() {
		args[10], args[11] = l.daily, l.monthly
		if l.block {
			args[12] = 1
		}
	}
	switch kind {
	case Call:
		withTokens()
		takeLease(l.MaxConcurrentCalls, false)
		withBudget()
	case Session:
		withTokens()
		withSessionRate()
		takeLease(l.MaxConcurrentSessions, true)
		withBudget()
	case PricedSession, IntegrationSession:
		withSessionRate()
		takeLease(l.MaxConcurrentSessions, true)
		if kind == PricedSession {
			withBudget()
		}
	case Request:
	}

	s.mu.Lock()
	if s.clock.Now().Before(s.downTill) {
		s.mu.Unlock()
		return Decision{}, ErrUnavailable
	}
	tokens := s.tokens
	s.tokens = 0
	var released []*Lease
	if !s.renewing {
		released, s.released = s.released, nil
	}
	dayAbs, monthAbs := s.ownFigures(p)
	s.mu.Unlock()
	args = append(args, s.settleArgs(tokens, dayAbs, monthAbs, &l.GlobalLimits, nil, released)...)

	// The agent hanging up does not cut the round trip short: a script cut off may
	// still run, and a cancelled call must not count as the store failing (an agent
	// could otherwise switch shared enforcement off by hanging up).
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	s.roundTrips.Add(1)
	res, err := admitScript.Run(rctx, s.rdb, s.keyList(p), args...).Int64Slice()
	if err == nil && len(res) != 5 {
		err = fmt.Errorf("%w: admit answered %d values, want 5", errReply, len(res))
	}
	if err != nil {
		s.failed(err, false)
		// The script may have run: its lease is given back (ZREM of a lease that is not
		// there does nothing), its tokens charged again at worst (never fewer).
		if lease != nil {
			released = append(released, lease)
		}
		s.putBack(tokens, released)
		return Decision{}, err
	}
	s.succeeded()
	s.noteSpent(p, res[2], res[3], res[4])
	s.acked(p, dayAbs)
	d := Decision{Code: int(res[0]), RetryAfter: time.Duration(res[1]) * time.Millisecond}
	d.DaySpent, d.MonthSpent = s.Spent()
	if d.Code == Admitted && lease != nil {
		d.Lease = lease
		s.mu.Lock()
		s.active[lease.id] = lease.session
		s.mu.Unlock()
	}
	return d, nil
}

func (s *Store) keyList(p period) []string {
	k := s.keys
	return []string{k.requests, k.tokens, k.calls, k.sessions, k.sessionRate, k.spend + "day:" + p.day, k.spend + "month:" + p.month}
}

// ownFigures are this gateway's spend in p's day and month. The caller holds mu.
func (s *Store) ownFigures(p period) (day, month int64) {
	for q, o := range s.own {
		if q.month == p.month {
			month += o.total
			if q.day == p.day {
				day = o.total
			}
		}
	}
	return day, month
}

// acked notes that the store holds this gateway's day figure sent for p, and forgets
// the periods of past months that are fully sent.
func (s *Store) acked(p period, day int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.own[p]; o != nil && day > o.acked {
		o.acked = day
	}
	cur := s.currentPeriod()
	for q, o := range s.own {
		if q.month != cur.month && o.acked >= o.total {
			delete(s.own, q)
		}
	}
}

// settleArgs are common.lua's settle arguments: tokens used, this gateway's own day
// and month spend, the leases renewed and the leases released.
func (s *Store) settleArgs(tokens, day, month int64, l *gw.GlobalLimits, renewed map[string]bool, released []*Lease) []any {
	args := []any{tokens, 0, 0, s.owner, day, month, int64(dayTTL / time.Second), int64(monthTTL / time.Second), s.leaseTTL.Milliseconds(), 0, 0, 0, 0}
	if l.TokensPerMinute > 0 {
		args[1], args[2] = l.TokensPerMinute/60, l.TokensPerMinute
	}
	var ids [4][]any // renewed calls, renewed sessions, released calls, released sessions
	for id, session := range renewed {
		if session {
			ids[1] = append(ids[1], id)
		} else {
			ids[0] = append(ids[0], id)
		}
	}
	for _, r := range released {
		if r.session {
			ids[3] = append(ids[3], r.id)
		} else {
			ids[2] = append(ids[2], r.id)
		}
	}
	for i := range ids {
		args[9+i] = len(ids[i])
	}
	for i := range ids {
		args = append(args, ids[i]...)
	}
	return args
}

// putBack keeps for the next round trip what a failed one carried. Spend needs no
// keeping: it is sent as this gateway's absolute figure until acknowledged.
func (s *Store) putBack(tokens int64, released []*Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens += tokens
	s.released = append(s.released, released...)
}

// sessionBurst matches the per-replica limiter's: a minute's sessions may start at once.
func sessionBurst(perMinute float64) int {
	return max(1, int(perMinute))
}

// Release gives a lease back (settled off the caller's path).
func (s *Store) Release(l *Lease) {
	if l == nil {
		return
	}
	s.mu.Lock()
	delete(s.active, l.id)
	s.released = append(s.released, l)
	s.mu.Unlock()
	s.wake()
}

// Charge puts what a call used (tokens against tokens per minute, cost against the
// budgets) on the VoiceAgent's totals: carried by this gateway's next admission, or
// sent on its own within settleDelay. Spend the store cannot take yet is sent when it
// is back: it is never dropped.
func (s *Store) Charge(tokens int64, cost budget.Micros) {
	if tokens <= 0 && cost <= 0 {
		return
	}
	p := s.currentPeriod()
	s.mu.Lock()
	s.tokens += max(tokens, 0)
	if cost > 0 {
		o := s.own[p]
		if o == nil {
			o = &ownSpend{}
			s.own[p] = o
		}
		o.total += int64(cost)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run settles what no admission carried within settleDelay, renews the leases of
// calls still running every LeaseTTL/3 and probes an unavailable store, until ctx ends.
func (s *Store) run(ctx context.Context) {
	defer close(s.done)
	// Learn the store's clock before the first charge if it answers at once; every
	// reply keeps it up to date afterwards.
	tctx, cancel := context.WithTimeout(ctx, s.timeout)
	if t, err := s.rdb.Time(tctx).Result(); err == nil {
		s.clockOffset.Store(t.Unix() - s.clock.Now().Unix())
	}
	cancel()
	renew := time.NewTicker(s.leaseTTL / 3)
	defer renew.Stop()
	probe := time.NewTicker(probeInterval)
	defer probe.Stop()
	delay := time.NewTimer(settleDelay)
	delay.Stop()
	waiting := false // the delay counts from the first thing pending, not the last
	for {
		select {
		case <-ctx.Done():
			for range 3 { // what is pending is sent if the store takes it at all
				final, cancel := context.WithTimeout(context.Background(), 4*s.timeout)
				s.mu.Lock()
				s.downTill = time.Time{}
				s.mu.Unlock()
				sent := s.settle(final, false)
				cancel()
				if sent {
					break
				}
			}
			return
		case <-s.kick:
			if !waiting {
				delay.Reset(settleDelay)
				waiting = true
			}
		case <-delay.C:
			waiting = false
			s.settle(ctx, false)
		case <-renew.C:
			s.settle(ctx, true)
		case <-probe.C:
			s.probe(ctx)
		}
	}
}

func (s *Store) probe(ctx context.Context) {
	s.mu.Lock()
	ready := s.health.Ready
	s.mu.Unlock()
	if ready {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
	defer cancel()
	s.roundTrips.Add(1)
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		s.failed(err, true)
		return
	}
	s.succeeded()
	s.settle(ctx, false) // what waited for it, and the renewals it missed
}

// settle sends what is pending: one script per period whose spend the store has not
// acknowledged (one in all but the moments around midnight), the first also carrying
// tokens, releases and renewals. Renewals go when asked or when due (a tick missed
// while the store was down is made up), with the current period's figures, so that a
// store that restarted empty is refilled even by an idle gateway. It reports whether
// everything was sent.
func (s *Store) settle(ctx context.Context, renewing bool) bool {
	type figures struct {
		p          period
		day, month int64
	}
	s.mu.Lock()
	if s.clock.Now().Before(s.downTill) {
		s.mu.Unlock()
		return false // kept for when the probe sees the store back
	}
	renewing = renewing || s.clock.Now().Sub(s.lastRenew) >= s.leaseTTL/3
	tokens, released := s.tokens, s.released
	s.tokens, s.released = 0, nil
	var renewed map[string]bool
	if renewing && len(s.active) > 0 {
		renewed = make(map[string]bool, len(s.active))
		for id, session := range s.active {
			renewed[id] = session
		}
		s.renewing = true
	}
	cur := s.currentPeriod()
	var sends []figures
	for p, o := range s.own {
		if o.total > o.acked || (renewing && p == cur) {
			d, m := s.ownFigures(p)
			sends = append(sends, figures{p, d, m})
		}
	}
	if len(sends) == 0 && (tokens > 0 || len(released) > 0 || len(renewed) > 0) {
		d, m := s.ownFigures(cur)
		sends = append(sends, figures{cur, d, m})
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.renewing = false
		s.mu.Unlock()
	}()
	l := s.limits.Load()
	for _, f := range sends {
		cctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
		s.roundTrips.Add(1)
		res, err := settleScript.Run(cctx, s.rdb, s.keyList(f.p), s.settleArgs(tokens, f.day, f.month, &l.GlobalLimits, renewed, released)...).Int64Slice()
		cancel()
		if err == nil && len(res) != 3 {
			err = fmt.Errorf("%w: settle answered %d values, want 3", errReply, len(res))
		}
		if err != nil {
			s.failed(err, false)
			s.putBack(tokens, released)
			return false
		}
		s.succeeded()
		s.noteSpent(f.p, res[0], res[1], res[2])
		s.acked(f.p, f.day)
		if renewed != nil {
			s.mu.Lock()
			s.lastRenew = s.clock.Now()
			s.mu.Unlock()
		}
		tokens, renewed, released = 0, nil, nil
	}
	if renewing && len(sends) == 0 {
		s.mu.Lock()
		s.lastRenew = s.clock.Now()
		s.mu.Unlock()
	}
	return true
}

// errReply is a reply of a shape the scripts do not give: not the store's fault of
// reach, but a store that is not what it should be.
var errReply = errors.New("limit store: unexpected reply")

// failed notes a failed round trip; diagnose (the probe's, off any call's path) also
// tells a store that answers without TLS from one that is down.
func (s *Store) failed(err error, diagnose bool) {
	reason, msg := classify(err)
	if diagnose && reason == ReasonUnreachable && s.tlsOn && speaksPlaintext(s.addr, s.timeout) {
		reason, msg = ReasonTLSFailed, "the store answers without TLS on this port: enable TLS on the store (or, on a trusted network only, set spec.limitStore.redis.tls.disabled)"
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.downTill = now.Add(probeInterval)
	if s.health.Ready || s.health.Reason != reason || s.health.Message != msg {
		s.health = Health{Reason: reason, Message: msg, Since: now}
	}
}

// speaksPlaintext reports whether a Redis answers a plain PING at addr: a TLS client
// facing it only sees its handshake time out.
func speaksPlaintext(addr string, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return false
	}
	return b[0] == '+' || b[0] == '-'
}

func (s *Store) succeeded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.downTill = time.Time{}
	if !s.health.Ready {
		s.health = Health{Ready: true, Reason: ReasonConnected, Message: "the limits are enforced in the store", Since: s.clock.Now()}
	}
}

// classify names a failure for the VoiceAgent's condition: the reason and a message
// with the fix, never the server's own words (which could carry anything).
func classify(err error) (reason, message string) {
	if errors.Is(err, errReply) {
		return ReasonError, "the store's reply is not the limit scripts' (a proxy or another server on that port?); check spec.limitStore.redis.address"
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		text := rerr.Error()
		// An unauthenticated client's long command is refused as a protocol error.
		if strings.Contains(text, "unauthenticated") {
			text = "NOAUTH"
		}
		for _, p := range []string{"WRONGPASS", "NOAUTH", "NOPERM"} {
			if strings.HasPrefix(text, p) {
				return ReasonAuthenticationFailed, p + ": the store refused the credentials; check the Secret named in spec.limitStore.redis.credentials (and username)"
			}
		}
		code, _, _ := strings.Cut(text, " ")
		if !neterr.SafeKind(code) {
			code = "an error"
		}
		return ReasonError, "the store answered " + code + "; check that it is Redis 6.2 or later with scripting enabled"
	}
	switch kind := neterr.Kind(err); kind {
	case "TLS verification failed":
		return ReasonTLSFailed, "the store's certificate is not trusted for its address; set spec.limitStore.redis.tls.ca (and serverName) to its CA"
	case "TLS handshake failed":
		return ReasonTLSFailed, "the TLS handshake with the store failed: it may not serve TLS on this port; enable TLS on the store (or, on a trusted network only, set spec.limitStore.redis.tls.disabled)"
	case "connection failed":
		if errors.Is(err, ErrUnavailable) {
			return ReasonUnreachable, "the store is unreachable"
		}
		return ReasonUnreachable, "the connection to the store failed (" + kind + "); check spec.limitStore.redis.address, the store's TLS setting and that it is up"
	default:
		return ReasonUnreachable, "the store cannot be reached (" + kind + "); check spec.limitStore.redis.address and that it is up"
	}
}
