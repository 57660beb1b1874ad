package upstash_test

// Tests of one HTTP attempt (transport.go): how statuses and bodies become
// values or errors, the headers each request carries, read-your-writes, the
// response limit, and what reaches the wire.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chatstate/upstash"
)

func TestStatusesAndBodies(t *testing.T) {
	type check func(t *testing.T, v upstash.Value, err error)
	isText := func(want string) check {
		return func(t *testing.T, v upstash.Value, err error) {
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if got := text(t, v); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	}
	isErr := func(status int, code, msg string, sentinels ...error) check {
		return func(t *testing.T, _ upstash.Value, err error) {
			e := asError(t, err)
			if e.Status != status || e.Code != code || e.Message != msg || e.Command != "GET" || e.Index != -1 {
				t.Fatalf("got %+v, want status %d code %q message %q command GET index -1", *e, status, code, msg)
			}
			wantErrIs(t, err, sentinels...)
			if errors.Is(err, upstash.ErrOutcomeUnknown) || errors.Is(err, upstash.ErrProtocol) {
				t.Errorf("a clear refusal must not match ErrOutcomeUnknown or ErrProtocol: %v", err)
			}
		}
	}
	isSentinel := func(targets ...error) check {
		return func(t *testing.T, _ upstash.Value, err error) { wantErrIs(t, err, targets...) }
	}
	const html = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
	tests := []struct {
		name   string
		status int
		body   string
		check  check
	}{
		{"200 string", 200, `{"result":"YmFy"}`, isText("bar")},
		{"200 OK status", 200, `{"result":"OK"}`, isText("OK")},
		{"200 integer", 200, `{"result":42}`, isText("42")},
		{"200 null", 200, `{"result":null}`, func(t *testing.T, v upstash.Value, err error) {
			if err != nil || !v.IsNil() || v.Kind() != upstash.KindNil {
				t.Fatalf("got %v, %v; want a nil value", v, err)
			}
		}},
		{"200 error", 200, `{"error":"ERR wrong number of arguments for 'get' command"}`,
			isErr(200, "ERR", "ERR wrong number of arguments for 'get' command")},
		{"200 error wins over result", 200, `{"result":"YmFy","error":"ERR boom"}`, isErr(200, "ERR", "ERR boom")},
		{"400 command error", 400, `{"error":"ERR wrong number of arguments for 'get' command"}`,
			isErr(400, "ERR", "ERR wrong number of arguments for 'get' command")},
		{"400 WRONGTYPE", 400, `{"error":"WRONGTYPE Operation against a key holding the wrong kind of value"}`,
			isErr(400, "WRONGTYPE", "WRONGTYPE Operation against a key holding the wrong kind of value")},
		{"400 max request size", 400, `{"error":"ERR max request size exceeded"}`,
			isErr(400, "ERR", "ERR max request size exceeded", upstash.ErrRequestTooLarge)},
		{"400 non-JSON", 400, "Bad Request", isSentinel(upstash.ErrProtocol)},
		{"401 JSON", 401, `{"error":"WRONGPASS invalid or missing auth token"}`,
			isErr(401, "WRONGPASS", "WRONGPASS invalid or missing auth token", upstash.ErrUnauthorized)},
		{"401 text", 401, "Unauthorized", isErr(401, "", "unauthorized", upstash.ErrUnauthorized)},
		{"401 empty", 401, "", isErr(401, "", "unauthorized", upstash.ErrUnauthorized)},
		{"405 JSON", 405, `{"error":"Method Not Allowed"}`, isErr(405, "", "Method Not Allowed")},
		{"405 text", 405, "Method Not Allowed", isSentinel(upstash.ErrProtocol)},
		{"413 empty", 413, "", func(t *testing.T, _ upstash.Value, err error) {
			wantErrIs(t, err, upstash.ErrRequestTooLarge)
			if e := asError(t, err); e.Status != 413 {
				t.Fatalf("status %d", e.Status)
			}
		}},
		{"413 HTML", 413, "<html>Request Entity Too Large</html>", isSentinel(upstash.ErrRequestTooLarge)},
		{"413 JSON", 413, `{"error":"ERR max request size exceeded"}`,
			isErr(413, "ERR", "ERR max request size exceeded", upstash.ErrRequestTooLarge)},
		{"429 JSON", 429, `{"error":"ERR max requests limit exceeded"}`, isErr(429, "ERR", "ERR max requests limit exceeded")},
		{"500 JSON", 500, `{"error":"ERR internal error"}`, isErr(500, "ERR", "ERR internal error")},
		{"500 HTML", 500, html, isSentinel(upstash.ErrProtocol)},
		{"502 HTML", 502, html, isSentinel(upstash.ErrProtocol)},
		{"503 HTML", 503, html, isSentinel(upstash.ErrProtocol)},
		{"truncated JSON", 200, `{"result":"YmF`, isSentinel(upstash.ErrProtocol)},
		{"not JSON", 200, `<html>hello</html>`, isSentinel(upstash.ErrProtocol)},
		{"empty body", 200, ``, isSentinel(upstash.ErrProtocol)},
		{"missing result", 200, `{}`, isSentinel(upstash.ErrProtocol)},
		{"only other fields", 200, `{"status":"ok"}`, isSentinel(upstash.ErrProtocol)},
		{"array body", 200, `[{"result":1}]`, isSentinel(upstash.ErrProtocol)},
		{"JSON null body", 200, `null`, isSentinel(upstash.ErrProtocol)},
		{"trailing data", 200, `{"result":1} {"result":2}`, isSentinel(upstash.ErrProtocol)},
		{"float result", 200, `{"result":1.5}`, isSentinel(upstash.ErrProtocol)},
		{"huge integer", 200, `{"result":123456789012345678901234567890}`, isSentinel(upstash.ErrProtocol)},
		{"object result", 200, `{"result":{"a":1}}`, isSentinel(upstash.ErrProtocol)},
		{"error not a string", 200, `{"error":42}`, isSentinel(upstash.ErrProtocol)},
		{"204 no content", 204, ``, isSentinel(upstash.ErrProtocol)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, mt, rec := newMock(t)
			on(mt, "", rec.reply(tc.status, tc.body))
			v, err := c.Do(ctxT(t), "GET", secretArg)
			tc.check(t, v, err)
			if n := rec.count(); n != 1 {
				t.Fatalf("%d requests, want exactly 1 (no retries)", n)
			}
			if err != nil {
				for _, leak := range []string{secretArg, secretToken} {
					if strings.Contains(err.Error(), leak) {
						t.Fatalf("error text %q contains %q", err, leak)
					}
				}
				if !strings.Contains(err.Error(), "GET") {
					t.Errorf("error text %q does not name the command", err)
				}
			}
		})
	}
}

func TestRequestHeaders(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c, mt, rec := newMock(t, upstash.WithTelemetry(true))
		on(mt, "", rec.reply(200, `{"result":"PONG"}`))
		on(mt, "/pipeline", rec.reply(200, `[{"result":1}]`))
		if err := c.Ping(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Pipeline(ctxT(t), upstash.Cmd("INCR", "x")); err != nil {
			t.Fatal(err)
		}
		for _, cl := range rec.all() {
			h := cl.Header
			for k, want := range map[string]string{
				"Authorization":         "Bearer " + secretToken,
				"Content-Type":          "application/json",
				"Upstash-Encoding":      "base64",
				"Upstash-Telemetry-Sdk": "chatstate-upstash-go@v" + upstash.Version,
				"Accept-Encoding":       "identity",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("%s %s = %q, want %q", cl.Path, k, got, want)
				}
			}
			if !strings.HasPrefix(h.Get("Upstash-Telemetry-Runtime"), "go@go1.") {
				t.Errorf("runtime header %q", h.Get("Upstash-Telemetry-Runtime"))
			}
			if h.Get("Upstash-Telemetry-Platform") == "" {
				t.Error("no platform header")
			}
			if v, ok := h["Upstash-Sync-Token"]; ok {
				t.Errorf("sync token %q sent before any was received", v)
			}
		}
		// Safe commands carry a present-but-empty Idempotency-Key (net/http
		// writes nothing for it, see TestIdempotencyKeyNotOnTheWire); others
		// carry none.
		calls := rec.all()
		if v, ok := calls[0].Header["Idempotency-Key"]; !ok || len(v) != 0 {
			t.Errorf("PING: Idempotency-Key = %q, %v; want present and empty", v, ok)
		}
		if _, ok := calls[1].Header["Idempotency-Key"]; ok {
			t.Error("INCR pipeline carries an Idempotency-Key")
		}
	})
	t.Run("telemetry off", func(t *testing.T) {
		c, mt, rec := newMock(t, upstash.WithTelemetry(false))
		on(mt, "", rec.reply(200, `{"result":"PONG"}`))
		if err := c.Ping(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		for k := range rec.all()[0].Header {
			if strings.HasPrefix(k, "Upstash-Telemetry") {
				t.Errorf("header %s sent with telemetry off", k)
			}
		}
	})
	t.Run("UPSTASH_DISABLE_TELEMETRY", func(t *testing.T) {
		t.Setenv("UPSTASH_DISABLE_TELEMETRY", "1")
		c, mt, rec := newMock(t)
		on(mt, "", rec.reply(200, `{"result":"PONG"}`))
		if err := c.Ping(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		for k := range rec.all()[0].Header {
			if strings.HasPrefix(k, "Upstash-Telemetry") {
				t.Errorf("header %s sent with UPSTASH_DISABLE_TELEMETRY set", k)
			}
		}
	})
}

func TestReadYourWrites(t *testing.T) {
	c, mt, rec := newMock(t)
	on(mt, "", rec.sequence(
		canned{status: 200, body: `{"result":"OK"}`, header: http.Header{"Upstash-Sync-Token": {"tok-1"}}},
		canned{status: 200, body: `{"result":"OK"}`, header: http.Header{"Upstash-Sync-Token": {"tok-2"}}},
		canned{status: 200, body: `{"result":"eA=="}`}, // no token: keep tok-2
		canned{status: 400, body: `{"error":"ERR syntax error"}`, header: http.Header{"Upstash-Sync-Token": {"tok-err"}}},
		canned{status: 500, body: `{"error":"ERR internal"}`, header: http.Header{"Upstash-Sync-Token": {"tok-500"}}},
		canned{err: errors.New("connection refused")},
		canned{status: 200, body: `{"result":"eA=="}`, header: http.Header{"Upstash-Sync-Token": {"tok-3"}}},
		canned{status: 200, body: `{"result":"eA=="}`},
	))
	on(mt, "/pipeline", rec.reply(200, `[{"result":1}]`, "Upstash-Sync-Token", "tok-4"))
	ctx := ctxT(t)
	if got := c.SyncToken(); got != "" {
		t.Fatalf("initial token %q", got)
	}
	_, _ = c.Do(ctx, "SET", "k", "x")                // 1: no header, gets tok-1
	_, _ = c.Do(ctx, "SET", "k", "y")                // 2: sends tok-1, gets tok-2
	_, _ = c.Do(ctx, "GET", "k")                     // 3: sends tok-2, gets none
	_, _ = c.Do(ctx, "SET", "k")                     // 4: sends tok-2, 400
	_, _ = c.Do(ctx, "INCR", "k")                    // 5: sends tok-2, 500
	_, _ = c.Do(ctx, "GET", "k")                     // 6: sends tok-2, network error
	_, _ = c.Do(ctx, "GET", "k")                     // 7: sends tok-2, gets tok-3
	_, _ = c.Pipeline(ctx, upstash.Cmd("INCR", "n")) // 8: sends tok-3, gets tok-4
	c.SetSyncToken("handed-over")                    //
	_, _ = c.Do(ctx, "GET", "k")                     // 9: sends handed-over
	want := []string{"", "tok-1", "tok-2", "tok-2", "tok-2", "tok-2", "tok-2", "tok-3", "handed-over"}
	calls := rec.all()
	if len(calls) != len(want) {
		t.Fatalf("%d calls", len(calls))
	}
	for i, cl := range calls {
		v, ok := cl.Header["Upstash-Sync-Token"]
		if want[i] == "" {
			if ok {
				t.Errorf("request %d carries token %q, want none", i+1, v)
			}
			continue
		}
		if got := cl.Header.Get("Upstash-Sync-Token"); got != want[i] {
			t.Errorf("request %d carries token %q, want %q", i+1, got, want[i])
		}
	}
	if got := c.SyncToken(); got != "handed-over" {
		t.Fatalf("SyncToken() = %q", got)
	}
}

func TestReadYourWritesOff(t *testing.T) {
	c, mt, rec := newMock(t, upstash.WithReadYourWrites(false))
	on(mt, "", rec.reply(200, `{"result":"OK"}`, "Upstash-Sync-Token", "tok-1"))
	c.SetSyncToken("manual")
	for i := 0; i < 3; i++ {
		if _, err := c.Do(ctxT(t), "SET", "k", "v"); err != nil {
			t.Fatal(err)
		}
	}
	for i, cl := range rec.all() {
		if v, ok := cl.Header["Upstash-Sync-Token"]; ok {
			t.Errorf("request %d carries %q with read-your-writes off", i+1, v)
		}
	}
}

// TestIdempotencyKeyNotOnTheWire checks that the empty Idempotency-Key that
// marks safe requests for net/http is never sent.
func TestIdempotencyKeyNotOnTheWire(t *testing.T) {
	s := newNetServer(t)
	c := netClient(t, s, upstash.NoRetry, nil)
	ctx := ctxT(t)
	_ = c.Set(ctx, "k", "v", 0)
	_, _ = c.Get(ctx, "k")
	_, _ = c.Incr(ctx, "n")
	_, _ = c.Run(ctx, upstash.Cmd("INCR", "n").Idempotent())
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.headers) != 4 {
		t.Fatalf("%d requests", len(s.headers))
	}
	for i, h := range s.headers {
		for k := range h {
			if strings.EqualFold(k, "Idempotency-Key") || strings.EqualFold(k, "X-Idempotency-Key") {
				t.Errorf("request %d carried %s: %q", i+1, k, h[k])
			}
		}
		if got := h.Get("Authorization"); got != "Bearer "+secretToken {
			t.Errorf("request %d Authorization %q", i+1, got)
		}
	}
}

func TestResponseLimit(t *testing.T) {
	big := `{"result":"` + strings.Repeat("QUFB", 100) + `"}`
	for _, cmd := range []string{"GET", "INCR"} {
		t.Run(cmd, func(t *testing.T) {
			c, mt, rec := newMock(t, upstash.WithLimits(upstash.Limits{MaxResponseBytes: 300}), upstash.WithRetry(fastRetry))
			on(mt, "", rec.reply(200, big))
			_, err := c.Do(ctxT(t), cmd, "k")
			wantErrIs(t, err, upstash.ErrProtocol)
			// The server answered: asking again cannot make the reply smaller,
			// and the command did run. What INCR did was in the lost reply.
			if n := rec.count(); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
			if unknown := errors.Is(err, upstash.ErrOutcomeUnknown); unknown != (cmd == "INCR") {
				t.Fatalf("an oversized reply to %s: ErrOutcomeUnknown = %v: %v", cmd, unknown, err)
			}
		})
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("real server, chunked %v", chunked), func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				if !chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(big)))
				}
				for i := 0; i < len(big); i += 100 {
					_, _ = io.WriteString(w, big[i:min(i+100, len(big))])
					if chunked {
						w.(http.Flusher).Flush()
					}
				}
			}))
			defer srv.Close()
			c, err := upstash.New(upstash.Config{URL: srv.URL, Token: "t"}, upstash.WithRetry(fastRetry),
				upstash.WithLimits(upstash.Limits{MaxResponseBytes: 300}))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Do(ctxT(t), "GET", "k")
			wantErrIs(t, err, upstash.ErrProtocol)
			if got := n.Load(); got != 1 {
				t.Fatalf("%d requests", got)
			}
			// Within the limit, the same server's reply decodes.
			c, _ = upstash.New(upstash.Config{URL: srv.URL, Token: "t"}, upstash.WithLimits(upstash.Limits{MaxResponseBytes: int64(len(big))}))
			v, err := c.Do(ctxT(t), "GET", "k")
			if err != nil || len(text(t, v)) != 300 {
				t.Fatalf("%v %v", v, err)
			}
		})
	}
	t.Run("at the limit", func(t *testing.T) {
		c, mt, rec := newMock(t, upstash.WithLimits(upstash.Limits{MaxResponseBytes: int64(len(big))}))
		on(mt, "", rec.reply(200, big))
		if _, err := c.Do(ctxT(t), "GET", "k"); err != nil {
			t.Fatal(err)
		}
	})
}
