package upstash_test

// Integration tests against upstashtest, the project's Upstash-compatible
// server: on the embedded miniredis by default, on a real redis-server with
// UPSTASHTEST_REDIS=redis-server.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// newServer starts an upstashtest server and a client of it. Retries are
// fast so that fault tests take milliseconds.
func newServer(t *testing.T, opts ...upstash.Option) (*upstashtest.Server, *upstash.Client) {
	t.Helper()
	srv := upstashtest.NewServer(t)
	return srv, clientOf(t, srv.URL, srv.Token, opts...)
}

func clientOf(t *testing.T, url, token string, opts ...upstash.Option) *upstash.Client {
	t.Helper()
	all := append([]upstash.Option{upstash.WithRetry(fastRetry)}, opts...)
	c, err := upstash.New(upstash.Config{URL: url, Token: token}, all...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustDo(t *testing.T, c *upstash.Client, args ...any) upstash.Value {
	t.Helper()
	v, err := c.Do(ctxT(t), args[0].(string), args[1:]...)
	if err != nil {
		t.Fatalf("%v: %v", args[0], err)
	}
	return v
}

func TestIntegrationRoundTrip(t *testing.T) {
	srv, c := newServer(t)
	ctx := ctxT(t)
	values := map[string]string{
		"nul":       "a\x00b\x00",
		"unicode":   "ünïcödé 🚀 \u2028 中文",
		"ok":        "OK", // a bulk "OK" travels as T0s=, the status OK raw
		"empty":     "",
		"pong":      "PONG",
		"json":      `{"a":"b\"c","n":[1,2]}`,
		"controls":  "\x01\x1f\x7f\t\r\n",
		"base64ish": "YmFy",
	}
	for k, v := range values {
		if err := c.Set(ctx, k, v, 0); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	for k, v := range values {
		got, err := c.Get(ctx, k)
		if err != nil {
			t.Fatalf("GET %s: %v", k, err)
		}
		if string(got) != v {
			t.Errorf("GET %s = %q, want %q", k, got, v)
		}
	}
	// Bytes that are not UTF-8 cannot be sent in a JSON body, but come back
	// exactly thanks to base64.
	bin := []byte{0xff, 0x00, 0xfe, 0x80, 'O', 'K', 0xc3}
	if _, err := srv.Do("SET", "bin", bin); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, "bin")
	if err != nil || !bytes.Equal(got, bin) {
		t.Fatalf("GET bin = %q, %v; want %q", got, err, bin)
	}
	if err := c.Set(ctx, "bin2", string(bin), 0); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Fatalf("SET of invalid UTF-8: %v", err)
	}
	if _, err := c.Get(ctx, "missing"); !errors.Is(err, upstash.ErrNil) {
		t.Fatalf("GET missing: %v", err)
	}
	// Status replies and integers.
	if v := mustDo(t, c, "PING"); text(t, v) != "PONG" {
		t.Fatalf("PING = %v", v)
	}
	if v := mustDo(t, c, "TYPE", "nul"); text(t, v) != "string" {
		t.Fatalf("TYPE = %v", v)
	}
	if v := mustDo(t, c, "SET", "k", "v"); text(t, v) != "OK" {
		t.Fatalf("SET = %v", v)
	}
	if n, err := c.Incr(ctx, "counter"); n != 1 || err != nil {
		t.Fatalf("INCR = %d %v", n, err)
	}
	if v := mustDo(t, c, "INCRBYFLOAT", "f", 1.5); text(t, v) != "1.5" {
		t.Fatalf("INCRBYFLOAT = %v", v)
	}
	// Arrays with nil and nested arrays.
	mustDo(t, c, "RPUSH", "list", "a", "", "\x00", "OK")
	if v := mustDo(t, c, "LRANGE", "list", 0, -1); v.String() != `["a", "", "\x00", "OK"]` {
		t.Fatalf("LRANGE = %v", v)
	}
	if v := mustDo(t, c, "MGET", "nul", "missing", "ok"); v.String() != `["a\x00b\x00", (nil), "OK"]` {
		t.Fatalf("MGET = %v", v)
	}
	v := mustDo(t, c, "EVAL", "return {1, 'OK', {'x', redis.status_reply('OK')}, false}", 0)
	if v.String() != `[(integer) 1, "OK", ["x", "OK"], (nil)]` {
		t.Fatalf("nested EVAL reply = %v", v)
	}
	// TTLs go in milliseconds.
	if err := c.Set(ctx, "ttl", "v", 90500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d, err := c.PTTL(ctx, "ttl"); err != nil || d <= 0 || d > 90500*time.Millisecond {
		t.Fatalf("PTTL = %v %v", d, err)
	}
	if n, err := c.Del(ctx, "ttl", "nope"); n != 1 || err != nil {
		t.Fatalf("DEL = %d %v", n, err)
	}
}

func TestIntegrationBase64Off(t *testing.T) {
	srv, c := newServer(t, upstash.WithBase64(false))
	if _, err := srv.Do("SET", "bin", []byte{'a', 0xff, 'b'}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctxT(t), "bin")
	if err != nil {
		t.Fatal(err)
	}
	// Without base64 the server replaces invalid UTF-8 with U+FFFD.
	if string(got) != "a\uFFFDb" {
		t.Fatalf("got %q", got)
	}
	if err := c.Set(ctxT(t), "s", "ünï\x00", 0); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctxT(t), "s"); err != nil || string(got) != "ünï\x00" {
		t.Fatalf("got %q %v", got, err)
	}
}

func TestIntegrationLargeValue(t *testing.T) {
	_, c := newServer(t)
	ctx := ctxT(t)
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = "abcdefghijklmnopqrstuvwxyz0123456789\x00é"[i%38]
	}
	// Keep it valid UTF-8: é is two bytes, so build from runes.
	val := strings.ToValidUTF8(string(big), "?")
	if err := c.Set(ctx, "big", val, 0); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != val {
		t.Fatalf("1 MB value came back different (%d bytes, want %d)", len(got), len(val))
	}
	res, err := c.Pipeline(ctx, upstash.Cmd("GET", "big"), upstash.Cmd("STRLEN", "big"))
	if err != nil {
		t.Fatal(err)
	}
	if text(t, res[0].Value) != val || text(t, res[1].Value) != fmt.Sprint(len(val)) {
		t.Fatal("pipeline of a 1 MB value")
	}
}

func TestIntegrationPipeline(t *testing.T) {
	srv, c := newServer(t)
	res, err := c.Pipeline(ctxT(t),
		upstash.Cmd("SET", "a", "x"),
		upstash.Cmd("INCR", "a"),
		upstash.Cmd("GET", "a"),
		upstash.Cmd("RPUSH", "l", "1", "2"),
		upstash.Cmd("LRANGE", "l", 0, -1),
		upstash.Cmd("GET", "missing"),
		upstash.Cmd("NOPE", secretArg),
	)
	if err != nil {
		t.Fatal(err)
	}
	if text(t, res[0].Value) != "OK" || text(t, res[2].Value) != "x" || text(t, res[3].Value) != "2" || res[4].Value.String() != `["1", "2"]` || !res[5].Value.IsNil() {
		t.Fatalf("results %v", res)
	}
	if e := asError(t, res[1].Err); e.Index != 1 || e.Command != "INCR" || e.Code != "ERR" {
		t.Fatalf("INCR error %+v", *e)
	}
	e := asError(t, res[6].Err)
	if e.Index != 6 || e.Command != "NOPE" {
		t.Fatalf("unknown command error %+v", *e)
	}
	if strings.Contains(e.Error(), secretArg) {
		t.Errorf("error text %q contains the argument", e)
	}
	if st := srv.Stats(); st.Requests["/pipeline"] != 1 || st.TotalRequests != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIntegrationTransaction(t *testing.T) {
	srv, c := newServer(t)
	ctx := ctxT(t)
	t.Run("atomic", func(t *testing.T) {
		// Concurrent transactions never interleave: each sees its own pair.
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				v := fmt.Sprint(i)
				res, err := c.Transaction(ctx,
					upstash.Cmd("SET", "x", v), upstash.Cmd("SET", "y", v),
					upstash.Cmd("MGET", "x", "y"))
				if err != nil {
					errs <- err
					return
				}
				if got := res[2].Value.String(); got != fmt.Sprintf(`[%q, %q]`, v, v) {
					errs <- fmt.Errorf("transaction %d saw %s", i, got)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("run-time error does not stop it", func(t *testing.T) {
		res, err := c.Transaction(ctx, upstash.Cmd("SET", "s", "str"), upstash.Cmd("INCR", "s"), upstash.Cmd("SET", "after", "1"))
		if err != nil {
			t.Fatal(err)
		}
		if e := asError(t, res[1].Err); e.Index != 1 || e.Command != "INCR" {
			t.Fatalf("error %+v", *e)
		}
		if got, _ := c.Get(ctx, "after"); string(got) != "1" {
			t.Fatal("the command after the error did not run")
		}
	})
	t.Run("discarded", func(t *testing.T) {
		_, err := c.Transaction(ctx, upstash.Cmd("SET", "d", "1"), upstash.Cmd("LPUSH", "l"))
		wantErrIs(t, err, upstash.ErrTransactionDiscarded)
		if errors.Is(err, upstash.ErrOutcomeUnknown) {
			t.Fatalf("discarded transaction matches ErrOutcomeUnknown: %v", err)
		}
		if _, err := c.Get(ctx, "d"); !errors.Is(err, upstash.ErrNil) {
			t.Fatalf("a command of the discarded transaction ran: %v", err)
		}
		if st := srv.Stats(); st.Requests["/multi-exec"] < 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestIntegrationScripts(t *testing.T) {
	srv, c := newServer(t)
	ctx := ctxT(t)
	incrBy := upstash.NewScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
	run := func(want int64) {
		t.Helper()
		v, err := incrBy.Run(ctx, c, []string{"n"}, 2)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := v.Int64(); n != want {
			t.Fatalf("script returned %v, want %d", v, want)
		}
	}
	srv.ResetStats()
	run(2) // not cached yet: EVALSHA, NOSCRIPT, EVAL
	if st := srv.Stats(); st.Commands["EVAL"] != 1 || st.TotalRequests != 2 {
		t.Fatalf("first run: stats %+v", st)
	}
	srv.ResetStats()
	run(4) // cached by the EVAL: EVALSHA only
	if st := srv.Stats(); st.Commands["EVALSHA"] != 1 || st.Commands["EVAL"] != 0 || st.TotalRequests != 1 {
		t.Fatalf("cached run: stats %+v", st)
	}
	mustDo(t, c, "SCRIPT", "FLUSH")
	srv.ResetStats()
	run(6) // flushed: the fallback again
	if st := srv.Stats(); st.Commands["EVAL"] != 1 || st.TotalRequests != 2 {
		t.Fatalf("after SCRIPT FLUSH: stats %+v", st)
	}

	t.Run("pipeline", func(t *testing.T) {
		mustDo(t, c, "SCRIPT", "FLUSH")
		other := upstash.NewScript("return ARGV[1] .. '!'")
		srv.ResetStats()
		res, err := c.Pipeline(ctx,
			upstash.Cmd("SET", "p", "1"),
			incrBy.Cmd([]string{"p"}, 10),
			upstash.Cmd("GET", "p"),
			other.Cmd(nil, "hi"),
		)
		if err != nil {
			t.Fatal(err)
		}
		if text(t, res[1].Value) != "11" || text(t, res[3].Value) != "hi!" {
			t.Fatalf("results %v", res)
		}
		// The EVAL runs after the GET: the pipeline is not atomic and the
		// re-sent scripts come in a second request.
		if text(t, res[2].Value) != "1" {
			t.Fatalf("GET = %v", res[2].Value)
		}
		if st := srv.Stats(); st.Requests["/pipeline"] != 2 || st.Commands["EVAL"] != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("transaction", func(t *testing.T) {
		mustDo(t, c, "SCRIPT", "FLUSH")
		srv.ResetStats()
		res, err := c.Transaction(ctx, upstash.Cmd("SET", "t", "5"), incrBy.Cmd([]string{"t"}, 1))
		if err != nil || text(t, res[1].Value) != "6" {
			t.Fatalf("%v %v", res, err)
		}
		if st := srv.Stats(); st.Commands["EVALSHA"] != 0 || st.Commands["EVAL"] != 1 || st.TotalRequests != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("script error", func(t *testing.T) {
		bad := upstash.NewScript("return redis.call('INCR', KEYS[1])")
		mustDo(t, c, "SET", "str", "x")
		_, err := bad.Run(ctx, c, []string{"str"})
		e := asError(t, err)
		if e.IsNoScript() || !strings.Contains(e.Message, "not an integer") {
			t.Fatalf("error %+v", *e)
		}
	})
}

func TestIntegrationReadYourWrites(t *testing.T) {
	srv := upstashtest.NewServer(t)
	// Mount the server's handler behind one that records the tokens each
	// request carried and each response returned.
	var mu sync.Mutex
	var sent, received []string
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, r.Header.Get("Upstash-Sync-Token"))
		mu.Unlock()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		mu.Lock()
		received = append(received, rec.Header().Get("Upstash-Sync-Token"))
		mu.Unlock()
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	defer front.Close()
	c := clientOf(t, front.URL, srv.Token)
	ctx := ctxT(t)
	if tok := c.SyncToken(); tok != "" {
		t.Fatalf("initial token %q", tok)
	}
	if err := c.Set(ctx, "k", "1", 0); err != nil {
		t.Fatal(err)
	}
	t1 := c.SyncToken()
	if t1 == "" {
		t.Fatal("no token after SET")
	}
	if err := c.Set(ctx, "k", "2", 0); err != nil {
		t.Fatal(err)
	}
	t2 := c.SyncToken()
	if t2 == "" || t2 == t1 {
		t.Fatalf("token did not change after a second SET: %q then %q", t1, t2)
	}
	if _, err := c.Pipeline(ctx, upstash.Cmd("INCR", "n")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	// A failed request keeps the token.
	bad := clientOf(t, front.URL, "wrong")
	bad.SetSyncToken(c.SyncToken())
	if _, err := bad.Get(ctx, "k"); !errors.Is(err, upstash.ErrUnauthorized) {
		t.Fatal(err)
	}
	if bad.SyncToken() != c.SyncToken() {
		t.Fatal("a 401 changed the token")
	}
	// Handing the token over: the next request of another client carries it.
	other := clientOf(t, front.URL, srv.Token)
	other.SetSyncToken(c.SyncToken())
	if got, err := other.Get(ctx, "k"); err != nil || string(got) != "2" {
		t.Fatalf("GET on the other client: %q %v", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 6 || len(received) != 6 {
		t.Fatalf("%d requests", len(sent))
	}
	// Request N+1 carries the token of response N (not N+2).
	if sent[0] != "" {
		t.Errorf("first request carried %q", sent[0])
	}
	for i := 1; i < 4; i++ {
		if sent[i] != received[i-1] || sent[i] == "" {
			t.Errorf("request %d carried %q, want the token of response %d, %q", i+1, sent[i], i, received[i-1])
		}
	}
	if sent[4] != received[3] || sent[5] != received[3] {
		t.Errorf("handed-over token: sent %q and %q, want %q", sent[4], sent[5], received[3])
	}
}

func TestIntegrationAuth(t *testing.T) {
	srv, c := newServer(t)
	if err := c.Set(ctxT(t), "k", "v", 0); err != nil {
		t.Fatal(err)
	}
	t.Run("wrong token", func(t *testing.T) {
		bad := clientOf(t, srv.URL, secretToken)
		_, err := bad.Get(ctxT(t), "k")
		wantErrIs(t, err, upstash.ErrUnauthorized)
		if strings.Contains(err.Error(), secretToken) || strings.Contains(err.Error(), srv.Token) {
			t.Fatalf("error %q contains a token", err)
		}
		if want := "upstash: GET: HTTP 401 unauthorized"; !strings.HasPrefix(err.Error(), want) ||
			!strings.Contains(err.Error(), "the server refused the token in Config.Token; check that it is the current REST token of "+srv.URL) {
			t.Errorf("error %q does not say which token to check", err)
		}
		_, err = bad.Pipeline(ctxT(t), upstash.Cmd("GET", "k"))
		wantErrIs(t, err, upstash.ErrUnauthorized)
		_, err = bad.Transaction(ctxT(t), upstash.Cmd("GET", "k"))
		wantErrIs(t, err, upstash.ErrUnauthorized)
		if errors.Is(err, upstash.ErrTransactionDiscarded) {
			t.Fatal("401 matches ErrTransactionDiscarded")
		}
		if n := srv.Stats().TotalRequests; n != 4 {
			t.Fatalf("%d requests: a 401 must not be retried", n)
		}
	})
	t.Run("read-only token", func(t *testing.T) {
		ro := clientOf(t, srv.URL, srv.ReadOnlyToken)
		got, err := ro.Get(ctxT(t), "k")
		if err != nil || string(got) != "v" {
			t.Fatalf("GET with the read-only token: %q %v", got, err)
		}
		err = ro.Set(ctxT(t), "k", secretArg, 0)
		e := asError(t, err)
		if e.Code != "NOPERM" || e.Command != "SET" {
			t.Fatalf("SET with the read-only token: %+v", *e)
		}
		if strings.Contains(err.Error(), secretArg) {
			t.Fatalf("error %q contains the argument", err)
		}
		if errors.Is(err, upstash.ErrUnauthorized) {
			t.Fatalf("NOPERM matches ErrUnauthorized: %v", err)
		}
	})
}

// TestIntegrationFaults runs the retry rules against the server's fault
// injection.
func TestIntegrationFaults(t *testing.T) {
	srv, c := newServer(t)
	ctx := ctxT(t)
	counter := func() string {
		t.Helper()
		v, err := srv.Do("GET", "n")
		if err != nil {
			t.Fatal(err)
		}
		if v == nil {
			return ""
		}
		return string(v.([]byte))
	}
	start := func() {
		t.Helper()
		if err := srv.FlushAll(); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Do("SET", "k", "v"); err != nil {
			t.Fatal(err)
		}
		srv.ResetStats()
	}

	t.Run("DropResponseNext + INCR: outcome unknown, applied once", func(t *testing.T) {
		start()
		srv.DropResponseNext(1)
		_, err := c.Incr(ctx, "n")
		wantErrIs(t, err, upstash.ErrOutcomeUnknown)
		if got := counter(); got != "1" {
			t.Fatalf("counter %q, want 1", got)
		}
		if n := srv.Stats().TotalRequests; n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
	})
	t.Run("DropResponseNext + GET: retried", func(t *testing.T) {
		start()
		srv.DropResponseNext(1)
		got, err := c.Get(ctx, "k")
		if err != nil || string(got) != "v" {
			t.Fatalf("GET: %q %v", got, err)
		}
		if st := srv.Stats(); st.Requests["/"] != 2 || st.Commands["GET"] != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("DropResponseNext + Idempotent INCR: retried, applied twice", func(t *testing.T) {
		start()
		srv.DropResponseNext(1)
		if _, err := c.Run(ctx, upstash.Cmd("INCR", "n").Idempotent()); err != nil {
			t.Fatal(err)
		}
		if got := counter(); got != "2" {
			t.Fatalf("counter %q: Idempotent() is the caller's promise, so the client repeats", got)
		}
	})
	t.Run("ResetNext + INCR: outcome unknown, not applied", func(t *testing.T) {
		// The server reset the connection before running anything, but the
		// client had written the request and cannot tell.
		start()
		srv.ResetNext(1)
		_, err := c.Incr(ctx, "n")
		wantErrIs(t, err, upstash.ErrOutcomeUnknown)
		if got := counter(); got != "" {
			t.Fatalf("counter %q, want unset", got)
		}
		if n := srv.Stats().TotalRequests; n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
	})
	t.Run("ResetNext + GET: retried", func(t *testing.T) {
		start()
		srv.ResetNext(2)
		if got, err := c.Get(ctx, "k"); err != nil || string(got) != "v" {
			t.Fatalf("GET: %q %v", got, err)
		}
		if n := srv.Stats().TotalRequests; n != 3 {
			t.Fatalf("%d requests, want 3", n)
		}
	})
	t.Run("FailNext 503 + GET: retried", func(t *testing.T) {
		start()
		srv.FailNext(1, 503)
		if got, err := c.Get(ctx, "k"); err != nil || string(got) != "v" {
			t.Fatalf("GET: %q %v", got, err)
		}
		if st := srv.Stats(); st.TotalRequests != 2 || st.Commands["GET"] != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("FailNext 503 + INCR: not retried", func(t *testing.T) {
		start()
		srv.FailNext(1, 503)
		_, err := c.Incr(ctx, "n")
		wantErrIs(t, err, upstash.ErrOutcomeUnknown)
		if e := asError(t, err); e.Status != 503 {
			t.Fatalf("error %+v", *e)
		}
		if n := srv.Stats().TotalRequests; n != 1 {
			t.Fatalf("%d requests", n)
		}
	})
	t.Run("FailNext 400: never retried", func(t *testing.T) {
		start()
		srv.FailNext(1, 400)
		_, err := c.Get(ctx, "k")
		if e := asError(t, err); e.Status != 400 {
			t.Fatalf("error %+v", *e)
		}
		if n := srv.Stats().TotalRequests; n != 1 {
			t.Fatalf("%d requests", n)
		}
	})
	t.Run("faults on a pipeline of reads", func(t *testing.T) {
		start()
		srv.FailNext(1, 500)
		srv.DropResponseNext(1)
		srv.ResetNext(1)
		res, err := c.Pipeline(ctx, upstash.Cmd("GET", "k"), upstash.Cmd("EXISTS", "k"))
		if err != nil || text(t, res[0].Value) != "v" {
			t.Fatalf("%v %v", res, err)
		}
		if st := srv.Stats(); st.Requests["/pipeline"] != 4 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("faults on a transaction with a write", func(t *testing.T) {
		start()
		srv.DropResponseNext(1)
		_, err := c.Transaction(ctx, upstash.Cmd("INCR", "n"), upstash.Cmd("GET", "n"))
		wantErrIs(t, err, upstash.ErrOutcomeUnknown)
		if errors.Is(err, upstash.ErrTransactionDiscarded) {
			t.Fatal("matches ErrTransactionDiscarded")
		}
		if got := counter(); got != "1" {
			t.Fatalf("counter %q", got)
		}
	})
	t.Run("latency past the deadline", func(t *testing.T) {
		start()
		srv.SetLatency(300 * time.Millisecond)
		defer srv.SetLatency(0)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Get(ctx, "k")
		wantErrIs(t, err, context.DeadlineExceeded)
	})
}

// TestIntegrationConcurrentClient shares one client between goroutines, as a
// Lambda handler does (run with -race).
// betweenAttempts is a transport that calls before(n) as the client starts
// its n-th attempt (from 1), so a test can act between attempts.
type betweenAttempts struct {
	rt     http.RoundTripper
	mu     sync.Mutex
	n      int
	before func(n int)
}

func (b *betweenAttempts) RoundTrip(req *http.Request) (*http.Response, error) {
	b.mu.Lock()
	b.n++
	n, before := b.n, b.before
	b.mu.Unlock()
	if before != nil {
		before(n)
	}
	return b.rt.RoundTrip(req)
}

func (b *betweenAttempts) start(before func(n int)) {
	b.mu.Lock()
	b.n, b.before = 0, before
	b.mu.Unlock()
}

func (b *betweenAttempts) attempts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// TestIntegrationLateRepeatNeverUndoesANewerWrite: a plain SET, DEL or
// PEXPIRE whose reply was lost after it ran is not sent again, so it cannot
// land after another client's newer write and overwrite, delete or expire
// it. The other client writes as the first client would start its retry,
// or, when there is none, after the call. The reply is dropped on a fresh
// and on a pooled connection (where net/http could replay by itself).
// Idempotent() is the control: it is repeated, and the newer write is lost.
func TestIntegrationLateRepeatNeverUndoesANewerWrite(t *testing.T) {
	srv := upstashtest.NewServer(t)
	other := clientOf(t, srv.URL, srv.Token)
	cases := []struct {
		name    string
		counted string
		run     func(ctx context.Context, c *upstash.Client) error
		// newer is the other client's write; check tells whether it
		// survived.
		newer    func(ctx context.Context) error
		survived func(t *testing.T) bool
		repeated bool
	}{
		{"Set", "SET",
			func(ctx context.Context, c *upstash.Client) error { return c.Set(ctx, "k", "late", 0) },
			func(ctx context.Context) error { return other.Set(ctx, "k", "newer", 0) },
			func(t *testing.T) bool { return rawGet(t, srv, "k") == "newer" }, false},
		{"SET with options as []byte", "SET",
			func(ctx context.Context, c *upstash.Client) error {
				_, err := c.Do(ctx, "SET", "k", "late", []byte("PX"), 60000)
				return err
			},
			func(ctx context.Context) error { return other.Set(ctx, "k", "newer", 0) },
			func(t *testing.T) bool { return rawGet(t, srv, "k") == "newer" }, false},
		{"Del", "DEL",
			func(ctx context.Context, c *upstash.Client) error { _, err := c.Del(ctx, "k"); return err },
			func(ctx context.Context) error { return other.Set(ctx, "k", "newer", 0) },
			func(t *testing.T) bool { return rawGet(t, srv, "k") == "newer" }, false},
		{"PEXPIRE", "PEXPIRE",
			func(ctx context.Context, c *upstash.Client) error {
				_, err := c.Do(ctx, "PEXPIRE", "k", 1)
				return err
			},
			func(ctx context.Context) error { return other.Set(ctx, "k", "newer", 0) },
			func(t *testing.T) bool {
				ttl, err := other.PTTL(ctxT(t), "k")
				if err != nil {
					t.Fatal(err)
				}
				return ttl == -time.Millisecond && rawGet(t, srv, "k") == "newer"
			}, false},
		{"SET Idempotent() (control)", "SET",
			func(ctx context.Context, c *upstash.Client) error {
				_, err := c.Run(ctx, upstash.Cmd("SET", "k", "late").Idempotent())
				return err
			},
			func(ctx context.Context) error { return other.Set(ctx, "k", "newer", 0) },
			func(t *testing.T) bool { return rawGet(t, srv, "k") == "newer" }, true},
	}
	for _, pooled := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s pooled=%v", tc.name, pooled), func(t *testing.T) {
				ctx := ctxT(t)
				tr := http.DefaultTransport.(*http.Transport).Clone()
				tr.DisableKeepAlives = !pooled
				t.Cleanup(tr.CloseIdleConnections)
				hook := &betweenAttempts{rt: tr}
				c := clientOf(t, srv.URL, srv.Token, upstash.WithTransport(hook))
				if err := srv.FlushAll(); err != nil {
					t.Fatal(err)
				}
				if _, err := srv.Do("SET", "k", "first"); err != nil {
					t.Fatal(err)
				}
				if pooled {
					if err := c.Ping(ctx); err != nil {
						t.Fatal(err)
					}
				}
				wroteNewer := false
				hook.start(func(n int) {
					if n == 2 {
						if err := tc.newer(ctx); err != nil {
							t.Errorf("the other client's write: %v", err)
						}
						wroteNewer = true
					}
				})
				srv.ResetStats()
				srv.DropResponseNext(1)
				err := tc.run(ctx, c)
				if !wroteNewer {
					if err := tc.newer(ctx); err != nil {
						t.Fatal(err)
					}
				}
				ran := srv.Stats().Commands[tc.counted]
				if tc.counted == "SET" {
					ran-- // the other client's
				}
				if tc.repeated {
					if err != nil || ran != 2 {
						t.Fatalf("control: %v after %d runs; want success after 2", err, ran)
					}
					// On a pooled connection net/http replays it by itself,
					// before the test can write in between.
					if !pooled && (hook.attempts() != 2 || tc.survived(t)) {
						t.Fatal("control: the repeated write did not land after the newer one; the test cannot see a late repeat")
					}
					return
				}
				wantErrIs(t, err, upstash.ErrOutcomeUnknown)
				if n := hook.attempts(); n != 1 || ran != 1 {
					t.Errorf("%d attempts, %d runs at the server; want 1 and 1", n, ran)
				}
				if !tc.survived(t) {
					t.Errorf("the other client's newer write was undone by a late repeat of %s", tc.name)
				}
			})
		}
	}
}

// rawGet reads key straight from the server's Redis ("" if missing).
func rawGet(t *testing.T, srv *upstashtest.Server, key string) string {
	t.Helper()
	v, err := srv.Do("GET", key)
	if err != nil {
		t.Fatal(err)
	}
	if v == nil {
		return ""
	}
	return string(v.([]byte))
}

func TestIntegrationConcurrentClient(t *testing.T) {
	_, c := newServer(t)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if _, err := c.Incr(ctx, "n"); err != nil {
					t.Error(err)
					return
				}
				if _, err := c.Pipeline(ctx, upstash.Cmd("GET", "n"), upstash.Cmd("PTTL", "n")); err != nil {
					t.Error(err)
					return
				}
				_ = c.SyncToken()
			}
		}(i)
	}
	wg.Wait()
	v, err := c.Get(ctx, "n")
	if err != nil || string(v) != "320" {
		t.Fatalf("counter %q %v, want 320", v, err)
	}
}
