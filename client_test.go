package upstash_test

// Unit tests of the client against httpmock (a mock transport injected with
// upstash.WithTransport, never the global one): statuses, reply decoding,
// pipelines, transactions, scripts, headers, read-your-writes, argument
// encoding and limits. Retries live in retry_test-style sections further
// down, redaction at the end.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/internal/testtool"
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

func TestErrorText(t *testing.T) {
	e := &upstash.Error{Command: "SET", Index: 2, Status: 200, Code: "ERR", Message: "ERR syntax error"}
	if got, want := e.Error(), "upstash: command 2 SET: ERR syntax error"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &upstash.Error{Command: "GET", Index: -1, Status: 502}
	if got, want := e.Error(), "upstash: GET: HTTP 502 Bad Gateway"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// Redis quotes the first arguments of an unknown command; Error() must not.
	msg := "ERR unknown command 'FOO', with args beginning with: '" + secretArg + "' "
	e = &upstash.Error{Command: "FOO", Index: -1, Status: 400, Code: "ERR", Message: msg}
	if got, want := e.Error(), "upstash: FOO: ERR unknown command 'FOO'"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// Errors the client builds do not even keep them in Message, so %#v or
	// a JSON log of the struct shows none either.
	c, mt, rec := newMock(t)
	on(mt, "", rec.reply(400, `{"error":"`+msg+`"}`))
	_, err := c.Do(ctxT(t), "FOO", secretArg)
	if e := asError(t, err); e.Message != "ERR unknown command 'FOO'" || e.Code != "ERR" {
		t.Errorf("error %+v", *e)
	}
	if !(&upstash.Error{Code: "NOSCRIPT", Message: "NOSCRIPT No matching script. Please use EVAL."}).IsNoScript() {
		t.Error("IsNoScript false for NOSCRIPT")
	}
	if (&upstash.Error{Code: "ERR", Message: "ERR syntax error"}).IsNoScript() {
		t.Error("IsNoScript true for a syntax error")
	}
}

// ---- base64 ----

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

// ---- pipelines ----

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

// ---- transactions ----

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

// ---- scripts ----

const noscript = `{"error":"NOSCRIPT No matching script. Please use EVAL."}`

func TestScriptSHA1(t *testing.T) {
	for src, sha := range map[string]string{
		"": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
		"The quick brown fox jumps over the lazy dog": "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
	} {
		s := upstash.NewScript(src)
		if s.SHA1() != sha || s.Source() != src {
			t.Errorf("NewScript(%q): sha %s source %q", src, s.SHA1(), s.Source())
		}
		if s.Idempotent().SHA1() != sha {
			t.Errorf("Idempotent changed the SHA")
		}
	}
}

func TestScriptRunFallsBackToEval(t *testing.T) {
	const src = "return redis.call('GET', KEYS[1]) .. ARGV[1]"
	script := upstash.NewScript(src)
	for _, status := range []int{200, 400} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			c, mt, rec := newMock(t)
			on(mt, "", rec.sequence(canned{status: status, body: noscript}, canned{status: 200, body: `{"result":"dmFsdWUh"}`}))
			v, err := script.Run(ctxT(t), c, []string{"k"}, "!")
			if err != nil {
				t.Fatal(err)
			}
			if got := text(t, v); got != "value!" {
				t.Fatalf("got %q", got)
			}
			calls := rec.all()
			if len(calls) != 2 {
				t.Fatalf("%d calls", len(calls))
			}
			if got, want := calls[0].bodyArgs(t), []string{"EVALSHA", script.SHA1(), "1", "k", "!"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("first body %q, want %q", got, want)
			}
			if got, want := calls[1].bodyArgs(t), []string{"EVAL", src, "1", "k", "!"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("second body %q, want %q", got, want)
			}
		})
	}
	t.Run("other errors are not retried as EVAL", func(t *testing.T) {
		c, mt, rec := newMock(t)
		on(mt, "", rec.reply(400, `{"error":"ERR Error running script: boom"}`))
		_, err := script.Run(ctxT(t), c, []string{"k"}, "!")
		if e := asError(t, err); e.Command != "EVALSHA" {
			t.Fatalf("error %+v", *e)
		}
		if n := rec.count(); n != 1 {
			t.Fatalf("%d calls", n)
		}
	})
	t.Run("a script error that mentions noscript is not NOSCRIPT", func(t *testing.T) {
		// Only the NOSCRIPT code means "not cached": a script that ran and
		// failed with such a text must not run a second time as EVAL.
		c, mt, rec := newMock(t)
		on(mt, "", rec.reply(400, `{"error":"ERR user_script:1: noscript flag missing"}`))
		_, err := script.Run(ctxT(t), c, []string{"k"}, "!")
		if e := asError(t, err); e.IsNoScript() || e.Command != "EVALSHA" {
			t.Fatalf("error %+v", *e)
		}
		if n := rec.count(); n != 1 {
			t.Fatalf("%d calls, want 1 (no EVAL)", n)
		}
	})
	t.Run("plain EVALSHA has no fallback", func(t *testing.T) {
		c, mt, rec := newMock(t)
		on(mt, "", rec.reply(200, noscript))
		_, err := c.Do(ctxT(t), "EVALSHA", script.SHA1(), 0)
		if !asError(t, err).IsNoScript() {
			t.Fatalf("error %v", err)
		}
		if n := rec.count(); n != 1 {
			t.Fatalf("%d calls", n)
		}
	})
}

func TestScriptInPipelineFallsBackToEval(t *testing.T) {
	s1 := upstash.NewScript("return 1")
	s2 := upstash.NewScript("return 2")
	c, mt, rec := newMock(t)
	on(mt, "/pipeline", rec.sequence(
		canned{status: 200, body: `[{"result":"OK"},` + noscript + `,{"result":"eA=="},{"result":2},` + noscript + `]`},
		canned{status: 200, body: `[{"result":1},{"error":"ERR Error running script: oops"}]`},
	))
	res, err := c.Pipeline(ctxT(t),
		upstash.Cmd("SET", "k", "x"),
		s1.Cmd([]string{"k"}, "a"),
		upstash.Cmd("GET", "k"),
		s2.Cmd(nil),
		s1.Cmd(nil, "b"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if text(t, res[0].Value) != "OK" || text(t, res[1].Value) != "1" || text(t, res[2].Value) != "x" || text(t, res[3].Value) != "2" {
		t.Fatalf("results %+v", res)
	}
	if e := asError(t, res[4].Err); e.Index != 4 || e.Command != "EVAL" {
		t.Fatalf("error of the re-sent script: %+v", *e)
	}
	calls := rec.all()
	if len(calls) != 2 {
		t.Fatalf("%d calls", len(calls))
	}
	want := `[["EVAL","return 1","1","k","a"],["EVAL","return 1","0","b"]]`
	if string(calls[1].Body) != want {
		t.Fatalf("second body %s, want %s", calls[1].Body, want)
	}
}

func TestScriptInPipelineFallbackFailureKeepsOtherResults(t *testing.T) {
	s1 := upstash.NewScript("return 1")
	c, mt, rec := newMock(t, upstash.WithRetry(upstash.NoRetry))
	on(mt, "/pipeline", rec.sequence(
		canned{status: 200, body: `[{"result":"OK"},` + noscript + `,{"result":"eA=="}]`},
		canned{status: 401, body: `{"error":"WRONGPASS invalid or missing auth token"}`},
	))
	res, err := c.Pipeline(ctxT(t), upstash.Cmd("SET", "k", "x"), s1.Cmd(nil), upstash.Cmd("GET", "k"))
	if err != nil {
		t.Fatalf("Pipeline = %v; the first request's results should be kept", err)
	}
	if len(res) != 3 || text(t, res[0].Value) != "OK" || text(t, res[2].Value) != "x" {
		t.Fatalf("results %+v", res)
	}
	if !errors.Is(res[1].Err, upstash.ErrUnauthorized) || !strings.Contains(res[1].Err.Error(), "command 1") {
		t.Fatalf("script result error = %v; want the follow-up's ErrUnauthorized naming command 1", res[1].Err)
	}
	if n := rec.count(); n != 2 {
		t.Fatalf("%d calls", n)
	}
}

func TestScriptInTransactionIsSentAsEval(t *testing.T) {
	s := upstash.NewScript("return redis.call('INCR', KEYS[1])")
	c, mt, rec := newMock(t)
	on(mt, "/multi-exec", rec.reply(200, `[{"result":1},{"result":"T0s="}]`))
	res, err := c.Transaction(ctxT(t), s.Cmd([]string{"n"}), upstash.Cmd("GET", "k"))
	if err != nil {
		t.Fatal(err)
	}
	if text(t, res[0].Value) != "1" || text(t, res[1].Value) != "OK" {
		t.Fatalf("results %+v", res)
	}
	want := `[["EVAL","return redis.call('INCR', KEYS[1])","1","n"],["GET","k"]]`
	if calls := rec.all(); len(calls) != 1 || string(calls[0].Body) != want {
		t.Fatalf("calls %+v, want one with body %s", calls, want)
	}
}

// ---- headers ----

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

// ---- read-your-writes ----

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

// ---- request encoding ----

type jsonish struct{ A int }

func TestArgumentEncoding(t *testing.T) {
	c, mt, rec := newMock(t)
	on(mt, "", rec.reply(200, `{"result":"OK"}`))
	args := []any{
		"plain", "quote\" back\\slash", "ctl\x00\x01\x1f\n\r\t", "ünïcödé 🚀 \u2028", "",
		[]byte("bytes"), []byte{},
		0, -1, int8(-8), int16(16), int32(-32), int64(math.MinInt64), uint(1), uint8(255), uint16(16), uint32(32), uint64(math.MaxUint64),
		1.5, 0.1, -0.25, 1e21, 1e-7, float32(0.1), float32(3.25), 100.0,
		true, false, json.Number("12"), json.Number("-3.5e2"),
	}
	if _, err := c.Do(ctxT(t), "SET", args...); err != nil {
		t.Fatal(err)
	}
	body := rec.all()[0].Body
	if !json.Valid(body) {
		t.Fatalf("invalid JSON body %q", body)
	}
	var got []any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := []string{"SET",
		"plain", "quote\" back\\slash", "ctl\x00\x01\x1f\n\r\t", "ünïcödé 🚀 \u2028", "",
		"bytes", "",
		"0", "-1", "-8", "16", "-32", "-9223372036854775808", "1", "255", "16", "32", "18446744073709551615",
		"1.5", "0.1", "-0.25", "1000000000000000000000", "0.0000001", "0.1", "3.25", "100",
		"1", "0", "12", "-3.5e2",
	}
	if len(got) != len(want) {
		t.Fatalf("%d arguments, want %d: %s", len(got), len(want), body)
	}
	for i := range want {
		s, ok := got[i].(string)
		if !ok || s != want[i] {
			t.Errorf("argument %d = %#v, want the JSON string %q", i, got[i], want[i])
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	var nilBytes []byte
	tests := []struct {
		name string
		args []any
	}{
		{"invalid UTF-8 string", []any{"k", "ab\xffcd" + secretArg}},
		{"invalid UTF-8 bytes", []any{"k", []byte{'a', 0xc3, 0x28}}},
		{"truncated rune", []any{"k", "\xe2\x82"}},
		{"invalid UTF-8 key", []any{"\xff" + secretArg, "v"}},
		{"struct", []any{"k", jsonish{A: 1}}},
		{"map", []any{"k", map[string]string{"a": secretArg}}},
		{"slice of strings", []any{"k", []string{secretArg}}},
		{"nil", []any{"k", nil}},
		{"pointer", []any{"k", new(string)}},
		{"time.Duration", []any{"k", "v", "PX", time.Second}},
		{"time.Time", []any{"k", time.Now()}},
		{"NaN", []any{"k", math.NaN()}},
		{"+Inf", []any{"k", math.Inf(1)}},
		{"-Inf float32", []any{"k", float32(math.Inf(-1))}},
		{"error value", []any{"k", errors.New(secretArg)}},
	}
	_ = nilBytes
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, mt, _ := newMock(t)
			_, err := c.Do(ctxT(t), "SET", tc.args...)
			wantErrIs(t, err, upstash.ErrInvalidArgument)
			if strings.Contains(err.Error(), secretArg) {
				t.Fatalf("error %q contains the argument value", err)
			}
			_, err = c.Pipeline(ctxT(t), upstash.Cmd("GET", "a"), upstash.Cmd("SET", tc.args...))
			wantErrIs(t, err, upstash.ErrInvalidArgument)
			if !strings.Contains(err.Error(), "command 1 (SET)") {
				t.Errorf("pipeline error %q does not say which command", err)
			}
			_, err = c.Transaction(ctxT(t), upstash.Cmd("SET", tc.args...))
			wantErrIs(t, err, upstash.ErrInvalidArgument)
			if n := mt.GetTotalCallCount(); n != 0 {
				t.Fatalf("%d requests were made", n)
			}
		})
	}
	t.Run("bad command names", func(t *testing.T) {
		c, mt, _ := newMock(t)
		for _, cmd := range []upstash.Command{upstash.Cmd(""), {}} {
			if _, err := c.Run(ctxT(t), cmd); !errors.Is(err, upstash.ErrInvalidArgument) {
				t.Errorf("Run(%v): %v", cmd, err)
			}
		}
		if n := mt.GetTotalCallCount(); n != 0 {
			t.Fatalf("%d requests were made", n)
		}
	})
	t.Run("negative TTL", func(t *testing.T) {
		c, mt, _ := newMock(t)
		if err := c.Set(ctxT(t), "k", "v", -time.Second); !errors.Is(err, upstash.ErrInvalidArgument) {
			t.Errorf("Set: %v", err)
		}
		if _, err := c.SetNX(ctxT(t), "k", "v", -time.Second); !errors.Is(err, upstash.ErrInvalidArgument) {
			t.Errorf("SetNX: %v", err)
		}
		if n := mt.GetTotalCallCount(); n != 0 {
			t.Fatalf("%d requests were made", n)
		}
	})
}

// ---- limits ----

func TestRequestLimits(t *testing.T) {
	limits := upstash.Limits{MaxRequestBytes: 1000, MaxKeyBytes: 100}
	long := strings.Repeat("k", 101)
	okKey := strings.Repeat("k", 100)
	script := upstash.NewScript("return 1")
	tooLarge := []struct {
		name string
		run  func(c *upstash.Client) error
	}{
		{"body", func(c *upstash.Client) error {
			_, err := c.Do(context.Background(), "SET", "k", strings.Repeat("v", 1000))
			return err
		}},
		{"key", func(c *upstash.Client) error { _, err := c.Get(context.Background(), long); return err }},
		{"key as bytes", func(c *upstash.Client) error {
			_, err := c.Do(context.Background(), "GET", []byte(long))
			return err
		}},
		{"DEL second key", func(c *upstash.Client) error { _, err := c.Del(context.Background(), "a", long); return err }},
		{"EVAL key, int numkeys", func(c *upstash.Client) error {
			_, err := c.Do(context.Background(), "EVAL", "return 1", 2, "a", long, "arg")
			return err
		}},
		{"EVAL key, string numkeys", func(c *upstash.Client) error {
			_, err := c.Do(context.Background(), "eval", "return 1", "1", long)
			return err
		}},
		{"EVAL key, int64 numkeys", func(c *upstash.Client) error {
			_, err := c.Do(context.Background(), "EVAL", "return 1", int64(1), long)
			return err
		}},
		{"EVALSHA key, uint8 numkeys", func(c *upstash.Client) error {
			_, err := c.Do(context.Background(), "EVALSHA", script.SHA1(), uint8(1), long)
			return err
		}},
		{"script key", func(c *upstash.Client) error {
			_, err := script.Run(context.Background(), c, []string{"a", long})
			return err
		}},
		{"pipeline body", func(c *upstash.Client) error {
			cmds := make([]upstash.Command, 0, 100)
			for i := 0; i < 100; i++ {
				cmds = append(cmds, upstash.Cmd("SET", "k", "0123456789"))
			}
			_, err := c.Pipeline(context.Background(), cmds...)
			return err
		}},
		{"pipeline key", func(c *upstash.Client) error {
			_, err := c.Pipeline(context.Background(), upstash.Cmd("GET", "a"), upstash.Cmd("GET", long))
			return err
		}},
		{"transaction key", func(c *upstash.Client) error {
			_, err := c.Transaction(context.Background(), upstash.Cmd("SET", long, "v"))
			return err
		}},
	}
	for _, tc := range tooLarge {
		t.Run(tc.name, func(t *testing.T) {
			c, mt, _ := newMock(t, upstash.WithLimits(limits))
			wantErrIs(t, tc.run(c), upstash.ErrRequestTooLarge)
			if n := mt.GetTotalCallCount(); n != 0 {
				t.Fatalf("%d requests were made", n)
			}
		})
	}
	t.Run("at the limits", func(t *testing.T) {
		c, mt, rec := newMock(t, upstash.WithLimits(limits))
		on(mt, "", rec.reply(200, `{"result":"OK"}`))
		if _, err := c.Do(ctxT(t), "SET", okKey, "v"); err != nil {
			t.Fatal(err)
		}
		// A long value (not a key) is fine; so is a long script argument.
		if _, err := c.Do(ctxT(t), "SET", "k", long); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Do(ctxT(t), "EVAL", "return 1", 1, "k", long); err != nil {
			t.Fatal(err)
		}
		body := `["SET","k","` + strings.Repeat("v", 1000-len(`["SET","k",""]`)) + `"]`
		if len(body) != 1000 {
			t.Fatalf("test bug: %d", len(body))
		}
		if _, err := c.Do(ctxT(t), "SET", "k", strings.Repeat("v", 1000-len(`["SET","k",""]`))); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("zero limits disable the checks", func(t *testing.T) {
		c, mt, rec := newMock(t, upstash.WithLimits(upstash.Limits{}))
		on(mt, "", rec.reply(200, `{"result":"OK"}`))
		if _, err := c.Do(ctxT(t), "SET", strings.Repeat("k", 40<<10), "v"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("default limits", func(t *testing.T) {
		c, mt, _ := newMock(t)
		if _, err := c.Get(ctxT(t), strings.Repeat("k", 32*1024+1)); !errors.Is(err, upstash.ErrRequestTooLarge) {
			t.Fatalf("33 KB key: %v", err)
		}
		big := strings.Repeat("v", 10*1024*1024)
		if err := c.Set(ctxT(t), "k", big, 0); !errors.Is(err, upstash.ErrRequestTooLarge) {
			t.Fatalf("10 MB value: %v", err)
		}
		if n := mt.GetTotalCallCount(); n != 0 {
			t.Fatalf("%d requests were made", n)
		}
	})
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
			// and the command did run.
			if n := rec.count(); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
			if errors.Is(err, upstash.ErrOutcomeUnknown) {
				t.Fatalf("an oversized reply matches ErrOutcomeUnknown: %v", err)
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

// ---- typed helpers ----

func TestTypedHelpers(t *testing.T) {
	c, mt, rec := newMock(t)
	on(mt, "", rec.sequence(
		canned{status: 200, body: `{"result":"PONG"}`},
		canned{status: 200, body: `{"result":"OK"}`},
		canned{status: 200, body: `{"result":"dg=="}`},
		canned{status: 200, body: `{"result":null}`},
		canned{status: 200, body: `{"result":"OK"}`},
		canned{status: 200, body: `{"result":null}`},
		canned{status: 200, body: `{"result":7}`},
		canned{status: 200, body: `{"result":2}`},
		canned{status: 200, body: `{"result":1500}`},
		canned{status: 200, body: `{"result":"OK"}`},
	))
	ctx := ctxT(t)
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k", "v", 1500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if b, err := c.Get(ctx, "k"); err != nil || string(b) != "v" {
		t.Fatalf("Get: %q %v", b, err)
	}
	if _, err := c.Get(ctx, "missing"); !errors.Is(err, upstash.ErrNil) {
		t.Fatalf("Get missing: %v", err)
	}
	if ok, err := c.SetNX(ctx, "k", "v", time.Minute); !ok || err != nil {
		t.Fatalf("SetNX: %v %v", ok, err)
	}
	if ok, err := c.SetNX(ctx, "k", "v", 0); ok || err != nil {
		t.Fatalf("SetNX on existing key: %v %v", ok, err)
	}
	if n, err := c.Incr(ctx, "n"); n != 7 || err != nil {
		t.Fatalf("Incr: %d %v", n, err)
	}
	if n, err := c.Del(ctx, "a", "b"); n != 2 || err != nil {
		t.Fatalf("Del: %d %v", n, err)
	}
	if d, err := c.PTTL(ctx, "k"); d != 1500*time.Millisecond || err != nil {
		t.Fatalf("PTTL: %v %v", d, err)
	}
	if err := c.Set(ctx, "k", 12, 0); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"PING"},
		{"SET", "k", "v", "PX", "2"},
		{"GET", "k"},
		{"GET", "missing"},
		{"SET", "k", "v", "PX", "60000", "NX"},
		{"SET", "k", "v", "NX"},
		{"INCR", "n"},
		{"DEL", "a", "b"},
		{"PTTL", "k"},
		{"SET", "k", "12"},
	}
	calls := rec.all()
	for i := range want {
		if got := calls[i].bodyArgs(t); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("request %d = %q, want %q", i+1, got, want[i])
		}
	}
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

// ---- retries ----

func TestRetryRules(t *testing.T) {
	releaseScript := upstash.NewScript("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
	commands := []struct {
		name string
		safe bool
		run  func(ctx context.Context, c *upstash.Client) error
	}{
		{"GET", true, func(ctx context.Context, c *upstash.Client) error { _, err := c.Do(ctx, "GET", "k"); return err }},
		{"SET", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "SET", "k", "v", "PX", 100)
			return err
		}},
		{"PEXPIRE", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "PEXPIRE", "k", 100)
			return err
		}},
		{"INCR Idempotent()", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Run(ctx, upstash.Cmd("INCR", "k").Idempotent())
			return err
		}},
		{"idempotent script", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := releaseScript.Idempotent().Run(ctx, c, []string{"k"}, "tok")
			return err
		}},
		{"pipeline of reads", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Pipeline(ctx, upstash.Cmd("GET", "a"), upstash.Cmd("PTTL", "a"))
			return err
		}},
		{"INCR", false, func(ctx context.Context, c *upstash.Client) error { _, err := c.Incr(ctx, "k"); return err }},
		{"SET NX", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.SetNX(ctx, "k", "v", time.Second)
			return err
		}},
		{"SET XX", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "set", "k", "v", "xx")
			return err
		}},
		{"SET GET", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "SET", "k", "v", "GET")
			return err
		}},
		{"RPUSH", false, func(ctx context.Context, c *upstash.Client) error { _, err := c.Do(ctx, "RPUSH", "l", "x"); return err }},
		{"PEXPIRE NX", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "PEXPIRE", "k", 100, "NX")
			return err
		}},
		{"script", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := releaseScript.Run(ctx, c, []string{"k"}, "tok")
			return err
		}},
		{"pipeline with a write", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Pipeline(ctx, upstash.Cmd("GET", "a"), upstash.Cmd("INCR", "a"))
			return err
		}},
		{"transaction", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Transaction(ctx, upstash.Cmd("GET", "a"), upstash.Cmd("INCR", "a"))
			return err
		}},
	}
	success := func(pipeline bool) step {
		if pipeline {
			return pipeOK
		}
		return okStep
	}
	for _, cmd := range commands {
		batch := strings.HasPrefix(cmd.name, "pipeline") || cmd.name == "transaction"
		ok := success(batch)
		t.Run(cmd.name, func(t *testing.T) {
			t.Run("refused before sending: always retried", func(t *testing.T) {
				c, ft := newFaultClient(t, fastRetry, step{fault: refuse}, step{fault: refuse}, ok)
				if err := cmd.run(ctxT(t), c); err != nil {
					t.Fatalf("error %v", err)
				}
				if n := ft.attempts(); n != 3 {
					t.Fatalf("%d attempts, want 3", n)
				}
			})
			t.Run("dial error from an untraced transport: retried", func(t *testing.T) {
				c, ft := newFaultClient(t, fastRetry, step{fault: refuseUntraced}, ok)
				if err := cmd.run(ctxT(t), c); err != nil {
					t.Fatalf("error %v", err)
				}
				if n := ft.attempts(); n != 2 {
					t.Fatalf("%d attempts, want 2", n)
				}
			})
			t.Run("refused every time", func(t *testing.T) {
				c, ft := newFaultClient(t, fastRetry, step{fault: refuse})
				err := cmd.run(ctxT(t), c)
				wantErrIs(t, err, syscall.ECONNREFUSED)
				if errors.Is(err, upstash.ErrOutcomeUnknown) {
					t.Fatalf("a request that never left matches ErrOutcomeUnknown: %v", err)
				}
				if n := ft.attempts(); n != 1+fastRetry.MaxRetries {
					t.Fatalf("%d attempts", n)
				}
			})
			t.Run("reset after writing", func(t *testing.T) {
				c, ft := newFaultClient(t, fastRetry, step{fault: resetAfterWrite}, ok)
				err := cmd.run(ctxT(t), c)
				if cmd.safe {
					if err != nil || ft.attempts() != 2 {
						t.Fatalf("error %v after %d attempts; want success after 2", err, ft.attempts())
					}
					return
				}
				wantErrIs(t, err, upstash.ErrOutcomeUnknown, syscall.ECONNRESET)
				if n := ft.attempts(); n != 1 {
					t.Fatalf("%d attempts, want 1", n)
				}
			})
			t.Run("opaque transport error", func(t *testing.T) {
				// A transport that does not report through httptrace gives no
				// proof that nothing was sent.
				c, ft := newFaultClient(t, fastRetry, step{fault: opaqueError}, ok)
				err := cmd.run(ctxT(t), c)
				if cmd.safe {
					if err != nil || ft.attempts() != 2 {
						t.Fatalf("error %v after %d attempts; want success after 2", err, ft.attempts())
					}
					return
				}
				wantErrIs(t, err, upstash.ErrOutcomeUnknown)
				if n := ft.attempts(); n != 1 {
					t.Fatalf("%d attempts, want 1", n)
				}
			})
			for _, fail := range []step{html503, json500, {status: 502, body: ""}, {status: 429, body: `{"error":"ERR too many requests"}`}} {
				t.Run(fmt.Sprintf("HTTP %d", fail.status), func(t *testing.T) {
					c, ft := newFaultClient(t, fastRetry, fail, fail, ok)
					err := cmd.run(ctxT(t), c)
					if cmd.safe {
						if err != nil || ft.attempts() != 3 {
							t.Fatalf("error %v after %d attempts; want success after 3", err, ft.attempts())
						}
						return
					}
					if n := ft.attempts(); n != 1 {
						t.Fatalf("%d attempts, want 1", n)
					}
					if fail.status == 429 {
						// A 429 is a refusal: nothing ran.
						if errors.Is(err, upstash.ErrOutcomeUnknown) {
							t.Fatalf("429 matches ErrOutcomeUnknown: %v", err)
						}
						if e := asError(t, err); e.Status != 429 {
							t.Fatalf("error %+v", *e)
						}
						return
					}
					wantErrIs(t, err, upstash.ErrOutcomeUnknown)
				})
			}
			for _, code := range []int{400, 401, 403, 404, 405, 413, 501} {
				t.Run(fmt.Sprintf("HTTP %d never retried", code), func(t *testing.T) {
					c, ft := newFaultClient(t, fastRetry, status4x(code), ok)
					err := cmd.run(ctxT(t), c)
					if err == nil {
						t.Fatal("no error")
					}
					if n := ft.attempts(); n != 1 {
						t.Fatalf("%d attempts, want 1", n)
					}
					if code < 500 && errors.Is(err, upstash.ErrOutcomeUnknown) {
						t.Fatalf("a refusal matches ErrOutcomeUnknown: %v", err)
					}
					if code == 401 {
						wantErrIs(t, err, upstash.ErrUnauthorized)
					}
				})
			}
		})
	}
}

func TestRetriesGiveUpAfterMaxRetries(t *testing.T) {
	c, ft := newFaultClient(t, upstash.RetryPolicy{MaxRetries: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, html503)
	_, err := c.Do(ctxT(t), "GET", "k")
	wantErrIs(t, err, upstash.ErrProtocol)
	if !strings.Contains(err.Error(), "503") {
		t.Errorf("error %q does not give the last status", err)
	}
	if n := ft.attempts(); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	c, ft = newFaultClient(t, upstash.NoRetry, step{fault: refuse}, okStep)
	if _, err := c.Do(ctxT(t), "GET", "k"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("NoRetry: %v", err)
	}
	if n := ft.attempts(); n != 1 {
		t.Fatalf("NoRetry: %d attempts", n)
	}
}

func TestRetryBackoff(t *testing.T) {
	policy := upstash.RetryPolicy{MaxRetries: 4, MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	c, ft := newFaultClient(t, policy, html503)
	_, _ = c.Do(ctxT(t), "GET", "k")
	if len(ft.starts) != 5 {
		t.Fatalf("%d attempts", len(ft.starts))
	}
	// Waits are jittered to between half and all of 20, 40, 50, 50 ms.
	for i, full := range []time.Duration{20, 40, 50, 50} {
		full *= time.Millisecond
		gap := ft.starts[i+1].Sub(ft.starts[i])
		if gap < full/2 || gap > full+time.Second {
			t.Errorf("wait %d was %v, want between %v and about %v", i+1, gap, full/2, full)
		}
	}
}

func TestDeadlineBoundsRetries(t *testing.T) {
	t.Run("no attempt starts after the deadline", func(t *testing.T) {
		policy := upstash.RetryPolicy{MaxRetries: 1000, MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}
		c, ft := newFaultClient(t, policy, html503)
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		deadline, _ := ctx.Deadline()
		start := time.Now()
		_, err := c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.DeadlineExceeded)
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("took %v", el)
		}
		if n := ft.attempts(); n < 3 || n > 30 {
			t.Fatalf("%d attempts", n)
		}
		for i, s := range ft.starts {
			if !s.Before(deadline) {
				t.Errorf("attempt %d started %v after the deadline", i+1, s.Sub(deadline))
			}
		}
	})
	t.Run("a backoff that would end past the deadline is not waited", func(t *testing.T) {
		policy := upstash.RetryPolicy{MaxRetries: 3, MinBackoff: 10 * time.Second, MaxBackoff: 10 * time.Second}
		c, ft := newFaultClient(t, policy, html503)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.DeadlineExceeded, upstash.ErrProtocol)
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("returned after %v; it should give up at once", el)
		}
		if n := ft.attempts(); n != 1 {
			t.Fatalf("%d attempts", n)
		}
	})
	t.Run("WithTimeout bounds calls without a deadline", func(t *testing.T) {
		ft := &faultTransport{steps: []step{html503}}
		c, err := upstash.New(upstash.Config{URL: mockURL, Token: "t"}, upstash.WithTransport(ft),
			upstash.WithTimeout(100*time.Millisecond),
			upstash.WithRetry(upstash.RetryPolicy{MaxRetries: 1000, MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.Do(context.Background(), "GET", "k")
		wantErrIs(t, err, context.DeadlineExceeded)
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("took %v", el)
		}
	})
	t.Run("already expired", func(t *testing.T) {
		c, ft := newFaultClient(t, fastRetry, okStep)
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		_, err := c.Do(ctx, "INCR", "k")
		wantErrIs(t, err, context.DeadlineExceeded)
		if errors.Is(err, upstash.ErrOutcomeUnknown) {
			t.Fatalf("a request never sent matches ErrOutcomeUnknown: %v", err)
		}
		if n := len(ft.bodies); n != 0 {
			t.Fatalf("%d requests went out", n)
		}
	})
}

func TestCancellation(t *testing.T) {
	t.Run("during backoff", func(t *testing.T) {
		policy := upstash.RetryPolicy{MaxRetries: 5, MinBackoff: 5 * time.Second, MaxBackoff: 5 * time.Second}
		c, ft := newFaultClient(t, policy, html503)
		ctx, cancel := context.WithCancel(context.Background())
		ft.before = func(n int) {
			if n == 1 {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
		}
		start := time.Now()
		_, err := c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.Canceled)
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("cancellation took %v", el)
		}
		if n := ft.attempts(); n != 1 {
			t.Fatalf("%d attempts", n)
		}
	})
	t.Run("before the call", func(t *testing.T) {
		c, ft := newFaultClient(t, fastRetry, okStep)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.Canceled)
		if n := len(ft.bodies); n != 0 {
			t.Fatalf("%d requests went out", n)
		}
	})
}

// ---- real connections: resets, refused dials, stale pooled connections ----

func TestThawStalePooledConnection(t *testing.T) {
	t.Run("net/http replays a safe command by itself (retries off)", func(t *testing.T) {
		// With retries off only net/http's own replay can save the call: it
		// relies on the empty Idempotency-Key and on GetBody.
		s := newNetServer(t)
		c := netClient(t, s, upstash.NoRetry, nil)
		ctx := ctxT(t)
		if err := c.Set(ctx, "k", "v", 0); err != nil {
			t.Fatal(err)
		}
		if n := s.staleIdle(); n != 1 {
			t.Fatalf("%d connections, want the one pooled", n)
		}
		b, err := c.Get(ctx, "k")
		if err != nil {
			t.Fatalf("GET on a stale pooled connection: %v", err)
		}
		if string(b) != "v" {
			t.Fatalf("got %q", b)
		}
		handled, cmds := s.stats()
		if handled != 2 || cmds["GET"] != 1 {
			t.Fatalf("server handled %d requests (%v); want SET and one GET", handled, cmds)
		}
		// And an Idempotent() command.
		s.staleIdle()
		if _, err := c.Run(ctx, upstash.Cmd("INCR", "n").Idempotent()); err != nil {
			t.Fatalf("Idempotent INCR on a stale pooled connection: %v", err)
		}
		if got := s.value("n"); got != "1" {
			t.Fatalf("counter %q", got)
		}
	})
	t.Run("a command not safe to repeat is not replayed", func(t *testing.T) {
		s := newNetServer(t)
		c := netClient(t, s, fastRetry, nil)
		ctx := ctxT(t)
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		s.staleIdle()
		_, err := c.Incr(ctx, "n")
		// This server dropped the request unread, but the client cannot know
		// that: the request was written.
		wantErrIs(t, err, upstash.ErrOutcomeUnknown)
		if _, cmds := s.stats(); cmds["INCR"] != 0 {
			t.Fatalf("INCR ran %d times", cmds["INCR"])
		}
		// The next call uses a fresh connection.
		if n, err := c.Incr(ctx, "n"); err != nil || n != 1 {
			t.Fatalf("INCR after: %d %v", n, err)
		}
	})
	t.Run("default retry policy", func(t *testing.T) {
		s := newNetServer(t)
		c := netClient(t, s, upstash.DefaultRetryPolicy, nil)
		ctx := ctxT(t)
		if err := c.Set(ctx, "k", "v", 0); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			s.staleIdle()
			if _, err := c.Get(ctx, "k"); err != nil {
				t.Fatalf("GET %d: %v", i, err)
			}
		}
		if handled, _ := s.stats(); handled != 4 {
			t.Fatalf("server handled %d requests, want 4", handled)
		}
	})
	t.Run("server closed its idle connections", func(t *testing.T) {
		// The literal form: the server closes the idle connection (the client
		// may or may not have seen the FIN when it sends the next request).
		for i := 0; i < 20; i++ {
			s := newNetServer(t)
			c := netClient(t, s, upstash.NoRetry, nil)
			ctx := ctxT(t)
			if err := c.Set(ctx, "k", "v", 0); err != nil {
				t.Fatal(err)
			}
			s.CloseClientConnections()
			if _, err := c.Get(ctx, "k"); err != nil {
				t.Fatalf("round %d: GET after the server closed the idle connection: %v", i, err)
			}
			if handled, _ := s.stats(); handled != 2 {
				t.Fatalf("server handled %d requests", handled)
			}
		}
	})
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

// TestResetAfterWrite: the server ran the command and the connection broke
// before the reply.
func TestResetAfterWrite(t *testing.T) {
	tests := []struct {
		name    string
		run     func(ctx context.Context, c *upstash.Client) error
		retried bool
		key     string
		want    string // the key's value afterwards
	}{
		{"GET", func(ctx context.Context, c *upstash.Client) error { _, err := c.Get(ctx, "g"); return err }, true, "", ""},
		{"SET", func(ctx context.Context, c *upstash.Client) error { return c.Set(ctx, "s", "v", 0) }, true, "s", "v"},
		{"INCR Idempotent()", func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Run(ctx, upstash.Cmd("INCR", "i").Idempotent())
			return err
		}, true, "i", "2"},
		{"INCR", func(ctx context.Context, c *upstash.Client) error { _, err := c.Incr(ctx, "n"); return err }, false, "n", "1"},
		{"SET NX", func(ctx context.Context, c *upstash.Client) error {
			_, err := c.SetNX(ctx, "nx", "v", time.Second)
			return err
		}, false, "nx", "v"},
	}
	for _, tc := range tests {
		for _, warm := range []bool{false, true} {
			name := tc.name + map[bool]string{false: " on a fresh connection", true: " on a pooled connection"}[warm]
			t.Run(name, func(t *testing.T) {
				s := newNetServer(t)
				c := netClient(t, s, fastRetry, nil)
				ctx := ctxT(t)
				if warm {
					if err := c.Ping(ctx); err != nil {
						t.Fatal(err)
					}
				}
				before, _ := s.stats()
				s.setReset(1)
				err := tc.run(ctx, c)
				handled, _ := s.stats()
				handled -= before
				if tc.retried {
					if err != nil && !errors.Is(err, upstash.ErrNil) {
						t.Fatalf("error %v", err)
					}
					if handled != 2 {
						t.Fatalf("server handled %d requests, want 2", handled)
					}
				} else {
					wantErrIs(t, err, upstash.ErrOutcomeUnknown)
					var op *net.OpError
					if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) && !errors.As(err, &op) {
						t.Errorf("error %q does not match the underlying network error", err)
					}
					if handled != 1 {
						t.Fatalf("server handled %d requests, want 1", handled)
					}
					for _, leak := range []string{secretToken, "\"v\""} {
						if strings.Contains(err.Error(), leak) {
							t.Errorf("error %q contains %q", err, leak)
						}
					}
				}
				if tc.key != "" {
					if got := s.value(tc.key); got != tc.want {
						t.Fatalf("%s = %q, want %q", tc.key, got, tc.want)
					}
				}
			})
		}
	}
}

// TestRefusedDialIsRetried: a connection that could not be opened carried
// nothing, so even INCR is retried.
func TestRefusedDialIsRetried(t *testing.T) {
	s := newNetServer(t)
	// A port with nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	var dials atomic.Int32
	var d net.Dialer
	c := netClient(t, s, fastRetry, func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) <= 2 {
			return d.DialContext(ctx, network, closed)
		}
		return d.DialContext(ctx, network, addr)
	})
	n, err := c.Incr(ctxT(t), "n")
	if err != nil || n != 1 {
		t.Fatalf("INCR: %d %v", n, err)
	}
	if got := dials.Load(); got != 3 {
		t.Fatalf("%d dials, want 3", got)
	}
	if handled, _ := s.stats(); handled != 1 {
		t.Fatalf("server handled %d requests", handled)
	}
	// Refused every time: the error is the dial error, and not ErrOutcomeUnknown.
	dials.Store(-100)
	c2 := netClient(t, s, fastRetry, func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, closed)
	})
	_, err = c2.Incr(ctxT(t), "n")
	wantErrIs(t, err, syscall.ECONNREFUSED)
	if errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Fatalf("a refused dial matches ErrOutcomeUnknown: %v", err)
	}
}

// TestSlowServerDeadline: the deadline passes while the server is working.
func TestSlowServerDeadline(t *testing.T) {
	release := make(chan struct{})
	var handled atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, `{"result":1}`)
	}))
	defer srv.Close()
	defer close(release)
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: "t"}, upstash.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cmd       string
		ambiguous bool
	}{{"GET", false}, {"INCR", true}} {
		handled.Store(0)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		_, err := c.Do(ctx, tc.cmd, "k")
		cancel()
		wantErrIs(t, err, context.DeadlineExceeded)
		if errors.Is(err, upstash.ErrOutcomeUnknown) != tc.ambiguous {
			t.Errorf("%s: ErrOutcomeUnknown = %v, want %v: %v", tc.cmd, !tc.ambiguous, tc.ambiguous, err)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("%s took %v: %v", tc.cmd, el, err)
		}
		if n := handled.Load(); n != 1 {
			t.Errorf("%s: %d requests, want 1 (the deadline leaves no room for a retry)", tc.cmd, n)
		}
	}
}

// ---- redaction ----

// TestTokenNeverLeaks triggers every kind of failure with a distinctive token
// and argument and checks that neither appears in any error text, log line
// or printed configuration.
func TestTokenNeverLeaks(t *testing.T) {
	var logs testtool.SyncBuffer // both loggers write here
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	jsonLogger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var texts []string
	collect := func(err error) {
		if err != nil {
			texts = append(texts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
			logger.Error("call failed", "err", err)
			jsonLogger.Error("call failed", "err", err)
		}
	}
	ctx := ctxT(t)

	// HTTP-level failures, with retries on so the retry log lines appear.
	steps := []step{
		{status: 401, body: `{"error":"WRONGPASS invalid or missing auth token"}`},
		{status: 401, body: "Unauthorized"},
		{status: 400, body: `{"error":"ERR unknown command 'X', with args beginning with: '` + secretArg + `'"}`},
		{status: 400, body: "<html>bad request</html>"},
		{status: 413, body: ""},
		html503,
		json500,
		{fault: refuse},
		{fault: resetAfterWrite},
		{fault: opaqueError},
		{status: 200, body: `{"result":`},
		{status: 200, body: `{}`},
		{status: 200, body: `[1,2]`},
		{status: 200, body: `{"error":"ERR wrong number of arguments"}`},
	}
	for _, s := range steps {
		ft := &faultTransport{steps: []step{s}}
		c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken}, upstash.WithTransport(ft), upstash.WithRetry(fastRetry), upstash.WithLogger(logger))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Do(ctx, "GET", secretArg)
		collect(err)
		_, err = c.Do(ctx, "SET", secretArg, secretArg)
		collect(err)
		_, err = c.Pipeline(ctx, upstash.Cmd("GET", secretArg), upstash.Cmd("INCR", secretArg))
		collect(err)
		_, err = c.Transaction(ctx, upstash.Cmd("GET", secretArg))
		collect(err)
		_, err = upstash.NewScript("return 1").Run(ctx, c, []string{secretArg}, secretArg)
		collect(err)
	}
	// Network failures against a real server.
	s := newNetServer(t)
	c := netClient(t, s, fastRetry, nil)
	s.setReset(1)
	_, err := c.Incr(ctx, secretArg)
	collect(err)
	s.Close()
	_, err = c.Get(ctx, secretArg)
	collect(err)
	// Local refusals.
	cl, _, _ := newMock(t, upstash.WithLogger(logger), upstash.WithLimits(upstash.Limits{MaxRequestBytes: 10, MaxKeyBytes: 5}))
	for _, args := range [][]any{
		{secretArg, "v"},
		{"k", secretArg},
		{"k", "\xff" + secretArg},
		{"k", map[string]string{secretArg: secretArg}},
		{"k", math.NaN()},
	} {
		_, err := cl.Do(ctx, "SET", args...)
		collect(err)
	}
	// Bad configurations.
	for _, cfg := range []upstash.Config{
		{URL: "https://db.upstash.io", Token: secretToken + " "},
		{URL: "https://db.upstash.io", Token: "'" + secretToken + "'"},
		{URL: "https://db.upstash.io?token=" + secretToken, Token: secretToken},
		{URL: "https://x:" + secretToken + "@db.upstash.io", Token: secretToken},
		{URL: "http://db.upstash.io", Token: secretToken},
		{URL: "rediss://default:" + secretToken + "@db.upstash.io:6379", Token: secretToken},
		{URL: "https://db.upstash.io/\n" + secretToken, Token: "\n" + secretToken},
	} {
		_, err := upstash.New(cfg)
		collect(err)
	}
	_, err = upstash.ConfigFromEnv(upstash.FromMap(map[string]string{
		upstash.EnvURL:   "redis://:" + secretToken + "@x:6379",
		upstash.EnvToken: "\"" + secretToken + "\"",
	}))
	collect(err)

	// Printed configuration and client.
	cfg := upstash.Config{URL: "https://db.upstash.io", Token: secretToken}
	client, err := upstash.New(cfg, upstash.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%T"} {
		texts = append(texts, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, &cfg), fmt.Sprintf(verb, client))
	}
	logger.Info("config", "cfg", cfg, "client", client)
	jsonLogger.Info("config", "cfg", cfg)
	if b, err := json.Marshal(cfg); err != nil {
		t.Errorf("json.Marshal(Config): %v", err)
	} else {
		texts = append(texts, string(b))
	}

	texts = append(texts, logs.String())
	if !strings.Contains(logs.String(), "upstash: retrying") {
		t.Error("the debug log has no retry lines; the test does not cover them")
	}
	for _, txt := range texts {
		if strings.Contains(txt, secretToken) {
			t.Errorf("the token leaked: %s", txt)
		}
		if strings.Contains(txt, secretArg) {
			t.Errorf("an argument value leaked: %s", txt)
		}
	}
}
