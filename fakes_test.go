package upstash_test

// The private HTTP fakes the client's tests share, each defined once:
//   - recorder/canned with newMock and on: a strict httpmock transport that
//     records each request and answers with canned responses;
//   - faultTransport (newFaultClient): plays network faults and statuses and
//     reports through httptrace what net/http would;
//   - netServer (netClient): a real HTTP server with a tiny keyspace that
//     breaks connections the ways a frozen function meets them;
//   - captureTransport: answers {"result":"OK"} from memory, keeps the body;
//   - memoryTransport: answers a canned body per path from memory (benchmarks);
//   - gateTransport: holds each request until the test releases it;
//   - pipelineTransport: answers any command or pipeline from memory;
//   - countConnections: serves a handler, counting accepted connections.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"

	"github.com/chatstate/upstash"
)

// call is one request the mock transport received.
type call struct {
	Path   string
	Header http.Header
	Body   []byte
}

// bodyArgs decodes a single-command body into its strings.
func (c call) bodyArgs(t *testing.T) []string {
	t.Helper()
	var args []string
	if err := json.Unmarshal(c.Body, &args); err != nil {
		t.Fatalf("request body %s is not a JSON array of strings: %v", c.Body, err)
	}
	return args
}

// recorder records the requests a mock transport answers.
type recorder struct {
	mu    sync.Mutex
	calls []call
}

func (r *recorder) record(req *http.Request) call {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
	}
	c := call{Path: req.URL.Path, Header: req.Header.Clone(), Body: body}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return c
}

func (r *recorder) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// canned is one response of a scripted sequence.
type canned struct {
	status int
	body   string
	header http.Header
	err    error // returned instead of a response
}

// reply answers every request with the same status and body.
func (r *recorder) reply(status int, body string, kv ...string) httpmock.Responder {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return r.sequence(canned{status: status, body: body, header: h})
}

// sequence answers the i-th request with resps[i] (the last one repeats).
func (r *recorder) sequence(resps ...canned) httpmock.Responder {
	var mu sync.Mutex
	n := 0
	return func(req *http.Request) (*http.Response, error) {
		r.record(req)
		mu.Lock()
		c := resps[min(n, len(resps)-1)]
		n++
		mu.Unlock()
		if c.err != nil {
			return nil, c.err
		}
		resp := httpmock.NewStringResponse(c.status, c.body)
		resp.Header.Set("Content-Type", "application/json")
		for k, v := range c.header {
			resp.Header[k] = v
		}
		resp.Request = req
		return resp, nil
	}
}

// newMock returns a client whose requests go to a strict mock transport (an
// unexpected request fails the test) and a recorder of them. Retries are off
// unless opts turn them on.
func newMock(t *testing.T, opts ...upstash.Option) (*upstash.Client, *httpmock.MockTransport, *recorder) {
	t.Helper()
	mt := httpmock.NewMockTransport()
	mt.RegisterNoResponder(httpmock.NewNotFoundResponder(t.Fatal))
	all := append([]upstash.Option{upstash.WithTransport(mt), upstash.WithRetry(upstash.NoRetry)}, opts...)
	c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken}, all...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, mt, &recorder{}
}

// on registers responder for POSTs to path ("" for single commands).
func on(mt *httpmock.MockTransport, path string, responder httpmock.Responder) {
	mt.RegisterResponder(http.MethodPost, mockURL+path, responder)
}

// fault is what faultTransport does on one attempt.
type fault int

const (
	answer          fault = iota // respond with the status and body given
	refuse                       // fail to connect: a dial error, nothing sent
	resetAfterWrite              // report the headers written, then a reset
	opaqueError                  // an error that says nothing about what was sent, no trace
	refuseUntraced               // a dial error from a transport that reports no trace
)

type step struct {
	fault  fault
	status int
	body   string
}

// faultTransport is a RoundTripper that plays steps in order (the last one
// repeats) and reports through the request's httptrace what net/http would:
// GetConn, then for a request that went out GotConn and WroteHeaders. It
// records when each attempt started.
type faultTransport struct {
	mu     sync.Mutex
	steps  []step
	starts []time.Time
	bodies [][]byte
	// before runs at the start of each attempt (n counts from 1).
	before func(n int)
}

func (f *faultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.starts = append(f.starts, time.Now())
	n := len(f.starts)
	s := f.steps[min(n-1, len(f.steps)-1)]
	f.mu.Unlock()
	if f.before != nil {
		f.before(n)
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(req.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.mu.Unlock()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	switch s.fault {
	case opaqueError:
		return nil, errors.New("opaque transport failure")
	case refuseUntraced:
		return nil, fmt.Errorf("custom transport: %w", refused)
	}
	trace := httptrace.ContextClientTrace(req.Context())
	if trace != nil && trace.GetConn != nil {
		trace.GetConn(req.URL.Host)
	}
	if s.fault == refuse {
		return nil, refused
	}
	if trace != nil && trace.GotConn != nil {
		trace.GotConn(httptrace.GotConnInfo{Reused: true})
	}
	if trace != nil && trace.WroteHeaders != nil {
		trace.WroteHeaders()
	}
	if s.fault == resetAfterWrite {
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	}
	resp := httpmock.NewStringResponse(s.status, s.body)
	resp.Request = req
	return resp, nil
}

func (f *faultTransport) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.starts)
}

func newFaultClient(t *testing.T, policy upstash.RetryPolicy, steps ...step) (*upstash.Client, *faultTransport) {
	t.Helper()
	ft := &faultTransport{steps: steps}
	c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken}, upstash.WithTransport(ft), upstash.WithRetry(policy))
	if err != nil {
		t.Fatal(err)
	}
	return c, ft
}

var (
	okStep   = step{status: 200, body: `{"result":1}`}
	pipeOK   = step{status: 200, body: `[{"result":1},{"result":2}]`}
	html503  = step{status: 503, body: "<html><body>Service Unavailable</body></html>"}
	json500  = step{status: 500, body: `{"error":"ERR internal error"}`}
	status4x = func(code int) step { return step{status: code, body: `{"error":"ERR refused"}`} }
)

// netServer is an httptest server with a tiny Upstash-like keyspace (GET,
// SET, INCR, DEL) that can break connections the ways a function meets them:
// a reset after the request arrived (the command ran, the reply is lost), or
// a pooled connection the server forgot while the client was frozen.
type netServer struct {
	*httptest.Server
	mu       sync.Mutex
	handled  int            // requests that reached the handler
	commands map[string]int // commands run, by name
	kv       map[string]string
	resetN   int // the next resetN requests run, then get a reset instead of a reply
	headers  []http.Header
	conns    map[*trackedConn]bool
	// staleKills counts requests that arrived on a stale connection and
	// were answered with a reset.
	staleKills atomic.Int32
}

// trackedConn lets the test kill a connection the moment the client next
// uses it, as a peer that dropped it during a freeze would: the client
// writes its request, then reads a reset.
type trackedConn struct {
	net.Conn
	s     *netServer
	stale atomic.Bool
}

// Read kills a stale connection when the next request's bytes arrive on it,
// and only then. A read that ends without data (the server aborting its
// background read once it has answered) passes through: killing the
// connection there would close it while idle, and the client would notice
// and dial a fresh one instead of writing on the stale one.
func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.stale.Load() {
		c.s.staleKills.Add(1) // before the client can see the reset
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST, like a forgotten connection
		}
		c.Conn.Close()
		return 0, io.EOF
	}
	return n, err
}

type trackingListener struct {
	net.Listener
	s *netServer
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s}
	l.s.mu.Lock()
	l.s.conns[tc] = true
	l.s.mu.Unlock()
	return tc, nil
}

func newNetServer(t *testing.T) *netServer {
	t.Helper()
	s := &netServer{commands: map[string]int{}, kv: map[string]string{}, conns: map[*trackedConn]bool{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Listener = trackingListener{Listener: s.Listener, s: s}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *netServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var args []string
	if err := json.Unmarshal(body, &args); err != nil || len(args) == 0 {
		http.Error(w, `{"error":"ERR failed to parse command"}`, http.StatusBadRequest)
		return
	}
	name := strings.ToUpper(args[0])
	s.mu.Lock()
	s.handled++
	s.commands[name]++
	s.headers = append(s.headers, r.Header.Clone())
	var result any
	switch {
	case name == "GET" && len(args) == 2:
		if v, ok := s.kv[args[1]]; ok {
			result = base64.StdEncoding.EncodeToString([]byte(v))
		}
	case name == "SET" && len(args) >= 3:
		s.kv[args[1]] = args[2]
		result = "OK"
	case name == "INCR" && len(args) == 2:
		n, _ := strconv.Atoi(s.kv[args[1]])
		n++
		s.kv[args[1]] = strconv.Itoa(n)
		result = n
	case name == "PING":
		result = base64.StdEncoding.EncodeToString([]byte("PONG"))
	default:
		s.mu.Unlock()
		http.Error(w, `{"error":"ERR unknown command"}`, http.StatusBadRequest)
		return
	}
	reset := s.resetN > 0
	if reset {
		s.resetN--
	}
	s.mu.Unlock()
	if reset {
		// The command ran; the reply is lost.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			if tc, ok := conn.(*trackedConn); ok {
				if c, ok := tc.Conn.(*net.TCPConn); ok {
					_ = c.SetLinger(0)
				}
			}
			conn.Close()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"result": result})
}

// staleIdle marks every open connection as forgotten by the server.
func (s *netServer) staleIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.stale.Store(true)
	}
	return len(s.conns)
}

func (s *netServer) stats() (handled int, commands map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.commands))
	for k, v := range s.commands {
		m[k] = v
	}
	return s.handled, m
}

func (s *netServer) setReset(n int) {
	s.mu.Lock()
	s.resetN = n
	s.mu.Unlock()
}

func (s *netServer) value(k string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kv[k]
}

// netClient returns a client of s with its own transport (so pooled
// connections are the test's own), counting dials.
func netClient(t *testing.T, s *netServer, policy upstash.RetryPolicy, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *upstash.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if dial != nil {
		tr.DialContext = dial
	}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := upstash.New(upstash.Config{URL: s.URL, Token: secretToken}, upstash.WithTransport(tr), upstash.WithRetry(policy))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// captureTransport answers every request with {"result":"OK"} from memory
// and keeps the last body.
type captureTransport struct {
	mu   sync.Mutex
	n    int
	last []byte
}

func (c *captureTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.n++
	c.last = body
	c.mu.Unlock()
	return &http.Response{
		StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"result":"OK"}`)), Request: req,
	}, nil
}

func (c *captureTransport) take() (int, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, b := c.n, c.last
	c.n, c.last = 0, nil
	return n, b
}

// memoryTransport answers from memory with a canned body per path. It
// allocates as little as it can (the response and its body), so that
// benchmarks count the client's allocations rather than the fake's.
type memoryTransport map[string]string

// memoryHeader is every memoryTransport response's header (read only).
var memoryHeader = http.Header{"Content-Type": {"application/json"}, "Upstash-Sync-Token": {"tok-1"}}

// memoryReply is a response and its body in one allocation.
type memoryReply struct {
	resp http.Response
	body strings.Reader
}

func (r *memoryReply) Read(p []byte) (int, error) { return r.body.Read(p) }
func (r *memoryReply) Close() error               { return nil }

func (m memoryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	body := m[req.URL.Path]
	r := &memoryReply{}
	r.body.Reset(body)
	r.resp = http.Response{
		StatusCode: 200, ContentLength: int64(len(body)),
		Header: memoryHeader, Body: r, Request: req,
	}
	return &r.resp, nil
}

// gateTransport holds each request until the test releases it, reporting
// its arrival with its path and body, and then sends it on through rt.
// Once opened, it lets every request through, held ones included.
type gateTransport struct {
	rt      http.RoundTripper
	arrived chan *heldRequest
	mu      sync.Mutex
	open    bool
	held    []*heldRequest
}

// heldRequest is one request a gateTransport holds.
type heldRequest struct {
	Path    string
	Body    []byte
	release chan struct{}
	once    sync.Once
}

// Release lets the request go on.
func (h *heldRequest) Release() { h.once.Do(func() { close(h.release) }) }

// commands decodes the body of a /pipeline request into its commands.
func (h *heldRequest) commands(t *testing.T) [][]string {
	t.Helper()
	var cmds [][]string
	if err := json.Unmarshal(h.Body, &cmds); err != nil {
		t.Fatalf("pipeline body %s: %v", h.Body, err)
	}
	return cmds
}

func newGate(rt http.RoundTripper) *gateTransport {
	return &gateTransport{rt: rt, arrived: make(chan *heldRequest, 1<<14)}
}

func (g *gateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	if !g.open {
		path := req.URL.Path
		if path == "" {
			path = "/"
		}
		h := &heldRequest{Path: path, Body: body, release: make(chan struct{})}
		g.held = append(g.held, h)
		g.arrived <- h
		g.mu.Unlock()
		select {
		case <-h.release:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	} else {
		g.mu.Unlock()
	}
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	if req.GetBody != nil {
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return g.rt.RoundTrip(r)
}

// next returns the next request to arrive (a minute without one fails the
// test: a hang detector, not a timing assumption).
func (g *gateTransport) next(t *testing.T) *heldRequest {
	t.Helper()
	select {
	case h := <-g.arrived:
		return h
	case <-time.After(time.Minute):
		t.Fatal("no request arrived at the gate within a minute")
		return nil
	}
}

// Open lets every request through from now on, and releases those held.
func (g *gateTransport) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = true
	for _, h := range g.held {
		h.Release()
	}
	g.held = nil
}

// pipelineTransport answers from memory: {"result":1} to a single command,
// and one {"result":1} per command to a /pipeline request. It counts
// requests by path.
type pipelineTransport struct {
	mu       sync.Mutex
	requests map[string]int
}

func (p *pipelineTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.requests == nil {
		p.requests = map[string]int{}
	}
	p.requests[req.URL.Path]++
	p.mu.Unlock()
	reply := `{"result":1}`
	if req.URL.Path == "/pipeline" {
		var cmds []json.RawMessage
		if err := json.Unmarshal(body, &cmds); err != nil {
			return nil, err
		}
		reply = "[" + strings.TrimSuffix(strings.Repeat(`{"result":1},`, len(cmds)), ",") + "]"
	}
	return &http.Response{
		StatusCode: 200, ContentLength: int64(len(reply)),
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   io.NopCloser(strings.NewReader(reply)), Request: req,
	}, nil
}

func (p *pipelineTransport) count(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests[path]
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// countConnections serves h (an upstashtest server's handler, say) on a
// listener of its own that counts accepted connections, and returns its
// URL and the counter.
func countConnections(tb testing.TB, h http.Handler) (string, *atomic.Int64) {
	tb.Helper()
	var n atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Listener = countingListener{Listener: s.Listener, accepted: &n}
	s.Start()
	tb.Cleanup(s.Close)
	return s.URL, &n
}
