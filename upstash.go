// Package upstash is a client for the Upstash Redis REST API and, on top of
// it, the Chat SDK's state contract (subscriptions, locks, cache, lists and
// queues), byte-compatible with the TypeScript @chat-adapter/state-redis.
//
// It speaks HTTPS only, so it works where TCP sockets do not: AWS Lambda,
// Vercel Go functions and other serverless runtimes. Build one Client outside
// your handler and reuse it across invocations:
//
//	cfg, err := upstash.ConfigFromEnv() // UPSTASH_REDIS_REST_URL / _TOKEN, or Vercel's KV_REST_API_*
//	if err != nil { ... }
//	client, err := upstash.New(cfg)
//	if err != nil { ... }
//	state := upstash.NewState(client)
//
//	// in the handler:
//	first, err := state.SetIfNotExists(ctx, "dedupe:slack:"+msgID, true, 10*time.Minute)
//
// Every call takes a context first and honours its deadline. Network failures
// are retried only when the request provably never reached the server or
// every command in it is safe to repeat; otherwise the error matches
// ErrOutcomeUnknown instead of risking a command applied twice.
package upstash

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-resty/resty/v2"
)

// Version is this library's version, sent in the telemetry header.
const Version = "0.1.0"

// syncTokenHeader carries the read-your-writes token in both directions.
const syncTokenHeader = "Upstash-Sync-Token"

// Client talks to one Upstash Redis database over its REST API. It is safe
// for concurrent use and holds no per-request state besides the latest
// read-your-writes token. Build it once, outside the handler.
type Client struct {
	baseURL   string
	rest      *resty.Client
	headers   http.Header // fixed headers, cloned into each request
	settings  settings
	syncToken atomic.Pointer[string]
	log       *slog.Logger
}

// RetryPolicy controls retries of failed requests. A request is only retried
// when it provably never reached the server (DNS, connect or TLS failures) or
// when every command in it is safe to repeat; 5xx and 429 replies are retried
// only in the second case. 4xx replies are never retried. The context's
// deadline bounds all attempts: no retry starts if its backoff would end
// past the deadline, or less than 5 ms before it.
type RetryPolicy struct {
	// MaxRetries is the number of retries after the first attempt; 0 disables
	// retries.
	MaxRetries int
	// MinBackoff is the wait before the first retry; each later wait doubles,
	// up to MaxBackoff. Waits are jittered to between half and all of that.
	MinBackoff, MaxBackoff time.Duration
}

// DefaultRetryPolicy is the policy of a Client built without WithRetry: four
// retries with waits of about 50, 100, 200 and 400 ms (at most 750 ms in all).
var DefaultRetryPolicy = RetryPolicy{MaxRetries: 4, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}

// NoRetry disables retries.
var NoRetry = RetryPolicy{}

// Limits bounds what the client sends and accepts. A zero field disables
// that check.
type Limits struct {
	// MaxRequestBytes bounds one request body. Upstash's Free and
	// Pay-as-you-go plans accept 10 MB.
	MaxRequestBytes int
	// MaxKeyBytes bounds each key. Upstash accepts keys up to 32 KB.
	MaxKeyBytes int
	// MaxResponseBytes bounds one response body read into memory.
	MaxResponseBytes int64
}

// DefaultLimits are Upstash's documented limits, with room for replies of
// 128 MB.
var DefaultLimits = Limits{MaxRequestBytes: 10 * 1024 * 1024, MaxKeyBytes: 32 * 1024, MaxResponseBytes: 128 << 20}

type settings struct {
	httpClient   *http.Client
	transport    http.RoundTripper
	timeout      time.Duration
	retry        RetryPolicy
	logger       *slog.Logger
	base64       bool
	readYourWrit bool
	telemetry    bool
	limits       Limits
}

// Option configures a Client.
type Option func(*settings)

// WithHTTPClient makes the client send requests through hc (its transport,
// timeouts and proxies). The client is copied, never modified.
func WithHTTPClient(hc *http.Client) Option { return func(s *settings) { s.httpClient = hc } }

// WithTransport makes the client send requests through rt, for example an
// instrumented or test transport.
func WithTransport(rt http.RoundTripper) Option { return func(s *settings) { s.transport = rt } }

// WithTimeout bounds each call whose context has no deadline (on Vercel, a
// request's context never has one). The default is 10 s; zero or less means
// calls without a deadline are unbounded.
func WithTimeout(d time.Duration) Option { return func(s *settings) { s.timeout = d } }

// WithRetry sets the retry policy; see RetryPolicy and NoRetry.
func WithRetry(p RetryPolicy) Option { return func(s *settings) { s.retry = p } }

// WithLogger makes the client log retries and decoding oddities at debug and
// warning levels. Log lines name commands, never arguments or the token.
func WithLogger(l *slog.Logger) Option { return func(s *settings) { s.logger = l } }

// WithBase64 turns base64 response encoding on (the default) or off. Off, the
// server replaces bytes that are not valid UTF-8 with U+FFFD, so values are no
// longer binary-safe.
func WithBase64(on bool) Option { return func(s *settings) { s.base64 = on } }

// WithReadYourWrites turns read-your-writes consistency on (the default) or
// off. On, each request carries the sync token of the latest response, so a
// read replica serves it only after catching up with this client's writes.
func WithReadYourWrites(on bool) Option { return func(s *settings) { s.readYourWrit = on } }

// WithTelemetry turns the Upstash-Telemetry-* headers (library version, Go
// version, platform) on (the default) or off. The environment variable
// UPSTASH_DISABLE_TELEMETRY, when set to anything, also turns them off.
func WithTelemetry(on bool) Option { return func(s *settings) { s.telemetry = on } }

// WithLimits replaces DefaultLimits.
func WithLimits(l Limits) Option { return func(s *settings) { s.limits = l } }

// New returns a client for the database cfg names. It does no network I/O;
// call Ping to check the credentials.
func New(cfg Config, opts ...Option) (*Client, error) {
	baseURL, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	s := settings{
		timeout:      10 * time.Second,
		retry:        DefaultRetryPolicy,
		base64:       true,
		readYourWrit: true,
		telemetry:    os.Getenv("UPSTASH_DISABLE_TELEMETRY") == "",
		limits:       DefaultLimits,
	}
	for _, o := range opts {
		o(&s)
	}
	if s.retry.MaxRetries < 0 || s.retry.MinBackoff < 0 || s.retry.MaxBackoff < s.retry.MinBackoff {
		return nil, fmt.Errorf("%w: retry policy needs MaxRetries >= 0 and 0 <= MinBackoff <= MaxBackoff", ErrConfig)
	}

	var hc http.Client
	if s.httpClient != nil {
		hc = *s.httpClient
	}
	if s.transport != nil {
		hc.Transport = s.transport
	}
	if hc.Transport == nil {
		hc.Transport = defaultTransport()
	}
	rest := resty.NewWithClient(&hc)
	rest.SetLogger(restyLogger{})
	rest.SetDisableWarn(true)

	headers := http.Header{}
	headers.Set("Authorization", "Bearer "+cfg.Token)
	headers.Set("Content-Type", "application/json")
	headers.Set("User-Agent", "chatstate-upstash-go/"+Version)
	if s.base64 {
		headers.Set("Upstash-Encoding", "base64")
	}
	if s.telemetry {
		headers.Set("Upstash-Telemetry-Sdk", "chatstate-upstash-go@v"+Version)
		headers.Set("Upstash-Telemetry-Runtime", "go@"+runtime.Version())
		headers.Set("Upstash-Telemetry-Platform", detectPlatform())
	}
	log := s.logger
	if log == nil {
		log = slog.New(discardHandler{})
	}
	return &Client{baseURL: baseURL, rest: rest, headers: headers, settings: s, log: log}, nil
}

// defaultTransport is tuned for functions that are frozen between
// invocations: idle connections are dropped after 30 s (checked against the
// wall clock on reuse, so a connection that sat through a freeze is not
// reused), TLS sessions are cached to make the reconnect cheap, and HTTP/2 is
// kept. Timeouts per call come from the context, not from the transport.
func defaultTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.IdleConnTimeout = 30 * time.Second
	t.TLSHandshakeTimeout = 5 * time.Second
	t.MaxIdleConnsPerHost = 16
	t.TLSClientConfig = &tls.Config{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	return t
}

func detectPlatform() string {
	switch {
	case os.Getenv("VERCEL") != "":
		return "vercel"
	case os.Getenv("AWS_LAMBDA_FUNCTION_NAME") != "" || os.Getenv("AWS_REGION") != "":
		return "aws"
	}
	return "unknown"
}

// Format prints the client as upstash.Client{URL: "..."} for every verb, so
// that printing or logging a client never shows the token held in its
// request headers.
func (c *Client) Format(f fmt.State, verb rune) {
	if c == nil {
		fmt.Fprint(f, "<nil>")
		return
	}
	fmt.Fprintf(f, "upstash.Client{URL: %q}", c.baseURL)
}

// SyncToken returns the read-your-writes token of the latest successful
// response, or "" if there has been none.
func (c *Client) SyncToken() string {
	if p := c.syncToken.Load(); p != nil {
		return *p
	}
	return ""
}

// SetSyncToken makes the next request carry token, so that it sees every
// write that preceded the response the token came from, even if that write
// went through another client.
func (c *Client) SetSyncToken(token string) { c.syncToken.Store(&token) }

// Run sends one command and returns its reply. A command error is returned
// as an *Error. Script commands fall back from EVALSHA to EVAL on NOSCRIPT.
func (c *Client) Run(ctx context.Context, cmd Command) (Value, error) {
	v, err := c.runOne(ctx, cmd)
	if cmd.script != nil && isNoScript(err) {
		c.log.DebugContext(ctx, "upstash: script not cached, sending EVAL", "sha", cmd.script.sha)
		v, err = c.runOne(ctx, cmd.evalForm())
	}
	return v, err
}

// Do sends one command built from its arguments: Do(ctx, "GET", "key").
func (c *Client) Do(ctx context.Context, name string, args ...any) (Value, error) {
	return c.Run(ctx, Cmd(name, args...))
}

func (c *Client) runOne(ctx context.Context, cmd Command) (Value, error) {
	body, err := c.encode(nil, cmd, -1)
	if err != nil {
		return Value{}, err
	}
	if err := c.checkSize(body, cmd.Name()); err != nil {
		return Value{}, err
	}
	resp, err := c.send(ctx, "", body, cmd.safeToRepeat(), cmd.Name())
	if err != nil {
		return Value{}, err
	}
	var r reply
	if err := parseReplies(resp, &r); err != nil {
		return Value{}, protocolErrorf("%s: body is not a JSON object: %v", cmd.Name(), err)
	}
	if r.Error != nil {
		return Value{}, newError(cmd.Name(), -1, http.StatusOK, *r.Error)
	}
	v, err := r.resultValue(c.settings.base64)
	if err != nil {
		return Value{}, fmt.Errorf("%s: %w", cmd.Name(), err)
	}
	return v, nil
}

// Pipeline sends commands in one request to /pipeline and returns one Result
// per command, in order. A pipeline is not atomic: other clients' commands
// may run between its commands, and a failing command does not stop later
// ones. The returned error concerns the whole request (network, auth,
// protocol); per-command errors are in the results. Scripts that the server
// had not cached are re-sent as EVAL in one follow-up request, so they run
// after the commands that followed them.
func (c *Client) Pipeline(ctx context.Context, cmds ...Command) ([]Result, error) {
	results, err := c.batch(ctx, "/pipeline", cmds)
	if err != nil {
		return nil, err
	}
	var retry []Command
	var at []int
	for i, r := range results {
		if cmds[i].script != nil && isNoScript(r.Err) {
			retry = append(retry, cmds[i].evalForm())
			at = append(at, i)
		}
	}
	if len(retry) > 0 {
		again, err := c.batch(ctx, "/pipeline", retry)
		if err != nil {
			// The first request's other commands ran: keep their results
			// and give each script that could not be re-sent this error.
			for _, i := range at {
				results[i].Err = fmt.Errorf("PIPELINE command %d: re-sending the script as EVAL after NOSCRIPT: %w", i, err)
			}
			return results, nil
		}
		for j, i := range at {
			r := again[j]
			if e, ok := r.Err.(*Error); ok {
				e.Index = i
			}
			results[i] = r
		}
	}
	return results, nil
}

// Transaction sends commands to /multi-exec, where they run atomically. If
// the server discards the transaction as a whole (a syntax error, an unknown
// command) nothing runs and the error matches ErrTransactionDiscarded;
// otherwise each command's result or run-time error is in its Result.
// Scripts are sent in full (EVAL), since a NOSCRIPT inside a transaction
// could not be repaired without breaking atomicity.
func (c *Client) Transaction(ctx context.Context, cmds ...Command) ([]Result, error) {
	sent := make([]Command, len(cmds))
	for i, cmd := range cmds {
		if cmd.script != nil {
			cmd = cmd.evalForm()
		}
		sent[i] = cmd
	}
	return c.batch(ctx, "/multi-exec", sent)
}

func (c *Client) batch(ctx context.Context, path string, cmds []Command) ([]Result, error) {
	label := "PIPELINE"
	if path == "/multi-exec" {
		label = "MULTI-EXEC"
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("%w: empty %s", ErrInvalidArgument, strings.ToLower(label))
	}
	body := append(make([]byte, 0, 64*len(cmds)), '[')
	safe := true
	for i, cmd := range cmds {
		if i > 0 {
			body = append(body, ',')
		}
		var err error
		if body, err = c.encode(body, cmd, i); err != nil {
			return nil, err
		}
		safe = safe && cmd.safeToRepeat()
	}
	body = append(body, ']')
	if err := c.checkSize(body, label); err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, path, body, safe, label)
	if err != nil {
		return nil, err
	}
	var replies []reply
	if err := parseReplies(resp, &replies); err != nil {
		// A discarded transaction answers with one {"error"} object.
		var r reply
		if parseReplies(resp, &r) == nil && r.Error != nil {
			return nil, newError(label, -1, http.StatusOK, *r.Error)
		}
		return nil, protocolErrorf("%s: body is not a JSON array: %v", label, err)
	}
	if len(replies) != len(cmds) {
		return nil, protocolErrorf("%s: %d replies for %d commands", label, len(replies), len(cmds))
	}
	results := make([]Result, len(cmds))
	for i, r := range replies {
		if r.Error != nil {
			results[i].Err = newError(cmds[i].Name(), i, http.StatusOK, *r.Error)
			continue
		}
		v, err := r.resultValue(c.settings.base64)
		if err != nil {
			return nil, fmt.Errorf("%s command %d (%s): %w", label, i, cmds[i].Name(), err)
		}
		results[i].Value = v
	}
	return results, nil
}

// encode appends cmd as a JSON array to buf, checking its arguments.
func (c *Client) encode(buf []byte, cmd Command, index int) ([]byte, error) {
	name := cmd.Name()
	where := name
	if index >= 0 {
		where = fmt.Sprintf("command %d (%s)", index, name)
	}
	if name == "" {
		return buf, fmt.Errorf("%w: %s: command name must be a non-empty string", ErrInvalidArgument, where)
	}
	if max := c.settings.limits.MaxKeyBytes; max > 0 {
		for _, k := range cmd.keys() {
			if n := argLen(k); n > max {
				return buf, fmt.Errorf("%w: %s: key of %d bytes exceeds the %d-byte key limit", ErrRequestTooLarge, where, n, max)
			}
		}
	}
	buf = append(buf, '[')
	for i, a := range cmd.args {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = appendArg(buf, a); err != nil {
			return buf, fmt.Errorf("%s argument %d: %w", where, i, err)
		}
	}
	return append(buf, ']'), nil
}

func (c *Client) checkSize(body []byte, label string) error {
	if max := c.settings.limits.MaxRequestBytes; max > 0 && len(body) > max {
		return fmt.Errorf("%w: %s request of %d bytes exceeds the %d-byte limit", ErrRequestTooLarge, label, len(body), max)
	}
	return nil
}

// attemptOutcome is what one HTTP attempt produced.
type attemptOutcome struct {
	status int
	body   []byte
	token  string
	wrote  bool // some of the request may have reached the server
	// answered is set when the server replied but the reply could not be
	// used (it is over MaxResponseBytes): the command ran, and asking again
	// would not give a usable reply either.
	answered bool
	err      error
}

// send posts body to path, retrying as the policy and idempotency allow, and
// returns the body of a 2xx response. Non-2xx responses become errors.
func (c *Client) send(ctx context.Context, path string, body []byte, idempotent bool, label string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok && c.settings.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.settings.timeout)
		defer cancel()
	}
	policy := c.settings.retry
	backoff := policy.MinBackoff
	var last attemptOutcome
	var lastErr error
	for attempt := 0; ; attempt++ {
		// No attempt starts once the context is done. (net/http would give
		// up before any trace event, which mayHaveSent could not tell from
		// a failure after sending.)
		if ctxErr := ctxDone(ctx); ctxErr != nil {
			if attempt == 0 {
				return nil, fmt.Errorf("upstash: %s: %w", label, ctxErr)
			}
			return nil, c.finalError(ctxErr, lastErr, last, idempotent, label)
		}
		out := c.attempt(ctx, path, body, idempotent)
		err := out.err
		if err == nil {
			if out.token != "" {
				c.SetSyncToken(out.token)
			}
			if out.status >= 200 && out.status < 300 {
				return out.body, nil
			}
			err = c.statusError(out.status, out.body, label, path)
		}
		retryable := c.retryable(out, idempotent)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, c.finalError(ctxErr, err, out, idempotent, label)
		}
		if !retryable || attempt >= policy.MaxRetries {
			return nil, c.finalError(nil, err, out, idempotent, label)
		}
		last, lastErr = out, err
		wait := backoff/2 + rand.N(backoff/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait+minAttemptTime {
			return nil, c.finalError(context.DeadlineExceeded, err, out, idempotent, label)
		}
		c.log.DebugContext(ctx, "upstash: retrying", "command", label, "attempt", attempt+1, "wait", wait, "error", err)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, c.finalError(ctx.Err(), err, out, idempotent, label)
		case <-timer.C:
		}
		backoff = min(backoff*2, policy.MaxBackoff)
	}
}

// minAttemptTime is the least time a retry must have left after its
// backoff. One started at the very end of the budget cannot succeed, and it
// could turn a clean "never sent" into ErrOutcomeUnknown by reaching the
// server just as the deadline cancels it.
const minAttemptTime = 5 * time.Millisecond

// ctxDone is ctx.Err(), except that it reports DeadlineExceeded as soon as
// the deadline has passed: the context's own timer fires a little later, and
// an attempt started in between would start after the deadline.
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// retryable reports whether a failed attempt may be repeated.
func (c *Client) retryable(out attemptOutcome, idempotent bool) bool {
	if out.answered {
		return false
	}
	if out.err != nil {
		return !out.wrote || idempotent
	}
	// The server answered. Only server-side failures are worth repeating, and
	// only when repeating cannot apply a command twice.
	return idempotent && (out.status >= 500 && out.status != http.StatusNotImplemented || out.status == http.StatusTooManyRequests)
}

// finalError builds the error of a request that will not be tried again.
func (c *Client) finalError(ctxErr, err error, out attemptOutcome, idempotent bool, label string) error {
	// A 5xx may come after the command ran; a 429 is a refusal (it is
	// retried only for safe commands, to stay conservative, but nothing ran).
	ambiguous := !idempotent && !out.answered && (out.err != nil && out.wrote || out.err == nil && out.status >= 500)
	switch {
	case ambiguous && ctxErr != nil:
		return fmt.Errorf("%w: %s: %w (%w)", ErrOutcomeUnknown, label, ctxErr, err)
	case ambiguous:
		return fmt.Errorf("%w: %s: %w", ErrOutcomeUnknown, label, err)
	case ctxErr != nil && !errors.Is(err, ctxErr):
		return fmt.Errorf("upstash: %s: %w (last error: %w)", label, ctxErr, err)
	case out.err != nil:
		return fmt.Errorf("upstash: %s: %w", label, err)
	}
	return err
}

// statusError turns a non-2xx response into an error.
func (c *Client) statusError(status int, body []byte, label, path string) error {
	var r reply
	msg := ""
	if parseReplies(body, &r) == nil && r.Error != nil {
		msg = *r.Error
	}
	if msg == "" && status != http.StatusUnauthorized {
		text := strings.TrimSpace(string(body))
		if status == http.StatusRequestEntityTooLarge {
			return &Error{Command: label, Index: -1, Status: status, Message: "request too large"}
		}
		return fmt.Errorf("%w: %s: HTTP %d with a body that is not an Upstash error: %q", ErrProtocol, label, status, truncate(text, 200))
	}
	if msg == "" {
		msg = "unauthorized"
	}
	e := newError(label, -1, status, msg)
	if path == "/multi-exec" && status >= 400 && status < 500 && status != http.StatusUnauthorized {
		e.Command = "MULTI-EXEC"
	}
	return e
}

// attempt sends one HTTP request and reads the response.
func (c *Client) attempt(ctx context.Context, path string, body []byte, idempotent bool) attemptOutcome {
	var traced, wrote atomic.Bool
	trace := &httptrace.ClientTrace{
		GetConn:      func(string) { traced.Store(true) },
		GotConn:      func(httptrace.GotConnInfo) { traced.Store(true) },
		WroteHeaders: func() { wrote.Store(true) },
	}
	req := c.rest.R().
		SetContext(httptrace.WithClientTrace(ctx, trace)).
		SetDoNotParseResponse(true).
		SetBody(bytes.NewReader(body))
	req.Header = make(http.Header, len(c.headers)+2)
	for k, v := range c.headers {
		req.Header[k] = v
	}
	if c.settings.readYourWrit {
		if tok := c.SyncToken(); tok != "" {
			req.Header.Set(syncTokenHeader, tok)
		}
	}
	if idempotent {
		// A present-but-empty Idempotency-Key lets net/http itself replay the
		// request on a stale pooled connection; nothing is sent on the wire.
		req.Header["Idempotency-Key"] = nil
	}
	resp, err := req.Post(c.baseURL + path)
	if err != nil {
		return attemptOutcome{wrote: mayHaveSent(err, traced.Load(), wrote.Load()), err: err}
	}
	raw := resp.RawBody()
	defer raw.Close()
	data, err := readLimited(raw, c.settings.limits.MaxResponseBytes, resp.RawResponse.ContentLength)
	if errors.Is(err, ErrProtocol) {
		return attemptOutcome{status: resp.StatusCode(), wrote: true, answered: true, err: err}
	}
	if err != nil {
		// The server received the request and began to answer.
		return attemptOutcome{wrote: true, err: err}
	}
	out := attemptOutcome{status: resp.StatusCode(), body: data, wrote: true}
	if out.status >= 200 && out.status < 300 {
		out.token = resp.Header().Get(syncTokenHeader)
	}
	return out
}

// mayHaveSent reports whether a request that failed with err may have
// reached the server. net/http's transports report through httptrace when
// they get a connection and when they have written the headers; a transport
// that reports nothing (a custom RoundTripper) is only trusted for errors
// that come before any connection exists: a failed dial or DNS lookup.
func mayHaveSent(err error, traced, wroteHeaders bool) bool {
	if wroteHeaders {
		return true
	}
	if traced {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	var dns *net.DNSError
	return !errors.As(err, &dns)
}

// readLimited reads a response body of at most max bytes (no limit if max
// is 0 or less). size is the announced Content-Length, or -1: when known it
// sizes the buffer once instead of growing it by doubling, which for large
// replies would hold up to twice the body in memory.
func readLimited(r io.Reader, max, size int64) ([]byte, error) {
	if max > 0 && size > max {
		return nil, fmt.Errorf("%w: response of %d bytes is larger than %d bytes", ErrProtocol, size, max)
	}
	if max > 0 {
		r = io.LimitReader(r, max+1)
	}
	data, err := readBody(r, size)
	if err != nil {
		return nil, err
	}
	if max <= 0 {
		return data, nil
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%w: response larger than %d bytes", ErrProtocol, max)
	}
	return data, nil
}

// readBody reads r to the end into a buffer of size bytes (the announced
// Content-Length, or -1), doubling it when it is full: io.ReadAll grows by
// append's smaller steps and, for a large chunked reply, allocates several
// times the body in all.
func readBody(r io.Reader, size int64) ([]byte, error) {
	// One byte more than announced, so that reading the final EOF does not
	// find the buffer full and double it.
	capacity := size + 1
	if size < 0 {
		capacity = 512
	}
	b := make([]byte, 0, capacity)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			grown := make([]byte, len(b), 2*cap(b))
			copy(grown, b)
			b = grown
		}
	}
}

// restyLogger silences resty's own logging: this client logs through slog.
type restyLogger struct{}

func (restyLogger) Errorf(string, ...any) {}
func (restyLogger) Warnf(string, ...any)  {}
func (restyLogger) Debugf(string, ...any) {}

// discardHandler is slog.DiscardHandler for Go versions before 1.24.
type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (d discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discardHandler) WithGroup(string) slog.Handler           { return d }
