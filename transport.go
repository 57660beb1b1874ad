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
	"runtime"
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
// kept. Compression is off: the client asks for identity replies, and a
// compressed one is refused rather than expanded. Timeouts per call come
// from the context, not from the transport.
func defaultTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.IdleConnTimeout = 30 * time.Second
	t.TLSHandshakeTimeout = 5 * time.Second
	t.MaxIdleConnsPerHost = 16
	t.TLSClientConfig = &tls.Config{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	t.DisableCompression = true
	return t
}

// newRESTClient returns the resty client that sends every request of one
// Client through rt (the default transport when rt is nil), on an
// *http.Client of its own that never follows a redirect and never lets the
// transport replay a request that is not safe to repeat.
func newRESTClient(rt http.RoundTripper) *resty.Client {
	if rt == nil {
		rt = defaultTransport()
	}
	hc := &http.Client{
		Transport: replayGuard{rt},
		// A redirect would send the token and the commands to another
		// place, or turn the POST into a GET whose reply would be taken
		// for the command's: the 3xx itself is the answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	rest := resty.NewWithClient(hc)
	rest.SetLogger(restyLogger{})
	rest.SetDisableWarn(true)
	return rest
}

// idempotencyKey marks a request safe to repeat. The client sets it present
// but empty (net/http writes nothing for it): net/http's HTTP/1 transport
// then replays the request by itself when a pooled connection turns out to
// be dead, which is how a connection that died while a function was frozen
// is survived.
const idempotencyKey = "Idempotency-Key"

// replayGuard makes sure no transport replays a request that is not safe to
// repeat. Transports rewind a request with its GetBody: net/http's HTTP/1
// transport when nothing was written on a reused connection, its HTTP/2
// transport (and golang.org/x/net/http2's) after a stream reset with
// REFUSED_STREAM or PROTOCOL_ERROR, which a server can send after it ran
// the command. A request without the idempotency mark reaches the transport
// without GetBody, so it goes out at most once per attempt, and only the
// client's retry rules decide on another.
type replayGuard struct{ rt http.RoundTripper }

func (g replayGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if _, safe := req.Header[idempotencyKey]; !safe && req.GetBody != nil {
		r := *req
		r.GetBody = nil
		req = &r
	}
	return g.rt.RoundTrip(req)
}

// CloseIdleConnections closes the transport's idle connections, if it has
// any (http.Client.CloseIdleConnections reaches it through this).
func (g replayGuard) CloseIdleConnections() {
	if c, ok := g.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// restyLogger silences resty's own logging: this client logs through slog.
type restyLogger struct{}

func (restyLogger) Errorf(string, ...any) {}
func (restyLogger) Warnf(string, ...any)  {}
func (restyLogger) Debugf(string, ...any) {}

// attemptTrace is what one attempt's httptrace hooks saw, with the hooks,
// in one allocation.
type attemptTrace struct {
	traced, wrote atomic.Bool
	trace         httptrace.ClientTrace
}

// url is the URL of path ("", pipelinePath or transactionPath).
func (c *Client) url(path string) string {
	switch path {
	case "":
		return c.baseURL
	case pipelinePath:
		return c.pipelineURL
	case transactionPath:
		return c.transactionURL
	}
	return c.baseURL + path
}

// attemptOutcome is what one HTTP attempt produced.
type attemptOutcome struct {
	status int
	body   []byte
	token  string
	wrote  bool // some of the request may have reached the server
	// answered is set when the server replied with status but the reply
	// could not be used (over MaxResponseBytes, or compressed): asking
	// again would not give a usable reply either.
	answered bool
	// location is the host a 3xx reply pointed to, for its error.
	location string
	err      error
}

// mayHaveRun reports whether the request of a failed attempt may have been
// applied: it was written and the connection failed (before or while the
// reply arrived), or the server answered 2xx (with a reply that could not be
// used) or 5xx. A 3xx, 4xx or 429 is a refusal.
func (out attemptOutcome) mayHaveRun() bool {
	if out.err != nil && !out.answered {
		return out.wrote
	}
	return out.status >= 500 || out.status >= 200 && out.status < 300
}

// attempt sends one HTTP request and reads the response, of at most
// maxResponse bytes (no limit if 0 or less). idempotent marks a request
// every command of which is safe to repeat.
func (c *Client) attempt(ctx context.Context, path string, body []byte, idempotent bool, maxResponse int64) attemptOutcome {
	t := &attemptTrace{}
	t.trace = httptrace.ClientTrace{
		GetConn:      func(string) { t.traced.Store(true) },
		GotConn:      func(httptrace.GotConnInfo) { t.traced.Store(true) },
		WroteHeaders: func() { t.wrote.Store(true) },
	}
	req := c.rest.R().
		SetContext(httptrace.WithClientTrace(ctx, &t.trace)).
		SetDoNotParseResponse(true).
		SetBody(bytes.NewReader(body))
	req.Header = make(http.Header, len(c.headers)+2)
	for k, v := range c.headers {
		req.Header[k] = v
	}
	if c.settings.readYourWrites {
		if tok := c.syncToken.Load(); tok != nil && tok.value != "" {
			req.Header[syncTokenHeader] = tok.header[:]
		}
	}
	if idempotent {
		req.Header[idempotencyKey] = nil
	}
	if viaFetch {
		req.Header[fetchRedirect] = []string{"manual"}
	}
	resp, err := req.Post(c.url(path))
	if err != nil {
		sent := mayHaveSent(err, c.traced, t.traced.Load(), t.wrote.Load())
		if c.token.in(err.Error()) {
			// A transport error can quote what the server sent (a
			// malformed status line, say): keep its text, without the
			// token, and drop the rest.
			err = errors.New(c.token.clean(err.Error()))
		}
		return attemptOutcome{wrote: sent, err: err}
	}
	raw := resp.RawBody()
	defer raw.Close()
	status := resp.StatusCode()
	if status >= 300 && status < 400 || status == 0 && viaFetch {
		// Not followed (see newRESTClient), and its body is of no use.
		return attemptOutcome{status: status, wrote: true, location: c.redirectHost(resp.RawResponse)}
	}
	if ce := resp.Header().Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") && !viaFetch {
		// The client asked for identity. Expanding the reply could take far
		// more memory than the limit, so it is not read at all.
		err := fmt.Errorf("%w: the reply is compressed (Content-Encoding %q) although the client asked for none; it is not decompressed",
			ErrProtocol, truncate(c.token.clean(ce), 40))
		return attemptOutcome{status: status, wrote: true, answered: true, err: err}
	}
	data, err := readLimited(raw, maxResponse, resp.RawResponse.ContentLength)
	if errors.Is(err, ErrProtocol) {
		return attemptOutcome{status: status, wrote: true, answered: true, err: err}
	}
	if err != nil {
		// The server received the request and began to answer, and the
		// connection failed while the reply arrived.
		return attemptOutcome{wrote: true, err: fmt.Errorf("reading the reply: %w", err)}
	}
	out := attemptOutcome{status: status, body: data, wrote: true}
	if out.status >= 200 && out.status < 300 {
		out.token = resp.Header().Get(syncTokenHeader)
	}
	return out
}

// viaFetch is set on js/wasm, where net/http's transport goes through the
// Fetch API. That changes three things:
//   - the runtime asks for compressed replies itself (a script cannot forbid
//     it) and always hands over the decoded body, which readLimited then
//     bounds like any other: the Content-Encoding header it leaves says
//     nothing about the bytes read;
//   - fetch follows redirects itself unless told not to: every request
//     carries fetchRedirect "manual", so that a redirect comes back as a
//     3xx (or, in a browser, as an opaque reply of status 0);
//   - the transport reports nothing through httptrace, so a failure proves
//     nothing about what was sent.
const viaFetch = runtime.GOOS == "js"

// fetchRedirect is the request header net/http's js/wasm transport reads
// as the Fetch API's redirect mode (and does not send). Elsewhere it would
// be an invalid header name, so it is set only on js/wasm.
const fetchRedirect = "js.fetch:redirect"

// redirectHost returns the host a redirect points to, for its error (never
// the rest of the URL, whose query could hold anything), or a description
// when there is none.
func (c *Client) redirectHost(resp *http.Response) string {
	loc, err := resp.Location()
	switch {
	case resp.StatusCode == 0:
		return "a location the browser does not disclose"
	case errors.Is(err, http.ErrNoLocation):
		return "no Location"
	case err != nil:
		return "an unreadable Location"
	case loc.Host == "":
		return "no host"
	}
	return fmt.Sprintf("host %q", truncate(c.token.clean(loc.Host), 100))
}

// statusError turns a non-2xx response to the call label into an error.
func (c *Client) statusError(out attemptOutcome, label string) error {
	status, body := out.status, out.body
	if status >= 300 && status < 400 || out.location != "" {
		return callErrorf(label, "%w: HTTP %d %s to %s: the client does not follow redirects (check the REST URL)",
			ErrProtocol, status, http.StatusText(status), out.location)
	}
	var r reply
	msg := ""
	if parseReply(body, &r) == nil && r.Error != nil {
		msg = *r.Error
	}
	switch {
	case status == http.StatusUnauthorized:
		if msg == "" {
			msg = "unauthorized"
		}
		e := newError(c.token, label, -1, status, msg)
		e.hint = c.authHint
		return e
	case msg != "":
		return newError(c.token, label, -1, status, msg)
	case status == http.StatusRequestEntityTooLarge:
		return &Error{Command: label, Index: -1, Status: status, Message: "request too large"}
	}
	text := c.token.clean(strings.TrimSpace(string(body)))
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

// minReadBuffer is the smallest buffer readLimited reads into.
const minReadBuffer = 512

// readLimited reads a response body of at most max bytes (no limit if max
// is 0 or less) into one buffer. size is the announced Content-Length, or
// -1.
//
// Memory: with a Content-Length the buffer is allocated once at that size.
// Without one (a chunked reply) it starts small and doubles, on sizes
// max/2^k so that the last step goes from max/2 to max: it never holds more
// than max, and while it grows, at most 1.5 times max. When the buffer is
// full, a read into a small probe tells the end of the body from more data,
// so a body that fills the buffer exactly neither grows it nor is read past
// max.
func readLimited(r io.Reader, max, size int64) ([]byte, error) {
	if max > 0 && size > max {
		return nil, fmt.Errorf("%w: response of %d bytes is larger than %d bytes", ErrProtocol, size, max)
	}
	// One byte more than announced, so that the read that meets the end
	// of the body has room and no probe is needed.
	capacity := size + 1
	if size < 0 {
		capacity = nextCapacity(0, minReadBuffer, max)
	}
	b := make([]byte, 0, capacity)
	var probe []byte
	for {
		if len(b) == cap(b) {
			if probe == nil {
				probe = make([]byte, minReadBuffer)
			}
			n, err := r.Read(probe)
			if n > 0 {
				if max > 0 && int64(len(b)+n) > max {
					return nil, fmt.Errorf("%w: response larger than %d bytes", ErrProtocol, max)
				}
				grown := make([]byte, len(b), nextCapacity(int64(cap(b)), int64(len(b)+n), max))
				copy(grown, b)
				b = append(grown, probe[:n]...)
			}
			if err == io.EOF {
				return b, nil
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// nextCapacity is the capacity a full buffer of capacity c grows to so
// that it holds need bytes: twice c (at least need and minReadBuffer), and
// with a limit max > 0, the smallest max/2^k at least that, so that the
// last step before max is from max/2 (never past max: the caller has
// checked need <= max).
func nextCapacity(c, need, max int64) int64 {
	want := 2 * c
	if want < need {
		want = need
	}
	if want < minReadBuffer {
		want = minReadBuffer
	}
	if max <= 0 {
		return want
	}
	if want >= max {
		return max
	}
	n := max
	for n/2 >= want {
		n /= 2
	}
	return n
}
