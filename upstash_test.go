package upstash_test

// Unit tests of the Client (upstash.go) against httpmock, a mock transport
// injected with upstash.WithTransport (never the global one): replies of
// single commands, pipelines, transactions, base64, configuration.

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

func TestBase64ThroughClient(t *testing.T) {
	c, mt, rec := newMock(t)
	// GET of a key holding "\x00\xffOK\x80": bytes that JSON cannot carry raw.
	on(mt, "", rec.reply(200, `{"result":"AP9PS4A="}`))
	b, err := c.Get(ctxT(t), "bin")
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0, 0xff, 'O', 'K', 0x80}; !bytes.Equal(b, want) {
		t.Fatalf("got %q, want %q", b, want)
	}
	if got := rec.all()[0].Header.Get("Upstash-Encoding"); got != "base64" {
		t.Fatalf("Upstash-Encoding = %q, want base64", got)
	}
}

func TestBase64Off(t *testing.T) {
	c, mt, rec := newMock(t, upstash.WithBase64(false))
	on(mt, "", rec.sequence(
		canned{status: 200, body: `{"result":"YmFy"}`},
		canned{status: 200, body: `{"result":["T0s=","OK",null,7,["YmFy"]]}`},
	))
	v, err := c.Do(ctxT(t), "GET", "k")
	if err != nil {
		t.Fatal(err)
	}
	if got := text(t, v); got != "YmFy" {
		t.Fatalf("with base64 off got %q, want the raw string", got)
	}
	v, err = c.Do(ctxT(t), "LRANGE", "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.String(); got != `["T0s=", "OK", (nil), (integer) 7, ["YmFy"]]` {
		t.Fatalf("got %s", got)
	}
	for _, cl := range rec.all() {
		if _, ok := cl.Header["Upstash-Encoding"]; ok {
			t.Fatalf("Upstash-Encoding sent with base64 off: %v", cl.Header)
		}
	}
}

func TestPipeline(t *testing.T) {
	c, mt, rec := newMock(t)
	on(mt, "/pipeline", rec.reply(200,
		`[{"result":"OK"},{"result":"djE="},{"error":"ERR value is not an integer or out of range"},{"result":2},{"result":null},{"result":["YQ==",null,["Yg=="]]}]`))
	res, err := c.Pipeline(ctxT(t),
		upstash.Cmd("SET", "a", "v1"),
		upstash.Cmd("GET", "a"),
		upstash.Cmd("incr", "a"),
		upstash.Cmd("RPUSH", "l", "x", "y"),
		upstash.Cmd("GET", "missing"),
		upstash.Cmd("EVAL", "return {ARGV[1], false, {ARGV[2]}}", 0, "a", "b"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 6 {
		t.Fatalf("%d results", len(res))
	}
	if text(t, res[0].Value) != "OK" || text(t, res[1].Value) != "v1" || text(t, res[3].Value) != "2" || !res[4].Value.IsNil() {
		t.Fatalf("results %+v", res)
	}
	if got := res[5].Value.String(); got != `["a", (nil), ["b"]]` {
		t.Fatalf("nested result %s", got)
	}
	e := asError(t, res[2].Err)
	if e.Index != 2 || e.Command != "INCR" || e.Code != "ERR" || e.Status != 200 {
		t.Fatalf("per-command error %+v", *e)
	}
	if !strings.Contains(e.Error(), "command 2 INCR") {
		t.Fatalf("error text %q does not name index and command", e)
	}
	for i, r := range res {
		if i != 2 && r.Err != nil {
			t.Fatalf("result %d has error %v", i, r.Err)
		}
	}
	calls := rec.all()
	if len(calls) != 1 || calls[0].Path != "/pipeline" {
		t.Fatalf("calls %+v", calls)
	}
	want := `[["SET","a","v1"],["GET","a"],["incr","a"],["RPUSH","l","x","y"],["GET","missing"],["EVAL","return {ARGV[1], false, {ARGV[2]}}","0","a","b"]]`
	if string(calls[0].Body) != want {
		t.Fatalf("body\n%s\nwant\n%s", calls[0].Body, want)
	}
}

func TestPipelineProtocolErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   []error
		cmd    string // expected Command of an *Error, if any
	}{
		{"too few replies", 200, `[{"result":"OK"}]`, []error{upstash.ErrProtocol}, ""},
		{"too many replies", 200, `[{"result":"OK"},{"result":1},{"result":2}]`, []error{upstash.ErrProtocol}, ""},
		{"empty array", 200, `[]`, []error{upstash.ErrProtocol}, ""},
		{"not JSON", 200, `[{"result":"OK"},`, []error{upstash.ErrProtocol}, ""},
		{"element without result", 200, `[{"result":"OK"},{}]`, []error{upstash.ErrProtocol}, ""},
		{"element not an object", 200, `[{"result":"OK"},5]`, []error{upstash.ErrProtocol}, ""},
		{"error object", 200, `{"error":"ERR max daily request limit exceeded"}`, nil, "PIPELINE"},
		{"400 error object", 400, `{"error":"ERR failed to parse pipeline request"}`, nil, "PIPELINE"},
		{"401", 401, `{"error":"Unauthorized"}`, []error{upstash.ErrUnauthorized}, "PIPELINE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, mt, rec := newMock(t)
			on(mt, "/pipeline", rec.reply(tc.status, tc.body))
			res, err := c.Pipeline(ctxT(t), upstash.Cmd("SET", "a", "1"), upstash.Cmd("GET", "a"))
			if res != nil {
				t.Fatalf("results %v with error %v", res, err)
			}
			if err == nil {
				t.Fatal("no error")
			}
			wantErrIs(t, err, tc.want...)
			if tc.cmd != "" {
				if e := asError(t, err); e.Command != tc.cmd || e.Index != -1 {
					t.Fatalf("error %+v, want command %s", *e, tc.cmd)
				}
			}
			if errors.Is(err, upstash.ErrTransactionDiscarded) {
				t.Fatalf("a pipeline error matches ErrTransactionDiscarded: %v", err)
			}
		})
	}
}

func TestEmptyBatchesAreRefused(t *testing.T) {
	c, mt, _ := newMock(t)
	if _, err := c.Pipeline(ctxT(t)); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Fatalf("empty pipeline: %v", err)
	}
	if _, err := c.Transaction(ctxT(t)); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Fatalf("empty transaction: %v", err)
	}
	if n := mt.GetTotalCallCount(); n != 0 {
		t.Fatalf("%d requests", n)
	}
}

func TestTransaction(t *testing.T) {
	c, mt, rec := newMock(t)
	on(mt, "/multi-exec", rec.reply(200, `[{"result":"OK"},{"error":"WRONGTYPE Operation against a key holding the wrong kind of value"},{"result":1}]`))
	res, err := c.Transaction(ctxT(t), upstash.Cmd("SET", "a", "1"), upstash.Cmd("LPUSH", "a", "x"), upstash.Cmd("INCR", "n"))
	if err != nil {
		t.Fatal(err)
	}
	if text(t, res[0].Value) != "OK" || text(t, res[2].Value) != "1" {
		t.Fatalf("results %+v", res)
	}
	if e := asError(t, res[1].Err); e.Index != 1 || e.Command != "LPUSH" || e.Code != "WRONGTYPE" {
		t.Fatalf("error %+v", *e)
	}
	if errors.Is(res[1].Err, upstash.ErrTransactionDiscarded) {
		t.Fatal("a run-time error inside a transaction matches ErrTransactionDiscarded")
	}
	if p := rec.all()[0].Path; p != "/multi-exec" {
		t.Fatalf("path %q", p)
	}
}

func TestTransactionDiscarded(t *testing.T) {
	for _, status := range []int{200, 400} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			c, mt, rec := newMock(t)
			on(mt, "/multi-exec", rec.reply(status, `{"error":"ERR unknown command 'NOPE'"}`))
			res, err := c.Transaction(ctxT(t), upstash.Cmd("SET", "a", "1"), upstash.Cmd("NOPE"))
			if res != nil {
				t.Fatalf("results %v", res)
			}
			wantErrIs(t, err, upstash.ErrTransactionDiscarded)
			e := asError(t, err)
			if e.Command != "MULTI-EXEC" || e.Index != -1 || e.Code != "ERR" {
				t.Fatalf("error %+v", *e)
			}
			if errors.Is(err, upstash.ErrOutcomeUnknown) {
				t.Fatal("a discarded transaction matches ErrOutcomeUnknown")
			}
		})
	}
	t.Run("401 is not a discard", func(t *testing.T) {
		c, mt, rec := newMock(t)
		on(mt, "/multi-exec", rec.reply(401, `{"error":"Unauthorized"}`))
		_, err := c.Transaction(ctxT(t), upstash.Cmd("SET", "a", "1"))
		wantErrIs(t, err, upstash.ErrUnauthorized)
		if errors.Is(err, upstash.ErrTransactionDiscarded) {
			t.Fatal("401 matches ErrTransactionDiscarded")
		}
	})
	t.Run("5xx is not a discard", func(t *testing.T) {
		// The server failed while the transaction may have run: the outcome
		// is unknown, which contradicts "discarded, nothing ran".
		c, mt, rec := newMock(t)
		on(mt, "/multi-exec", rec.reply(500, `{"error":"ERR internal error"}`))
		_, err := c.Transaction(ctxT(t), upstash.Cmd("INCR", "a"))
		wantErrIs(t, err, upstash.ErrOutcomeUnknown)
		if errors.Is(err, upstash.ErrTransactionDiscarded) {
			t.Fatalf("a 500 on /multi-exec matches ErrTransactionDiscarded: %v", err)
		}
	})
}

func TestNewValidatesOptions(t *testing.T) {
	cfg := upstash.Config{URL: mockURL, Token: secretToken}
	for _, p := range []upstash.RetryPolicy{
		{MaxRetries: -1},
		{MaxRetries: 1, MinBackoff: -1},
		{MaxRetries: 1, MinBackoff: time.Second, MaxBackoff: time.Millisecond},
	} {
		if _, err := upstash.New(cfg, upstash.WithRetry(p)); !errors.Is(err, upstash.ErrConfig) {
			t.Errorf("WithRetry(%+v): %v", p, err)
		}
	}
	for _, bad := range []upstash.Config{
		{},
		{URL: mockURL},
		{Token: secretToken},
		{URL: "http://example.com", Token: secretToken},
		{URL: mockURL, Token: " " + secretToken},
		{URL: "https://user:" + secretToken + "@db.upstash.io", Token: secretToken},
	} {
		_, err := upstash.New(bad)
		wantErrIs(t, err, upstash.ErrConfig)
		if strings.Contains(err.Error(), secretToken) {
			t.Errorf("config error %q contains the token", err)
		}
	}
	if _, err := upstash.New(upstash.Config{URL: "http://example.com", Token: "t", AllowInsecureHTTP: true}); err != nil {
		t.Errorf("AllowInsecureHTTP: %v", err)
	}
	if _, err := upstash.New(upstash.Config{URL: mockURL + "/", Token: "t"}); err != nil {
		t.Errorf("trailing slash: %v", err)
	}
}

func TestTrailingSlashIsTrimmed(t *testing.T) {
	mt := httpmock.NewMockTransport()
	mt.RegisterNoResponder(httpmock.NewNotFoundResponder(t.Fatal))
	rec := &recorder{}
	on(mt, "/pipeline", rec.reply(200, `[{"result":"PONG"}]`))
	c, err := upstash.New(upstash.Config{URL: mockURL + "/", Token: "t"}, upstash.WithTransport(mt))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pipeline(ctxT(t), upstash.Cmd("PING")); err != nil {
		t.Fatal(err)
	}
}

// TestURLPathPrefix: a REST URL with a path is a prefix of every request's
// path, here upstashtest mounted under /v2 behind a proxy.
func TestURLPathPrefix(t *testing.T) {
	srv := upstashtest.NewServer(t)
	var mu sync.Mutex
	var paths []string
	mounted := http.StripPrefix("/v2", srv.Handler())
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		mounted.ServeHTTP(w, r)
	}))
	defer front.Close()
	for _, url := range []string{front.URL + "/v2", front.URL + "/v2/"} {
		mu.Lock()
		paths = nil
		mu.Unlock()
		if err := srv.FlushAll(); err != nil {
			t.Fatal(err)
		}
		c := clientOf(t, url, srv.Token)
		ctx := ctxT(t)
		if err := c.Set(ctx, "k", "v", 0); err != nil {
			t.Fatalf("%s: SET: %v", url, err)
		}
		res, err := c.Pipeline(ctx, upstash.Cmd("GET", "k"), upstash.Cmd("INCR", "n"))
		if err != nil || text(t, res[0].Value) != "v" {
			t.Fatalf("%s: pipeline: %v %v", url, res, err)
		}
		res, err = c.Transaction(ctx, upstash.Cmd("GET", "k"), upstash.Cmd("INCR", "n"))
		if err != nil || text(t, res[1].Value) != "2" {
			t.Fatalf("%s: transaction: %v %v", url, res, err)
		}
		mu.Lock()
		got := strings.Join(paths, " ")
		mu.Unlock()
		if want := "/v2 /v2/pipeline /v2/multi-exec"; got != want {
			t.Errorf("%s: paths %s, want %s", url, got, want)
		}
	}
	if st := srv.Stats(); st.Requests["/"] != 2 || st.Requests["/pipeline"] != 2 || st.Requests["/multi-exec"] != 2 {
		t.Fatalf("the server saw %+v", st.Requests)
	}
}
