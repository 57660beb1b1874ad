package upstash_test

// The client against hostile or broken servers: redirects, HTTP/2 stream
// resets after the command ran, replies cut mid-body, compressed and endless
// replies, and servers that echo the token. Each test counts what reached
// the server.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

// ---- redirects ----

// redirectPair is an origin that answers every request with a redirect to
// a target, which counts what reaches it.
type redirectPair struct {
	origin, target  *httptest.Server
	originRequests  atomic.Int32
	targetRequests  atomic.Int32
	targetAuth      atomic.Int32 // requests that carried an Authorization header
	targetBodyBytes atomic.Int64
}

func newRedirectPair(t *testing.T, status int, tlsOrigin bool, location func(target string) string) *redirectPair {
	t.Helper()
	p := &redirectPair{}
	p.target = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.targetRequests.Add(1)
		if r.Header.Get("Authorization") != "" {
			p.targetAuth.Add(1)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		p.targetBodyBytes.Add(n)
		// What a followed redirect would take for the command's reply: SET
		// NX's "OK", a lock acquired.
		_, _ = io.WriteString(w, `{"result":"OK"}`)
	}))
	t.Cleanup(p.target.Close)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.originRequests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Location", location(p.target.URL))
		w.WriteHeader(status)
	})
	if tlsOrigin {
		p.origin = httptest.NewTLSServer(h)
	} else {
		p.origin = httptest.NewServer(h)
	}
	t.Cleanup(p.origin.Close)
	return p
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	statuses := []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect}
	calls := []struct {
		name string
		run  func(ctx context.Context, c *upstash.Client) (bool, error) // reports success as the caller would see it
	}{
		{"SET NX (a lock acquire)", func(ctx context.Context, c *upstash.Client) (bool, error) {
			return c.SetNX(ctx, "chat-sdk:lock:t", "token", time.Minute)
		}},
		{"GET", func(ctx context.Context, c *upstash.Client) (bool, error) {
			_, err := c.Get(ctx, "k")
			return err == nil, err
		}},
		{"pipeline", func(ctx context.Context, c *upstash.Client) (bool, error) {
			_, err := c.Pipeline(ctx, upstash.Cmd("INCR", "n"))
			return err == nil, err
		}},
	}
	for _, status := range statuses {
		for _, tlsOrigin := range []bool{false, true} {
			for _, call := range calls {
				name := fmt.Sprintf("%d %s tls=%v", status, call.name, tlsOrigin)
				t.Run(name, func(t *testing.T) {
					p := newRedirectPair(t, status, tlsOrigin, func(target string) string {
						return target + "/collect?_token=" + secretToken
					})
					var opts []upstash.Option
					if tlsOrigin {
						// An https origin sending the client to plain http.
						opts = append(opts, upstash.WithTransport(p.origin.Client().Transport))
					}
					opts = append(opts, upstash.WithRetry(fastRetry))
					c, err := upstash.New(upstash.Config{URL: p.origin.URL, Token: secretToken}, opts...)
					if err != nil {
						t.Fatal(err)
					}
					ok, err := call.run(ctxT(t), c)
					if ok || err == nil {
						t.Fatalf("the call reported success (%v, %v) through a redirect", ok, err)
					}
					wantErrIs(t, err, upstash.ErrProtocol)
					if errors.Is(err, upstash.ErrOutcomeUnknown) {
						t.Errorf("a redirect is a refusal, yet the error matches ErrOutcomeUnknown: %v", err)
					}
					targetHost := strings.TrimPrefix(p.target.URL, "http://")
					if msg := err.Error(); !strings.Contains(msg, fmt.Sprint(status)) || !strings.Contains(msg, targetHost) {
						t.Errorf("error %q does not name the status %d and the host %s", msg, status, targetHost)
					}
					for _, leak := range []string{secretToken, "_token", "collect"} {
						if strings.Contains(err.Error(), leak) {
							t.Errorf("error %q shows %q from the Location", err, leak)
						}
					}
					if n := p.originRequests.Load(); n != 1 {
						t.Errorf("the origin got %d requests, want 1 (a redirect is not retried)", n)
					}
					if n, a, b := p.targetRequests.Load(), p.targetAuth.Load(), p.targetBodyBytes.Load(); n != 0 || a != 0 || b != 0 {
						t.Errorf("the redirect target got %d requests, %d tokens, %d body bytes; want none", n, a, b)
					}
				})
			}
		}
	}
	t.Run("relative Location", func(t *testing.T) {
		p := newRedirectPair(t, http.StatusTemporaryRedirect, false, func(string) string { return "/elsewhere?x=1" })
		c, err := upstash.New(upstash.Config{URL: p.origin.URL, Token: secretToken}, upstash.WithRetry(fastRetry))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Incr(ctxT(t), "n")
		wantErrIs(t, err, upstash.ErrProtocol)
		if host := strings.TrimPrefix(p.origin.URL, "http://"); !strings.Contains(err.Error(), host) {
			t.Errorf("error %q does not name the origin's host %s", err, host)
		}
		if n := p.originRequests.Load(); n != 1 {
			t.Errorf("the origin got %d requests, want 1", n)
		}
	})
}

// ---- HTTP/2 stream resets ----

// h2Server is a minimal HTTP/2 server (raw frames over TLS): Go's own server
// cannot be made to reset a stream with PROTOCOL_ERROR after its handler
// ran, which is what makes net/http's HTTP/2 transport replay a request. For
// each request it runs the command in the body (counting it by name), then
// either resets the stream with PROTOCOL_ERROR (the reply is lost) or
// answers {"result":...}.
type h2Server struct {
	URL       string
	transport http.RoundTripper // trusts the server's certificate, speaks h2

	mu        sync.Mutex
	runs      map[string]int
	resetNext int
	conns     []net.Conn
}

func newH2Server(t *testing.T) *h2Server {
	t.Helper()
	s := &h2Server{runs: map[string]int{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "HTTP/2 only", http.StatusHTTPVersionNotSupported)
	}))
	srv.EnableHTTP2 = true
	srv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		"h2": func(_ *http.Server, c *tls.Conn, _ http.Handler) { s.serveConn(c) },
	}
	srv.StartTLS()
	s.URL = srv.URL
	tr := srv.Client().Transport.(*http.Transport)
	s.transport = tr
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		srv.Close()
	})
	return s
}

func (s *h2Server) setReset(n int) {
	s.mu.Lock()
	s.resetNext = n
	s.mu.Unlock()
}

func (s *h2Server) ran(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[name]
}

// HTTP/2 frame types and flags (RFC 9113, section 6).
const (
	h2Data, h2Headers, h2RSTStream, h2Settings, h2Ping, h2GoAway = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
	h2EndStream, h2Ack, h2EndHeaders, h2Padded                   = 0x1, 0x1, 0x4, 0x8
	h2ProtocolError                                              = 0x1
)

func (s *h2Server) serveConn(c net.Conn) {
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	defer c.Close()
	br := bufio.NewReader(c)
	preface := make([]byte, 24)
	if _, err := io.ReadFull(br, preface); err != nil || string(preface) != "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
		return
	}
	write := func(typ, flags byte, stream uint32, payload []byte) error {
		frame := make([]byte, 9, 9+len(payload))
		frame[0], frame[1], frame[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
		frame[3], frame[4] = typ, flags
		binary.BigEndian.PutUint32(frame[5:], stream)
		_, err := c.Write(append(frame, payload...))
		return err
	}
	if write(h2Settings, 0, 0, nil) != nil {
		return
	}
	bodies := map[uint32][]byte{}
	for {
		var hdr [9]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(br, payload); err != nil {
			return
		}
		typ, flags, stream := hdr[3], hdr[4], binary.BigEndian.Uint32(hdr[5:])&0x7fffffff
		end := false
		switch typ {
		case h2Settings:
			if flags&h2Ack == 0 && write(h2Settings, h2Ack, 0, nil) != nil {
				return
			}
		case h2Ping:
			if flags&h2Ack == 0 && write(h2Ping, h2Ack, 0, payload) != nil {
				return
			}
		case h2GoAway:
			return
		case h2Headers:
			bodies[stream] = nil
			end = flags&h2EndStream != 0
		case h2Data:
			if flags&h2Padded != 0 && len(payload) > 0 {
				pad := int(payload[0])
				payload = payload[1 : len(payload)-pad]
			}
			bodies[stream] = append(bodies[stream], payload...)
			end = flags&h2EndStream != 0
		}
		if !end {
			continue
		}
		body := bodies[stream]
		delete(bodies, stream)
		// One command, or a pipeline of them (counted by its first).
		var args []string
		if json.Unmarshal(body, &args) != nil {
			var batch [][]string
			if json.Unmarshal(body, &batch) == nil && len(batch) > 0 {
				args = batch[0]
			}
		}
		name := ""
		if len(args) > 0 {
			name = strings.ToUpper(args[0])
		}
		s.mu.Lock()
		s.runs[name]++
		reset := s.resetNext > 0
		if reset {
			s.resetNext--
		}
		s.mu.Unlock()
		if reset {
			// The command ran; the reply is lost in a PROTOCOL_ERROR reset.
			if write(h2RSTStream, 0, stream, []byte{0, 0, 0, h2ProtocolError}) != nil {
				return
			}
			continue
		}
		// 0x88 is ":status: 200", entry 8 of HPACK's static table.
		if write(h2Headers, h2EndHeaders, stream, []byte{0x88}) != nil ||
			write(h2Data, h2EndStream, stream, []byte(`{"result":"dg=="}`)) != nil {
			return
		}
	}
}

// TestHTTP2ResetAfterTheCommandRan: net/http's HTTP/2 transport replays a
// request whose stream was reset with PROTOCOL_ERROR if it can rewind the
// body. A command not safe to repeat must run exactly once and end in
// ErrOutcomeUnknown; a read may be replayed.
func TestHTTP2ResetAfterTheCommandRan(t *testing.T) {
	for _, policy := range []struct {
		name string
		p    upstash.RetryPolicy
	}{{"no retries", upstash.NoRetry}, {"retries", fastRetry}} {
		t.Run(policy.name, func(t *testing.T) {
			s := newH2Server(t)
			c, err := upstash.New(upstash.Config{URL: s.URL, Token: secretToken},
				upstash.WithTransport(s.transport), upstash.WithRetry(policy.p))
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			// The connection speaks HTTP/2 (an HTTP/1 request would get a 505).
			if _, err := c.Get(ctx, "k"); err != nil {
				t.Fatalf("GET over HTTP/2: %v", err)
			}
			unsafe := []struct {
				name, counted string
				run           func() error
			}{
				{"SET NX", "SET", func() error { _, err := c.SetNX(ctx, "lock", "tok", time.Minute); return err }},
				{"SET", "SET", func() error { return c.Set(ctx, "k", "v", 0) }},
				{"INCR", "INCR", func() error { _, err := c.Incr(ctx, "n"); return err }},
				{"RPUSH in a pipeline", "RPUSH", func() error {
					_, err := c.Pipeline(ctx, upstash.Cmd("RPUSH", "l", "x"))
					return err
				}},
			}
			for _, u := range unsafe {
				before := s.ran(u.counted)
				s.setReset(1)
				err := u.run()
				wantErrIs(t, err, upstash.ErrOutcomeUnknown)
				if n := s.ran(u.counted) - before; n != 1 {
					t.Errorf("%s ran %d times after a PROTOCOL_ERROR reset, want exactly 1", u.name, n)
				}
			}
			// A read is replayed, by the transport or by the retry loop.
			before := s.ran("GET")
			s.setReset(1)
			if v, err := c.Get(ctx, "k"); err != nil || string(v) != "v" {
				t.Fatalf("GET after a reset: %q, %v; want a replay", v, err)
			}
			if n := s.ran("GET") - before; n != 2 {
				t.Errorf("GET ran %d times, want 2", n)
			}
		})
	}
}

// ---- replies cut mid-body ----

// rawReplyServer reads each request, counts its command, and writes the raw
// HTTP/1.1 reply bytes that reply returns for the n-th request (from 1),
// then closes the connection.
func rawReplyServer(t *testing.T, reply func(n int) string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		raw := reply(int(n.Add(1)))
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString(raw)
		_ = buf.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestReplyCutMidBody(t *testing.T) {
	const good = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"result\":1}"
	cuts := []struct {
		name string
		raw  string
		// detectable: the framing shows the cut (else the body just ends early
		// and reads as broken JSON)
		detectable bool
	}{
		{"Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"result\":", true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n{\"result\":\r\n", true},
		{"close-delimited", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"result\":", false},
	}
	for _, cut := range cuts {
		t.Run(cut.name+": INCR", func(t *testing.T) {
			srv, n := rawReplyServer(t, func(int) string { return cut.raw })
			c, err := upstash.New(upstash.Config{URL: srv.URL, Token: secretToken}, upstash.WithRetry(fastRetry))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Incr(ctxT(t), "n")
			wantErrIs(t, err, upstash.ErrOutcomeUnknown)
			if !cut.detectable {
				wantErrIs(t, err, upstash.ErrProtocol)
			}
			if got := n.Load(); got != 1 {
				t.Fatalf("%d requests, want 1", got)
			}
		})
		t.Run(cut.name+": GET", func(t *testing.T) {
			srv, n := rawReplyServer(t, func(i int) string {
				if i == 1 {
					return cut.raw
				}
				return good
			})
			c, err := upstash.New(upstash.Config{URL: srv.URL, Token: secretToken}, upstash.WithRetry(fastRetry))
			if err != nil {
				t.Fatal(err)
			}
			v, err := c.Do(ctxT(t), "GET", "k")
			if !cut.detectable {
				// A body that ends early without its framing saying so is
				// a server's malformed reply: not repeated.
				wantErrIs(t, err, upstash.ErrProtocol)
				if errors.Is(err, upstash.ErrOutcomeUnknown) {
					t.Errorf("a read's error matches ErrOutcomeUnknown: %v", err)
				}
				return
			}
			if err != nil || text(t, v) != "1" {
				t.Fatalf("GET after a cut reply: %v, %v; want a retry", v, err)
			}
			if got := n.Load(); got != 2 {
				t.Fatalf("%d requests, want 2", got)
			}
		})
	}
}

// ---- memory ----

// allocDuring returns how many bytes the process allocated on the heap
// while fn ran: an upper bound of what fn can have held at once.
func allocDuring(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestMemoryStaysWithinTheLimit: an endless chunked reply and a gzip bomb
// cost at most the response limit plus a small constant. The measure is
// every byte allocated during the call (not a sampled peak), so the bound
// holds whatever the garbage collector did meanwhile.
func TestMemoryStaysWithinTheLimit(t *testing.T) {
	const limit = 8 << 20
	const margin = 16 << 20
	t.Run("1 GiB chunked reply", func(t *testing.T) {
		var wrote atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := bytes.Repeat([]byte("QUFB"), 16<<10)
			_, _ = io.WriteString(w, `{"result":"`)
			for wrote.Load() < 1<<30 {
				n, err := w.Write(chunk)
				wrote.Add(int64(n))
				if err != nil {
					return
				}
			}
			_, _ = io.WriteString(w, `"}`)
		}))
		defer srv.Close()
		c, err := upstash.New(upstash.Config{URL: srv.URL, Token: secretToken},
			upstash.WithLimits(upstash.Limits{MaxResponseBytes: limit}))
		if err != nil {
			t.Fatal(err)
		}
		var callErr error
		alloc := allocDuring(func() { _, callErr = c.Do(ctxT(t), "GET", "k") })
		wantErrIs(t, callErr, upstash.ErrProtocol)
		t.Logf("allocated %.1f MB for a %d MB limit (the server wrote %d MB before the client hung up)",
			float64(alloc)/(1<<20), limit>>20, wrote.Load()>>20)
		if alloc > limit+margin {
			t.Fatalf("allocated %d bytes, more than the limit %d plus %d", alloc, limit, margin)
		}
	})
	t.Run("array of tiny elements", func(t *testing.T) {
		// Within the limit as read, each element decodes to a Value of
		// 64 bytes: the values are charged against the same limit, and the
		// reply is refused once they pass it.
		var body strings.Builder
		body.WriteString(`{"result":[`)
		for body.Len() < limit-10 {
			body.WriteString(`1,`)
		}
		body.WriteString(`1]}`)
		for _, cmd := range []string{"LRANGE", "EVAL"} {
			c, mt, rec := newMock(t, upstash.WithLimits(upstash.Limits{MaxResponseBytes: limit}))
			on(mt, "", rec.reply(200, body.String()))
			var callErr error
			alloc := allocDuring(func() { _, callErr = c.Do(ctxT(t), cmd, "k") })
			wantErrIs(t, callErr, upstash.ErrProtocol)
			if unknown := errors.Is(callErr, upstash.ErrOutcomeUnknown); unknown != (cmd == "EVAL") {
				t.Errorf("%s: ErrOutcomeUnknown = %v: %v", cmd, unknown, callErr)
			}
			t.Logf("%s: allocated %.1f MB for a %d MB reply of %d elements", cmd, float64(alloc)/(1<<20), limit>>20, body.Len()/2)
			// The body, encoding/json's copy of the result, and the array
			// of values up to the limit, doubling as it grows.
			if alloc > 4*limit+margin {
				t.Fatalf("%s: allocated %d bytes, more than 4 times the limit %d plus %d", cmd, alloc, limit, margin)
			}
		}
	})
	t.Run("chunked reply of exactly the limit", func(t *testing.T) {
		// A base64 value, padded to the limit with the whitespace JSON
		// allows after it.
		value := strings.Repeat("QUFB", (limit-len(`{"result":""}`))/4)
		body := `{"result":"` + value + `"}` + strings.Repeat(" ", limit-len(value)-len(`{"result":""}`))
		if len(body) != limit {
			t.Fatalf("body of %d bytes", len(body))
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < len(body); i += 64 << 10 {
				_, _ = io.WriteString(w, body[i:min(i+64<<10, len(body))])
				w.(http.Flusher).Flush()
			}
		}))
		defer srv.Close()
		c, err := upstash.New(upstash.Config{URL: srv.URL, Token: secretToken},
			upstash.WithLimits(upstash.Limits{MaxResponseBytes: limit}))
		if err != nil {
			t.Fatal(err)
		}
		v, err := c.Do(ctxT(t), "GET", "k")
		if err != nil {
			t.Fatalf("a reply of exactly the limit: %v", err)
		}
		if b, _ := v.Bytes(); len(b) != len(value)/4*3 {
			t.Fatalf("value of %d bytes", len(b))
		}
	})
	t.Run("gzip bomb", func(t *testing.T) {
		// 1024 gzip members of 1 MB of zeros each: about 1 MB that
		// expands to 1 GiB (a reader of concatenated members reads all).
		var member bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
		_, _ = zw.Write(make([]byte, 1<<20))
		_ = zw.Close()
		bomb := bytes.Repeat(member.Bytes(), 1024)
		var acceptEncoding atomic.Value
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			acceptEncoding.Store(r.Header.Get("Accept-Encoding"))
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(bomb)
		}))
		defer srv.Close()
		transports := []struct {
			name string
			rt   http.RoundTripper
		}{
			{"default transport", nil},
			// A transport that would ask for gzip and expand it by itself.
			{"transport with compression on", &http.Transport{}},
		}
		for _, tr := range transports {
			c, err := upstash.New(upstash.Config{URL: srv.URL, Token: secretToken},
				upstash.WithTransport(tr.rt), upstash.WithRetry(fastRetry),
				upstash.WithLimits(upstash.Limits{MaxResponseBytes: limit}))
			if err != nil {
				t.Fatal(err)
			}
			var callErr error
			alloc := allocDuring(func() { _, callErr = c.Do(ctxT(t), "GET", "k") })
			wantErrIs(t, callErr, upstash.ErrProtocol)
			if !strings.Contains(callErr.Error(), "compressed") {
				t.Errorf("%s: error %q does not say the reply is compressed", tr.name, callErr)
			}
			if got := acceptEncoding.Load(); got != "identity" {
				t.Errorf("%s: the request asked for Accept-Encoding %q, want identity", tr.name, got)
			}
			t.Logf("%s: allocated %.1f MB for a %d-byte gzip reply", tr.name, float64(alloc)/(1<<20), len(bomb))
			if alloc > limit+margin {
				t.Fatalf("%s: allocated %d bytes, more than the limit %d plus %d", tr.name, alloc, limit, margin)
			}
		}
	})
}

// ---- the token in server text ----

// TestServerEchoingTheToken: text the server sends is cleaned of the token
// before it reaches an error, an *Error's Message or a log line.
func TestServerEchoingTheToken(t *testing.T) {
	echo := "ERR bad request from " + secretToken + " (Bearer " + secretToken + ")"
	cases := []struct {
		name string
		run  func(t *testing.T, c *upstash.Client, on func(path string, status int, body string, kv ...string)) []error
	}{
		{"error reply", func(t *testing.T, c *upstash.Client, on func(string, int, string, ...string)) []error {
			on("", 400, `{"error":"`+echo+`"}`)
			_, err := c.Do(ctxT(t), "GET", "k")
			return []error{err}
		}},
		{"error in a 200", func(t *testing.T, c *upstash.Client, on func(string, int, string, ...string)) []error {
			on("", 200, `{"error":"`+echo+`"}`)
			_, err := c.Do(ctxT(t), "GET", "k")
			return []error{err}
		}},
		{"401", func(t *testing.T, c *upstash.Client, on func(string, int, string, ...string)) []error {
			on("", 401, `{"error":"`+echo+`"}`)
			_, err := c.Do(ctxT(t), "GET", "k")
			return []error{err}
		}},
		{"HTML 503 retried", func(t *testing.T, c *upstash.Client, on func(string, int, string, ...string)) []error {
			on("", 503, "<html>"+echo+"</html>")
			_, err := c.Do(ctxT(t), "GET", "k")
			return []error{err}
		}},
		{"pipeline element errors", func(t *testing.T, c *upstash.Client, on func(string, int, string, ...string)) []error {
			on("/pipeline", 200, `[{"error":"`+echo+`"},{"result":1}]`)
			res, err := c.Pipeline(ctxT(t), upstash.Cmd("GET", "a"), upstash.Cmd("GET", "b"))
			if err != nil {
				return []error{err}
			}
			return []error{res[0].Err}
		}},
		{"transaction discarded", func(t *testing.T, c *upstash.Client, on func(string, int, string, ...string)) []error {
			on("/multi-exec", 400, `{"error":"`+echo+`"}`)
			_, err := c.Transaction(ctxT(t), upstash.Cmd("INCR", "a"))
			return []error{err}
		}},
		{"redirect to a host named after the token", func(t *testing.T, c *upstash.Client, on func(string, int, string, ...string)) []error {
			on("", 307, "", "Location", "https://"+secretToken+".example/")
			_, err := c.Do(ctxT(t), "GET", "k")
			return []error{err}
		}},
		{"compressed reply", func(t *testing.T, c *upstash.Client, on func(string, int, string, ...string)) []error {
			on("", 200, "x", "Content-Encoding", secretToken)
			_, err := c.Do(ctxT(t), "GET", "k")
			return []error{err}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logRecorder{}
			c, mt, rec := newMock(t, upstash.WithRetry(fastRetry), upstash.WithLogger(slog.New(logs)))
			errs := tc.run(t, c, func(path string, status int, body string, kv ...string) {
				on(mt, path, rec.reply(status, body, kv...))
			})
			for _, err := range errs {
				if err == nil {
					t.Fatal("no error")
				}
				for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
					if strings.Contains(text, secretToken) {
						t.Errorf("error text %q holds the token", text)
					}
				}
				var e *upstash.Error
				if errors.As(err, &e) && strings.Contains(e.Message, secretToken) {
					t.Errorf("Error.Message %q holds the token", e.Message)
				}
				for u := errors.Unwrap(err); u != nil; u = errors.Unwrap(u) {
					if strings.Contains(u.Error(), secretToken) {
						t.Errorf("wrapped error %q holds the token", u)
					}
				}
			}
			logs.mu.Lock()
			defer logs.mu.Unlock()
			for _, r := range logs.records {
				var b strings.Builder
				b.WriteString(r.Message)
				r.Attrs(func(a slog.Attr) bool {
					fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
					return true
				})
				if strings.Contains(b.String(), secretToken) {
					t.Errorf("log line %q holds the token", b.String())
				}
			}
		})
	}
	t.Run("malformed status line", func(t *testing.T) {
		// net/http quotes a malformed status line in its error.
		srv, _ := rawReplyServer(t, func(int) string { return "HTTP/1.1 2x0 " + secretToken + "\r\n\r\n" })
		c, err := upstash.New(upstash.Config{URL: srv.URL, Token: secretToken}, upstash.WithRetry(fastRetry))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Do(ctxT(t), "GET", "k")
		if err == nil || strings.Contains(err.Error(), secretToken) {
			t.Fatalf("error %v; want one without the token", err)
		}
	})
}

// TestClientPrintsWithoutTheToken: a Client, as a value or a pointer, with
// every fmt verb, in JSON and through log/slog, never shows the token.
func TestClientPrintsWithoutTheToken(t *testing.T) {
	c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken})
	if err != nil {
		t.Fatal(err)
	}
	want := `upstash.Client{URL: "` + mockURL + `"}`
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x"} {
		for _, x := range []any{c, *c} {
			out := fmt.Sprintf(verb, x)
			if verb == "%v" && out != want {
				t.Errorf("%s of %T = %s, want %s", verb, x, out, want)
			}
			outs = append(outs, out)
		}
	}
	holder := struct {
		C  *upstash.Client
		CV upstash.Client
	}{c, *c}
	outs = append(outs, fmt.Sprintf("%+v", holder), fmt.Sprintf("%#v", holder))
	for _, x := range []any{c, *c, holder} {
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", x, err)
		}
		outs = append(outs, string(b))
	}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("client", "pointer", c, "value", *c, "any", slog.AnyValue(*c))
	}
	outs = append(outs, logs.String())
	if !strings.Contains(logs.String(), mockURL) {
		t.Errorf("the log lines do not show the client's URL: %s", logs.String())
	}
	for _, out := range outs {
		if strings.Contains(out, secretToken) || strings.Contains(out, "Bearer") {
			t.Errorf("output %q shows the token", out)
		}
	}
	var nilClient *upstash.Client
	if got := fmt.Sprint(nilClient); got != "<nil>" {
		t.Errorf("a nil *Client prints %q", got)
	}
	if got := fmt.Sprint(upstash.Client{}); got != "upstash.Client{}" {
		t.Errorf("the zero Client prints %q", got)
	}
}

// TestNothingSentNeverCountsAsUnknown: a request the default transport
// refused before connecting (here an invalid header value) was not sent, so
// it is not an unknown outcome, even for INCR.
func TestNothingSentNeverCountsAsUnknown(t *testing.T) {
	s := newNetServer(t)
	c, err := upstash.New(upstash.Config{URL: s.URL, Token: secretToken}, upstash.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	c.SetSyncToken("bad\nvalue")
	_, err = c.Incr(ctxT(t), "n")
	if err == nil || errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Fatalf("INCR with an unsendable header: %v; want an error that is not ErrOutcomeUnknown", err)
	}
	if handled, _ := s.stats(); handled != 0 {
		t.Fatalf("the server handled %d requests", handled)
	}
}
