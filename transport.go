package upstash

// One HTTP attempt: the resty client and its default transport, the request
// with its headers and httptrace hooks, reading the response body within
// the limit, and turning a non-2xx response into an error. Whether a failed
// attempt is repeated is decided in retry.go.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-resty/resty/v2"
)

// syncTokenHeader carries the read-your-writes token in both directions.
const syncTokenHeader = "Upstash-Sync-Token"

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

// newRESTClient returns the resty client that sends every request of one
// Client through rt (the default transport when rt is nil), on an
// *http.Client of its own.
func newRESTClient(rt http.RoundTripper) *resty.Client {
	if rt == nil {
		rt = defaultTransport()
	}
	rest := resty.NewWithClient(&http.Client{Transport: rt})
	rest.SetLogger(restyLogger{})
	rest.SetDisableWarn(true)
	return rest
}

// restyLogger silences resty's own logging: this client logs through slog.
type restyLogger struct{}

func (restyLogger) Errorf(string, ...any) {}
func (restyLogger) Warnf(string, ...any)  {}
func (restyLogger) Debugf(string, ...any) {}

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

// attempt sends one HTTP request and reads the response. idempotent marks
// a request every command of which is safe to repeat.
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
	if c.settings.readYourWrites {
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

// statusError turns a non-2xx response to the call label into an error.
func (c *Client) statusError(status int, body []byte, label string) error {
	var r reply
	msg := ""
	if parseReplies(body, &r) == nil && r.Error != nil {
		msg = *r.Error
	}
	switch {
	case status == http.StatusUnauthorized:
		if msg == "" {
			msg = "unauthorized"
		}
		e := newError(label, -1, status, msg)
		e.hint = c.authHint
		return e
	case msg != "":
		return newError(label, -1, status, msg)
	case status == http.StatusRequestEntityTooLarge:
		return &Error{Command: label, Index: -1, Status: status, Message: "request too large"}
	}
	text := strings.TrimSpace(string(body))
	return callErrorf(label, "%w: HTTP %d with a body that is not an Upstash error: %q", ErrProtocol, status, truncate(text, 200))
}

// authHint is what a 401 tells the caller to check: where the refused token
// came from (tokenVar, the variable ConfigFromEnv read it from, or
// Config.Token) and which database refused it. It never holds the token.
func authHint(tokenVar, baseURL string) string {
	from := "the token in Config.Token"
	if tokenVar != "" {
		from = "the token from " + tokenVar
	}
	return fmt.Sprintf("the server refused %s; check that it is the current REST token of %s", from, baseURL)
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
