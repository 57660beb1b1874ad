package upstash_test

// Tests of Script (script.go): the SHA-1, and the EVALSHA to EVAL fallback
// alone, in a pipeline and in a transaction.

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/chatstate/upstash"
)

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
