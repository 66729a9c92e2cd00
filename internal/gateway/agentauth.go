package gateway

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/ratelimit"
)

// A gateway in its own pods is reached over the pod network, where loopback no longer
// says who is calling: every call must carry the agent token, a secret the operator
// keeps in a Secret that the agent's pods and the gateway's pods both mount. The agent
// sends it as its SDK's API key, so no SDK needs changing. The token only says "this is
// the agent": it is no provider credential, and the gateway strips it before anything
// else reads the request. (An agent that puts its own token in a prompt or a body
// sends it where it likes; nothing can stop that, and it grants nothing the agent did
// not have.)

const (
	agentTokenChallenge       = `Bearer realm="voiceagent-gateway"`
	defaultPreviousTokenGrace = 2 * time.Minute
	// tokenRereadInterval bounds the file reads that presented tokens can cause: a
	// flood of wrong tokens costs a read a second, not one each.
	tokenRereadInterval = time.Second
	// maxTokenFileBytes: the operator writes a few dozen bytes; a bigger file is a
	// mistake, not a token.
	maxTokenFileBytes = 4 << 10

	// A source gets authFailureBurst failures, then one more per authFailureRefill. The
	// map of sources is bounded: a flood from many addresses evicts the sources that
	// failed longest ago (whose buckets have refilled the most), so memory stays flat.
	// The token's 256 bits are what keep it from being guessed; the throttle keeps the
	// guessing, and its audit records, to a trickle.
	authFailureBurst  = 10
	authFailureRefill = 6 * time.Second
	maxAuthSources    = 4096
)

// agentTokenHeaders are where the official SDKs put their API key: OpenAI's
// Authorization: Bearer, Anthropic's x-api-key, Gemini's x-goog-api-key. Gemini's REST
// form, the key query parameter, is the fourth place.
var agentTokenHeaders = []string{"Authorization", "X-Api-Key", "X-Goog-Api-Key"}

// agentTokenCandidates returns every non-empty value the request offers as an API key
// and the query without its key parameters. Pieces of the query holding ";" or an
// escape that does not decode go too: Go's query parser drops them, so nothing after
// this needs them, while another HTTP stack could split one at ";" and find a key in it.
func agentTokenCandidates(h http.Header, rawQuery string) (candidates []string, query string) {
	for _, v := range h.Values("Authorization") {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		if strings.EqualFold(scheme, "Bearer") {
			if t := strings.TrimSpace(rest); t != "" {
				candidates = append(candidates, t)
			}
		}
	}
	for _, k := range agentTokenHeaders[1:] {
		for _, v := range h.Values(k) {
			if t := strings.TrimSpace(v); t != "" {
				candidates = append(candidates, t)
			}
		}
	}
	if rawQuery == "" {
		return candidates, ""
	}
	kept := make([]string, 0, strings.Count(rawQuery, "&")+1)
	for piece := range strings.SplitSeq(rawQuery, "&") {
		if piece == "" {
			continue
		}
		if strings.Contains(piece, ";") {
			continue
		}
		rawName, rawValue, _ := strings.Cut(piece, "=")
		name, err1 := url.QueryUnescape(rawName)
		value, err2 := url.QueryUnescape(rawValue)
		if err1 != nil || err2 != nil {
			continue
		}
		if name == "key" {
			if value != "" {
				candidates = append(candidates, value)
			}
			continue
		}
		kept = append(kept, piece)
	}
	return candidates, strings.Join(kept, "&")
}

// stripAgentToken removes the token's carriers from the request, so that no route,
// upstream, record or log line can see them.
func stripAgentToken(r *http.Request, query string) {
	for _, k := range agentTokenHeaders {
		r.Header.Del(k)
	}
	if r.URL.RawQuery == query {
		return
	}
	r.URL.RawQuery = query
	if p, _, ok := strings.Cut(r.RequestURI, "?"); ok {
		r.RequestURI = p
		if query != "" {
			r.RequestURI += "?" + query
		}
	}
}

type tokenDigest = [sha256.Size]byte

// agentToken is the accepted token, read from its file: the current one, and the one it
// replaced for the grace period. Only digests are held, and compared in constant time:
// comparing digests of equal length tells nothing of the token's length either.
type agentToken struct {
	clock clock.PassiveClock

	mu        sync.Mutex
	path      string
	nextPath  string
	next      tokenDigest
	hasNext   bool // a rotation announced the token next, which is accepted too
	grace     time.Duration
	current   tokenDigest
	loaded    bool
	previous  tokenDigest
	prevUntil time.Time // zero: no previous token is accepted
	readErr   error
	// lastMismatchRead and lastReadyRead throttle the reads that calls and readiness
	// probes cause; configure reads at once.
	lastMismatchRead, lastReadyRead time.Time
}

type tokenVerdict int

const (
	tokenValid tokenVerdict = iota
	tokenInvalid
	tokenUnavailable // the file could never be read: nothing to compare with
)

// configure puts a configuration's agentAuth in force; a new file is read at once.
func (a *agentToken) configure(c *gw.AgentAuth) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c == nil {
		a.resetLocked("")
		return
	}
	a.grace = c.PreviousTokenGrace.Duration
	if a.grace == 0 {
		a.grace = defaultPreviousTokenGrace
	}
	if c.TokenFile != a.path || c.NextTokenFile != a.nextPath {
		a.resetLocked(c.TokenFile)
		a.nextPath = c.NextTokenFile
		a.readLocked()
	}
}

// resetLocked forgets the tokens of another file.
func (a *agentToken) resetLocked(path string) {
	a.path, a.nextPath, a.next, a.hasNext = path, "", tokenDigest{}, false
	a.current, a.previous, a.loaded, a.prevUntil, a.readErr = tokenDigest{}, tokenDigest{}, false, time.Time{}, nil
	a.lastMismatchRead, a.lastReadyRead = time.Time{}, time.Time{}
}

// readLocked reads the file. A token that differs from the current one replaces it, and
// the replaced one is accepted until the grace passes. A failed read keeps the token in
// force: a Secret volume is swapped whole, so a failed read is a moment, not a change.
func (a *agentToken) readLocked() {
	a.readNextLocked()
	data, err := readTokenFile(a.path)
	token := bytes.TrimRight(data, " \t\r\n")
	switch {
	case err != nil:
		a.readErr = fmt.Errorf("agent token file %s cannot be read: %w", a.path, err)
		return
	case len(data) > maxTokenFileBytes:
		a.readErr = fmt.Errorf("agent token file %s is larger than %d bytes", a.path, maxTokenFileBytes)
		return
	case len(token) == 0:
		a.readErr = fmt.Errorf("agent token file %s is empty", a.path)
		return
	}
	a.readErr = nil
	d := sha256.Sum256(token)
	if !a.loaded {
		a.current, a.loaded = d, true
		return
	}
	if d != a.current {
		a.previous, a.prevUntil = a.current, a.clock.Now().Add(a.grace)
		a.current = d
	}
}

func readTokenFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	var data []byte
	if err == nil {
		data, err = io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
		_ = f.Close()
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return data, err
}

// readNextLocked reads the token a rotation announced, if any: no file, an empty one
// or one that cannot be read means none (the current token stays what it was).
func (a *agentToken) readNextLocked() {
	a.hasNext = false
	if a.nextPath == "" {
		return
	}
	data, err := readTokenFile(a.nextPath)
	token := bytes.TrimRight(data, " \t\r\n")
	if err != nil || len(data) > maxTokenFileBytes || len(token) == 0 {
		return
	}
	a.next, a.hasNext = sha256.Sum256(token), true
}

// check judges the candidates a request offers: any one matching is enough.
func (a *agentToken) check(candidates []string) tokenVerdict {
	digests := make([]tokenDigest, len(candidates))
	for i, c := range candidates {
		digests[i] = sha256.Sum256([]byte(c))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	if !a.loaded {
		if now.Sub(a.lastMismatchRead) >= tokenRereadInterval {
			a.lastMismatchRead = now
			a.readLocked()
		}
		if !a.loaded {
			return tokenUnavailable
		}
	}
	if a.matchLocked(digests, now) {
		return tokenValid
	}
	// The file may have been rotated since it was last read: the agent's pods can see
	// the new token before the gateway's do.
	if now.Sub(a.lastMismatchRead) >= tokenRereadInterval {
		a.lastMismatchRead = now
		a.readLocked()
		if a.matchLocked(digests, now) {
			return tokenValid
		}
	}
	return tokenInvalid
}

func (a *agentToken) matchLocked(digests []tokenDigest, now time.Time) bool {
	withPrevious := now.Before(a.prevUntil)
	match := 0
	for i := range digests {
		match |= subtle.ConstantTimeCompare(digests[i][:], a.current[:])
		if withPrevious {
			match |= subtle.ConstantTimeCompare(digests[i][:], a.previous[:])
		}
		if a.hasNext {
			match |= subtle.ConstantTimeCompare(digests[i][:], a.next[:])
		}
	}
	return match == 1
}

// ready reports whether the token file can be read now, naming it when not.
func (a *agentToken) ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now := a.clock.Now(); now.Sub(a.lastReadyRead) >= tokenRereadInterval {
		a.lastReadyRead = now
		a.readLocked()
	}
	if a.readErr != nil {
		return a.readErr
	}
	if !a.loaded {
		return fmt.Errorf("agent token file %s not read yet", a.path)
	}
	return nil
}

// authThrottle counts failed attempts per source address.
type authThrottle struct {
	clock clock.PassiveClock

	mu       sync.Mutex
	bySource map[string]*list.Element
	order    *list.List // of *authSource, the longest since its last failure first
	max      int
}

type authSource struct {
	addr   string
	bucket *ratelimit.Bucket
}

func newAuthThrottle(clk clock.PassiveClock, maxSources int) *authThrottle {
	return &authThrottle{clock: clk, bySource: map[string]*list.Element{}, order: list.New(), max: maxSources}
}

// throttled reports whether addr has used up its failures, and when the next attempt
// may come. It takes nothing: only a failure does.
func (t *authThrottle) throttled(addr string) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.bySource[addr]
	if !ok {
		return false, 0
	}
	level := e.Value.(*authSource).bucket.Tokens()
	if level >= 1-1e-9 {
		return false, 0
	}
	return true, time.Duration((1 - level) * float64(authFailureRefill))
}

// fail takes one attempt from addr's bucket.
func (t *authThrottle) fail(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.bySource[addr]; ok {
		_, _ = e.Value.(*authSource).bucket.Allow()
		t.order.MoveToBack(e)
		return
	}
	for t.order.Len() >= t.max {
		oldest := t.order.Front()
		t.order.Remove(oldest)
		delete(t.bySource, oldest.Value.(*authSource).addr)
	}
	s := &authSource{addr: addr, bucket: ratelimit.NewBucket(1/authFailureRefill.Seconds(), authFailureBurst, t.clock)}
	_, _ = s.bucket.Allow()
	t.bySource[addr] = t.order.PushBack(s)
}

func (t *authThrottle) sources() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.bySource)
}

// sourceAddr is the caller's IP, one spelling per address.
func sourceAddr(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().WithZone("").String()
	}
	return host
}

// authenticateAgent admits a call that carries the agent token and answers any other.
// The token's carriers are removed from r whatever the outcome.
//
// A source that has used up its failures is refused with 429 even when it now sends
// the right token, until its bucket refills: comparing would hand whoever shares the
// agent's address (a taken-over neighbour) more guesses. The agent itself, which reads
// the token from its file, does not fail in the first place; a throttled agent is one
// that was sending a wrong or no token, and it recovers one attempt every 6 s.
func (g *Gateway) authenticateAgent(w http.ResponseWriter, r *http.Request) bool {
	candidates, query := agentTokenCandidates(r.Header, r.URL.RawQuery)
	stripAgentToken(r, query)
	src := sourceAddr(r.RemoteAddr)
	if throttled, wait := g.authThrottle.throttled(src); throttled {
		g.refuseAgent(w, r, src, "throttled", http.StatusTooManyRequests, "agent_token_throttled",
			"too many calls without a valid agent token from this address; retry after the Retry-After delay", wait)
		return false
	}
	if len(candidates) == 0 {
		g.authThrottle.fail(src)
		g.refuseAgent(w, r, src, "missing", http.StatusUnauthorized, "agent_token_missing",
			"no agent token: send the contents of $VOICEAGENT_AGENT_TOKEN_FILE as the SDK's API key (Authorization: Bearer, x-api-key or x-goog-api-key)", 0)
		return false
	}
	switch g.agentToken.check(candidates) {
	case tokenValid:
		return true
	case tokenUnavailable:
		g.refuseAgent(w, r, src, "", http.StatusServiceUnavailable, "agent_token_unavailable",
			"the gateway cannot read its agent token yet and admits no call; retry shortly", time.Second)
		return false
	}
	g.authThrottle.fail(src)
	g.refuseAgent(w, r, src, "invalid", http.StatusUnauthorized, "agent_token_invalid",
		"the agent token does not match; re-read $VOICEAGENT_AGENT_TOKEN_FILE, it changes on rotation", 0)
	return false
}

// refuseAgent answers an unauthenticated call. Its record goes through the refusal
// summary, so that a flood of them cannot fill the audit queue; reason is the metric's
// label ("" for no authentication failure).
func (g *Gateway) refuseAgent(w http.ResponseWriter, r *http.Request, src, reason string, status int, kind, message string, retryAfter time.Duration) {
	if reason != "" {
		g.metrics.agentAuthFailures.WithLabelValues(reason).Inc()
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", agentTokenChallenge)
	}
	c := g.newCall(r, "agent_auth", src)
	defer c.finish()
	c.deny(w, status, kind, message, retryAfter)
}
