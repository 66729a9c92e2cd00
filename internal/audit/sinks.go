package audit

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/voiceagent-dev/voiceagent-operator/internal/neterr"
)

// Sink types.
const (
	SinkWebhook = "webhook"
	SinkSyslog  = "syslog"
	SinkStdout  = "stdout"
)

// SignatureHeader carries the webhook body's HMAC: "t=<unix seconds>,v1=<hex>", the
// HMAC-SHA256 with the sink's signing key over "<t>." followed by the body.
const SignatureHeader = "X-VoiceAgent-Signature"

// SinkConfig describes one sink. Credentials are named by file and re-read when the
// file changes.
type SinkConfig struct {
	Name            string
	Type            string
	URL             string // webhook: https only
	Address         string // syslog: host:port, TLS
	BearerTokenFile string
	SigningKeyFile  string
	CAFile          string // trusted in addition to the system roots
	Stdout          io.Writer
	Hostname        string // syslog HOSTNAME
	Timeout         time.Duration
	Clock           clock.PassiveClock
}

// NewSink builds a sink from its configuration.
func NewSink(c SinkConfig) (Sink, error) {
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	switch c.Type {
	case SinkStdout:
		w := c.Stdout
		if w == nil {
			w = os.Stdout
		}
		return &stdoutSink{w: w}, nil
	case SinkWebhook:
		return newWebhookSink(c)
	case SinkSyslog:
		return newSyslogSink(c)
	}
	return nil, fmt.Errorf("audit sink %s: unknown type %q", c.Name, c.Type)
}

// tlsConfig trusts the system roots plus caFile.
func tlsConfig(caFile, serverName string) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		data, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file %s: not readable", caFile)
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate", caFile)
		}
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}, nil
}

type stdoutSink struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *stdoutSink) Deliver(_ context.Context, lines [][]byte) error {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.w.Write(b.Bytes())
	return err
}

type webhookSink struct {
	url    string
	host   string
	client *http.Client
	token  *secretFile
	key    *secretFile
	clock  clock.PassiveClock
}

func newWebhookSink(c SinkConfig) (*webhookSink, error) {
	u, err := url.Parse(c.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("audit sink %s: webhook URL must be https://", c.Name)
	}
	tc, err := tlsConfig(c.CAFile, "")
	if err != nil {
		return nil, fmt.Errorf("audit sink %s: %w", c.Name, err)
	}
	tr := &http.Transport{
		TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConns: 4, IdleConnTimeout: 90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}
	s := &webhookSink{url: c.URL, host: u.Host, clock: c.Clock, client: &http.Client{
		Transport: tr, Timeout: c.Timeout,
		// A redirect could take records where the NetworkPolicy and the config never meant.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	if c.BearerTokenFile != "" {
		s.token = newSecretFile(c.BearerTokenFile, true)
	}
	if c.SigningKeyFile != "" {
		s.key = newSecretFile(c.SigningKeyFile, true)
	}
	return s, nil
}

// Deliver posts the batch as a JSON array whose elements are the records' canonical
// bytes, so that a receiver can re-hash each element as it came.
func (s *webhookSink) Deliver(ctx context.Context, lines [][]byte) error {
	n := 2
	for _, l := range lines {
		n += len(l) + 1
	}
	body := make([]byte, 0, n)
	body = append(body, '[')
	for i, l := range lines {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, l...)
	}
	body = append(body, ']')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: bad request", s.host)
	}
	req.Header.Set("Content-Type", "application/json")
	if s.token != nil {
		tok, err := s.token.bytes()
		if err != nil {
			return fmt.Errorf("webhook %s: bearer token: %w", s.host, err)
		}
		req.Header.Set("Authorization", "Bearer "+string(tok))
	}
	if s.key != nil {
		key, err := s.key.bytes()
		if err != nil {
			return fmt.Errorf("webhook %s: signing key: %w", s.host, err)
		}
		req.Header.Set(SignatureHeader, SignWebhook(key, s.clock.Now(), body))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %s", s.host, neterr.Kind(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook %s: status %d", s.host, resp.StatusCode)
	}
	return nil
}

// SignWebhook is the X-VoiceAgent-Signature value for body at time t.
func SignWebhook(key []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	msg := make([]byte, 0, len(ts)+1+len(body))
	msg = append(append(append(msg, ts...), '.'), body...)
	return "t=" + ts + ",v1=" + hex.EncodeToString(hmacSHA256(key, msg))
}

// VerifyWebhook checks an X-VoiceAgent-Signature header as a receiver does: the HMAC
// must match and t must be within tolerance of now (replay protection).
func VerifyWebhook(key []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return errors.New("malformed signature header")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("signature timestamp outside tolerance")
	}
	want := SignWebhook(key, time.Unix(sec, 0), body)
	if subtle.ConstantTimeCompare([]byte(want), []byte("t="+ts+",v1="+sig)) != 1 {
		return errors.New("signature does not match")
	}
	return nil
}

// syslogSink sends RFC 5424 messages over TLS (RFC 5425) with octet-counting framing
// (RFC 6587): "<length> <message>". Syslog has no acknowledgement: a batch counts as
// delivered once written to the connection, so a connection the receiver has closed
// is detected before a batch is written to it.
type syslogSink struct {
	addr     string
	tls      *tls.Config
	hostname string
	pid      string
	timeout  time.Duration

	mu   sync.Mutex
	conn *tls.Conn
}

// syslogPRI is facility 13 (log audit) and severity 6 (informational): 13*8+6.
const syslogPRI = "<110>"

func newSyslogSink(c SinkConfig) (*syslogSink, error) {
	host, _, err := net.SplitHostPort(c.Address)
	if err != nil || host == "" {
		return nil, fmt.Errorf("audit sink %s: syslog address must be host:port", c.Name)
	}
	tc, err := tlsConfig(c.CAFile, host)
	if err != nil {
		return nil, fmt.Errorf("audit sink %s: %w", c.Name, err)
	}
	hn := syslogField(c.Hostname, 255)
	if hn == "-" {
		if h, err := os.Hostname(); err == nil {
			hn = syslogField(h, 255)
		}
	}
	return &syslogSink{addr: c.Address, tls: tc, hostname: hn, pid: strconv.Itoa(os.Getpid()), timeout: c.Timeout}, nil
}

// syslogField is a header field: printable US-ASCII without spaces, or "-".
func syslogField(s string, maxLen int) string {
	b := []byte(s)
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	if len(b) > maxLen {
		b = b[:maxLen]
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

func (s *syslogSink) Deliver(ctx context.Context, lines [][]byte) error {
	var frames bytes.Buffer
	for _, line := range lines {
		h, err := parseHeader(line)
		if err != nil {
			return errors.New("syslog: not a record line")
		}
		msg := make([]byte, 0, len(line)+128)
		msg = append(msg, syslogPRI+"1 "...)
		msg = append(msg, h.time...)
		msg = append(msg, ' ')
		msg = append(msg, s.hostname...)
		msg = append(msg, " voiceagent-gateway "...)
		msg = append(msg, s.pid...)
		msg = append(msg, ' ')
		msg = append(msg, h.kind...)
		msg = append(msg, " - "...)
		msg = append(msg, line...)
		frames.WriteString(strconv.Itoa(len(msg)))
		frames.WriteByte(' ')
		frames.Write(msg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !peerOpen(s.conn) {
		_ = s.conn.Close()
		s.conn = nil
	}
	if s.conn == nil {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: s.tls}
		c, err := d.DialContext(ctx, "tcp", s.addr)
		if err != nil {
			return fmt.Errorf("syslog %s: %s", s.addr, neterr.Kind(err))
		}
		s.conn = c.(*tls.Conn)
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := s.conn.Write(frames.Bytes()); err != nil {
		_ = s.conn.Close()
		s.conn = nil
		return fmt.Errorf("syslog %s: %s", s.addr, neterr.Kind(err))
	}
	return nil
}

// peerOpen reports whether the receiver still has the connection open: a short read
// that times out means nothing arrived, not even the close. (A deadline already in the
// past would time out without looking at the socket at all.)
func peerOpen(c *tls.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	_, err := c.Read(one[:])
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
