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
//
// Commands that concurrent goroutines send through one Client are
// auto-pipelined (see WithAutoPipelining): beyond four requests in flight
// they travel together in one request, each caller still getting its own
// reply and error, so a burst of callers takes few requests and few
// connections, and a lone caller is never delayed.
//
// Every error's text starts with "upstash: " once and names the call once
// (the command, PIPELINE or MULTI-EXEC, or the State method), as in
// "upstash: INCR: outcome unknown (the request may or may not have been
// applied): ERR internal error". errors.Is matches the sentinels (ErrNil,
// ErrOutcomeUnknown, ErrUnauthorized…) however the error was wrapped, and
// errors.As finds the *Error of a Redis or HTTP error. No error text holds
// the token, and the client's never hold an argument's value.
package upstash

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/go-resty/resty/v2"
)

// Version is this library's version, sent in the telemetry header.
const Version = "0.1.0"

// Client talks to one Upstash Redis database over its REST API. It is safe
// for concurrent use and holds no per-request state besides the latest
// read-your-writes token. Build it once, outside the handler. A Client, as
// a value or a pointer, prints (with any fmt verb), logs (log/slog) and
// marshals to JSON without its token.
type Client struct {
	// The internals sit behind a pointer, so that a copy of the value
	// holds nothing printable but an address.
	*clientCore
}

// clientCore is a Client's state.
type clientCore struct {
	baseURL   string
	rest      *resty.Client
	headers   http.Header // fixed headers, cloned into each request
	settings  settings
	syncToken atomic.Pointer[syncToken]
	// pipelineURL and transactionURL are baseURL with the batch paths.
	pipelineURL, transactionURL string
	log                         *slog.Logger
	authHint                    string // what a 401 tells the caller to check
	token                       secret // cut out of any text the server sends
	// traced says that the transport reports through httptrace before
	// it sends anything (the default transport, except on js/wasm): a
	// failure without any trace event then proves that nothing was sent.
	traced bool
	// auto batches concurrent Run calls (nil: auto-pipelining is off).
	auto *autoPipeliner
}

// Limits bounds what the client sends and accepts. A zero field disables
// that check.
type Limits struct {
	// MaxRequestBytes bounds one request body (a command, pipeline or
	// transaction as JSON). A larger request is refused before sending with
	// an error matching ErrRequestTooLarge. Upstash's Free and Pay-as-you-go
	// plans accept 10 MB.
	MaxRequestBytes int
	// MaxResponseBytes bounds one response body read into memory: reading
	// stops one byte past it. The size of a reply is only known once it
	// arrives, so the command has run: a larger reply fails with an error
	// matching ErrProtocol, and also ErrOutcomeUnknown when the request is
	// not safe to repeat (its reply, which said what it did, is lost); the
	// request is not repeated. While a reply without a Content-Length is
	// read, its buffer may briefly take 1.5 times the limit; decoding the
	// reply takes more (see the README's "Limits"). The reply to an
	// auto-pipelined batch may take the limit (plus a byte) for each
	// command in it, and each command's values the limit.
	MaxResponseBytes int64
}

// DefaultLimits are the limits of a Client built without WithLimits:
// Upstash's documented 10 MB request limit, and replies of up to 128 MB.
var DefaultLimits = Limits{MaxRequestBytes: 10 * 1024 * 1024, MaxResponseBytes: 128 << 20}

type settings struct {
	transport      http.RoundTripper
	timeout        time.Duration
	retry          RetryPolicy
	logger         *slog.Logger
	base64         bool
	readYourWrites bool
	telemetry      bool
	limits         Limits
	autoPipelining bool
}

// Option configures a Client. Each option's doc comment gives the default,
// which applies when the option is not passed.
type Option func(*settings)

// WithTransport makes the client send its requests through rt, for example
// an instrumented, proxying or test transport. The client keeps an
// *http.Client of its own around rt, which follows no redirect, and hands
// rt a request that is not safe to repeat without GetBody, so that rt
// cannot replay it. The default (and a nil rt) is a clone of
// http.DefaultTransport tuned for functions frozen between invocations:
// idle connections dropped after 30 s, a 5 s TLS handshake timeout, 16 idle
// connections per host, a TLS session cache, and no compression.
func WithTransport(rt http.RoundTripper) Option { return func(s *settings) { s.transport = rt } }

// WithTimeout bounds each call whose context has no deadline (on Vercel, a
// request's context never has one). The default is 10 s; zero or less means
// calls without a deadline are unbounded. A context's deadline always wins.
func WithTimeout(d time.Duration) Option { return func(s *settings) { s.timeout = d } }

// WithRetry sets the retry policy. The default is DefaultRetryPolicy;
// NoRetry (the zero RetryPolicy) turns retries off.
func WithRetry(p RetryPolicy) Option { return func(s *settings) { s.retry = p } }

// WithLogger makes the client log, at debug level, each retry (command name,
// attempt, wait and error) and each script re-sent as EVAL after NOSCRIPT.
// Log lines name commands, never arguments or the token. The default (and a
// nil l) logs nothing.
func WithLogger(l *slog.Logger) Option { return func(s *settings) { s.logger = l } }

// WithBase64 turns base64 response encoding on (the default) or off. Off, the
// server replaces bytes that are not valid UTF-8 with U+FFFD, so values are no
// longer binary-safe.
func WithBase64(on bool) Option { return func(s *settings) { s.base64 = on } }

// WithReadYourWrites turns read-your-writes consistency on (the default) or
// off. On, each request carries the sync token of the latest response, so a
// read replica serves it only after catching up with this client's writes.
func WithReadYourWrites(on bool) Option { return func(s *settings) { s.readYourWrites = on } }

// WithTelemetry turns the Upstash-Telemetry-* headers (library version, Go
// version, platform) on (the default) or off. The environment variable
// UPSTASH_DISABLE_TELEMETRY, when set to anything, makes off the default.
func WithTelemetry(on bool) Option { return func(s *settings) { s.telemetry = on } }

// WithLimits replaces DefaultLimits, the default. A zero field disables that
// check.
func WithLimits(l Limits) Option { return func(s *settings) { s.limits = l } }

// WithAutoPipelining turns auto-pipelining on (the default) or off. On,
// commands that concurrent callers send through the client (Run, Do, the
// typed helpers, Script.Run, and so every State operation) travel
// together: a call that finds fewer than four requests of the client's in
// flight is sent at once, alone; calls made while four are in flight wait,
// and go out together in one /pipeline request (up to 1000 commands and
// Limits.MaxRequestBytes) as soon as one of those returns. A lone caller
// is never delayed, and a burst of callers needs only a few connections.
// Each caller gets its own reply and error, exactly as if its command had
// gone alone: commands safe to repeat and the others never share a
// request, so a batch is retried only when every command in it may be.
// A caller whose context ends while it waits returns at once: with the
// context's error if its command was not sent yet, also matching
// ErrOutcomeUnknown if it was and is not safe to repeat; the batch goes
// on for the others. (One caller's goroutine sends each batch: if its
// context is cancelled, it returns when the request ends.) Blocking
// commands (BLPOP, XREAD…) and Pipeline and Transaction calls are always
// sent as they are. Off, every call is its own request.
func WithAutoPipelining(on bool) Option { return func(s *settings) { s.autoPipelining = on } }

// New returns a client for the database cfg names. It does no network I/O;
// call Ping to check the credentials. A URL with a path (https://host/v2) is
// a path prefix: commands go to /v2, pipelines to /v2/pipeline and
// transactions to /v2/multi-exec.
func New(cfg Config, opts ...Option) (*Client, error) {
	baseURL, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	s := settings{
		timeout:        10 * time.Second,
		retry:          DefaultRetryPolicy,
		base64:         true,
		readYourWrites: true,
		telemetry:      os.Getenv("UPSTASH_DISABLE_TELEMETRY") == "",
		limits:         DefaultLimits,
		autoPipelining: true,
	}
	for _, o := range opts {
		o(&s)
	}
	if err := s.retry.validate(); err != nil {
		return nil, err
	}

	headers := http.Header{}
	headers.Set("Authorization", "Bearer "+cfg.Token)
	headers.Set("Content-Type", "application/json")
	// What resty would add for a JSON body anyway; set here, it is not
	// added to each request again.
	headers.Set("Accept", "application/json")
	headers.Set("User-Agent", "chatstate-upstash-go/"+Version)
	// Replies are never compressed: a compressed reply could expand far
	// past Limits.MaxResponseBytes before the limit saw it.
	headers.Set("Accept-Encoding", "identity")
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
	core := &clientCore{
		baseURL:        baseURL,
		pipelineURL:    baseURL + pipelinePath,
		transactionURL: baseURL + transactionPath,
		rest:           newRESTClient(s.transport),
		headers:        headers,
		settings:       s,
		log:            log,
		authHint:       authHint(cfg.tokenVar, baseURL),
		token:          secret(cfg.Token),
		traced:         s.transport == nil && !viaFetch,
	}
	if s.autoPipelining {
		core.auto = &autoPipeliner{}
	}
	return &Client{core}, nil
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

// Format prints the client as upstash.Client{URL: "..."} for every verb
// (%v, %+v, %#v, %s, %d...), as a value or a pointer, so that printing a
// client never shows the token held in its request headers.
func (c Client) Format(f fmt.State, verb rune) { fmt.Fprint(f, c.describe()) }

// LogValue makes log/slog log the client as Format prints it, with any
// handler.
func (c Client) LogValue() slog.Value { return slog.StringValue(c.describe()) }

func (c Client) describe() string {
	if c.clientCore == nil {
		return "upstash.Client{}"
	}
	return fmt.Sprintf("upstash.Client{URL: %q}", c.baseURL)
}

// SyncToken returns the read-your-writes token of the latest successful
// response, or "" if there has been none.
func (c *Client) SyncToken() string {
	if p := c.syncToken.Load(); p != nil {
		return p.value
	}
	return ""
}

// SetSyncToken makes the next request carry token, so that it sees every
// write that preceded the response the token came from, even if that write
// went through another client.
func (c *Client) SetSyncToken(token string) {
	if p := c.syncToken.Load(); p != nil && p.value == token {
		return
	}
	t := &syncToken{value: token}
	t.header[0] = token
	c.syncToken.Store(t)
}

// syncToken is a read-your-writes token, with the header value that
// carries it (shared, read only, by every request that sends it).
type syncToken struct {
	value  string
	header [1]string
}

// Run sends one command and returns its reply. A command error is returned
// as an *Error. Script commands fall back from EVALSHA to EVAL on NOSCRIPT.
// Every error's text starts with "upstash: " and the command's name.
//
// With auto-pipelining on (see WithAutoPipelining), the command may travel
// in one request with other callers' concurrent commands; its reply and
// its error are still its own.
func (c *Client) Run(ctx context.Context, cmd Command) (Value, error) {
	var v Value
	var err error
	if c.auto != nil && autoPipelinable(cmd) {
		v, err = c.auto.run(ctx, c, cmd)
	} else {
		v, err = c.runAlone(ctx, cmd, nil)
	}
	return v, c.token.scrub(err)
}

// runAlone sends cmd in a request of its own, and its EVAL form after a
// NOSCRIPT reply. body is cmd already encoded and checked, or nil.
func (c *Client) runAlone(ctx context.Context, cmd Command, body []byte) (Value, error) {
	v, err := c.runOne(ctx, cmd, body)
	if cmd.script != nil && isNoScript(err) {
		c.log.DebugContext(ctx, "upstash: script not cached, sending EVAL", "sha", cmd.script.sha)
		v, err = c.runOne(ctx, cmd.evalForm(), nil)
	}
	return v, err
}

// Do sends one command built from its arguments: Do(ctx, "GET", "key").
func (c *Client) Do(ctx context.Context, name string, args ...any) (Value, error) {
	return c.Run(ctx, Cmd(name, args...))
}

// runOne sends cmd in a request of its own. body is cmd already encoded
// and checked, or nil.
func (c *Client) runOne(ctx context.Context, cmd Command, body []byte) (Value, error) {
	name := cmd.Name()
	if body == nil {
		var err error
		if body, err = c.encodeOne(cmd, name); err != nil {
			return Value{}, err
		}
	}
	safe := cmd.safeToRepeat()
	resp, err := c.send(ctx, "", body, safe, name)
	if err != nil {
		return Value{}, err
	}
	v, err := decodeReply(resp, c.settings.base64, c.token, c.settings.limits.MaxResponseBytes, name)
	return v, unreadableReply(err, safe, name)
}

// encodeOne encodes cmd as the body of a request of its own, within
// Limits.MaxRequestBytes.
func (c *Client) encodeOne(cmd Command, name string) ([]byte, error) {
	body, err := encodeCommand(make([]byte, 0, encodedSize(cmd)), cmd, -1, name)
	if err != nil {
		return nil, err
	}
	if err := checkRequestSize(body, name, c.settings.limits.MaxRequestBytes); err != nil {
		return nil, err
	}
	return body, nil
}

// Pipeline sends commands in one request to /pipeline and returns one Result
// per command, in order. A pipeline is not atomic: other clients' commands
// may run between its commands, and a failing command does not stop later
// ones. The returned error concerns the whole request (network, auth,
// protocol) and its text starts with "upstash: PIPELINE: "; per-command
// errors are in the results. Scripts that the server had not cached are
// re-sent as EVAL in one follow-up request, so they run after the commands
// that followed them.
func (c *Client) Pipeline(ctx context.Context, cmds ...Command) ([]Result, error) {
	results, err := c.pipeline(ctx, cmds)
	for i := range results {
		results[i].Err = c.token.scrub(results[i].Err)
	}
	return results, c.token.scrub(err)
}

func (c *Client) pipeline(ctx context.Context, cmds []Command) ([]Result, error) {
	results, err := c.batch(ctx, pipelinePath, cmds)
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
	if len(retry) == 0 {
		return results, nil
	}
	c.log.DebugContext(ctx, "upstash: scripts not cached, sending EVAL", "command", pipelineLabel, "scripts", len(retry))
	again, err := c.batch(ctx, pipelinePath, retry)
	if err != nil {
		// The first request's other commands ran: keep their results
		// and give each script that could not be re-sent this error.
		for _, i := range at {
			results[i].Err = callErrorf(pipelineLabel, "command %d (%s): re-sending the script as EVAL after NOSCRIPT: %w", i, cmds[i].Name(), err)
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
	return results, nil
}

// Transaction sends commands to /multi-exec, where they run atomically. If
// the server discards the transaction as a whole (a syntax error, an unknown
// command) nothing runs and the error matches ErrTransactionDiscarded;
// otherwise each command's result or run-time error is in its Result. The
// returned error's text starts with "upstash: MULTI-EXEC: ". Scripts are
// sent in full (EVAL), since a NOSCRIPT inside a transaction could not be
// repaired without breaking atomicity.
func (c *Client) Transaction(ctx context.Context, cmds ...Command) ([]Result, error) {
	sent := make([]Command, len(cmds))
	for i, cmd := range cmds {
		if cmd.script != nil {
			cmd = cmd.evalForm()
		}
		sent[i] = cmd
	}
	results, err := c.batch(ctx, transactionPath, sent)
	return results, c.token.scrub(err)
}

// The batch endpoints, and the labels their errors carry.
const (
	pipelinePath     = "/pipeline"
	transactionPath  = "/multi-exec"
	pipelineLabel    = "PIPELINE"
	transactionLabel = "MULTI-EXEC"
)

// batch encodes cmds as one JSON array, posts it to path and decodes one
// Result per command.
func (c *Client) batch(ctx context.Context, path string, cmds []Command) ([]Result, error) {
	label := pipelineLabel
	if path == transactionPath {
		label = transactionLabel
	}
	if len(cmds) == 0 {
		return nil, callErrorf(label, "%w: no commands", ErrInvalidArgument)
	}
	body := append(make([]byte, 0, 64*len(cmds)), '[')
	for i, cmd := range cmds {
		if i > 0 {
			body = append(body, ',')
		}
		var err error
		if body, err = encodeCommand(body, cmd, i, label); err != nil {
			return nil, err
		}
	}
	body = append(body, ']')
	if err := checkRequestSize(body, label, c.settings.limits.MaxRequestBytes); err != nil {
		return nil, err
	}
	safe := allSafeToRepeat(cmds)
	resp, err := c.send(ctx, path, body, safe, label)
	if err != nil {
		return nil, err
	}
	results, err := c.decodeBatch(resp, cmds, label)
	return results, unreadableReply(err, safe, label)
}

// decodeBatch decodes the reply to a pipeline or transaction of cmds.
func (c *Client) decodeBatch(resp []byte, cmds []Command, label string) ([]Result, error) {
	replies, err := parseReplyArray(resp)
	if err != nil {
		// A discarded transaction answers with one {"error"} object.
		var r reply
		if parseReply(resp, &r) == nil && r.Error != nil {
			return nil, newError(c.token, label, -1, http.StatusOK, *r.Error)
		}
		return nil, callErrorf(label, "%w: body is not a JSON array: %s", ErrProtocol, err.Error())
	}
	if len(replies) != len(cmds) {
		return nil, callErrorf(label, "%w: %d replies for %d commands", ErrProtocol, len(replies), len(cmds))
	}
	results := make([]Result, len(cmds))
	left := c.settings.limits.MaxResponseBytes
	limited := left > 0
	for i, r := range replies {
		if r.Error != nil {
			results[i].Err = newError(c.token, cmds[i].Name(), i, http.StatusOK, *r.Error)
			continue
		}
		v, rest, err := r.resultValue(c.settings.base64, limited, left)
		left = rest
		if err != nil {
			return nil, callErrorf(label, "command %d (%s): %w", i, cmds[i].Name(), err)
		}
		results[i].Value = v
	}
	return results, nil
}

// discardHandler is slog.DiscardHandler for Go versions before 1.24.
type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (d discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discardHandler) WithGroup(string) slog.Handler           { return d }
