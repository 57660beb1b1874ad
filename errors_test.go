package upstash_test

// Tests of error texts (errors.go) and of redaction: no token or argument
// value in any error text, log line or printed configuration.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/internal/testtool"
)

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
	cl, _, _ := newMock(t, upstash.WithLogger(logger), upstash.WithLimits(upstash.Limits{MaxRequestBytes: 10}))
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
	_, err = upstash.ConfigFromEnv(upstash.EnvMap(map[string]string{
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

// TestErrorTextsNameTheCallOnce: every error starts with one "upstash: "
// and names the call once, however many layers built it, and still matches
// its sentinels.
func TestErrorTextsNameTheCallOnce(t *testing.T) {
	script := upstash.NewScript("return redis.call('INCR', KEYS[1])")
	faulty := func(t *testing.T, policy upstash.RetryPolicy, steps ...step) *upstash.Client {
		c, _ := newFaultClient(t, policy, steps...)
		return c
	}
	tests := []struct {
		name string
		call func(t *testing.T) error
		want string // the text, or its start when it ends with "…"
		is   []error
	}{
		{"script outcome unknown", func(t *testing.T) error {
			_, err := script.Run(ctxT(t), faulty(t, fastRetry, json500), []string{"k"})
			return err
		}, "upstash: EVALSHA: outcome unknown (the request may or may not have been applied): ERR internal error",
			[]error{upstash.ErrOutcomeUnknown}},
		{"reset after writing", func(t *testing.T) error {
			_, err := faulty(t, fastRetry, step{fault: resetAfterWrite}).Incr(ctxT(t), "k")
			return err
		}, "upstash: INCR: outcome unknown (the request may or may not have been applied): Post …",
			[]error{upstash.ErrOutcomeUnknown, syscall.ECONNRESET}},
		{"refused", func(t *testing.T) error {
			_, err := faulty(t, upstash.NoRetry, step{fault: refuse}).Get(ctxT(t), "k")
			return err
		}, "upstash: GET: Post …", []error{syscall.ECONNREFUSED}},
		{"HTML 503 after retries", func(t *testing.T) error {
			_, err := faulty(t, fastRetry, html503).Get(ctxT(t), "k")
			return err
		}, `upstash: GET: protocol error: HTTP 503 with a body that is not an Upstash error: "<html><body>Service Unavailable</body></html>"`,
			[]error{upstash.ErrProtocol}},
		{"expired context", func(t *testing.T) error {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			_, err := faulty(t, fastRetry, okStep).Get(ctx, "k")
			return err
		}, "upstash: GET: context deadline exceeded", []error{context.DeadlineExceeded}},
		{"result not an integer", func(t *testing.T) error {
			_, err := faulty(t, fastRetry, step{status: 200, body: `{"result":1.5}`}).Do(ctxT(t), "INCRBYFLOAT", "k", 1)
			return err
		}, "upstash: INCRBYFLOAT: outcome unknown (the request may or may not have been applied): protocol error: number 1.5 in reply is not a 64-bit integer",
			[]error{upstash.ErrProtocol, upstash.ErrOutcomeUnknown}},
		{"typed helper's reply of the wrong type", func(t *testing.T) error {
			_, err := faulty(t, fastRetry, step{status: 200, body: `{"result":"eA=="}`}).Incr(ctxT(t), "k")
			return err
		}, "upstash: INCR: outcome unknown (the request may or may not have been applied): protocol error: string reply is not an integer",
			[]error{upstash.ErrProtocol, upstash.ErrOutcomeUnknown}},
		{"typed read's reply of the wrong type", func(t *testing.T) error {
			_, err := faulty(t, fastRetry, step{status: 200, body: `{"result":7}`}).Get(ctxT(t), "k")
			return err
		}, "upstash: GET: protocol error: reply is integer, not string", []error{upstash.ErrProtocol}},
		{"redirect", func(t *testing.T) error {
			c, mt, _ := newMock(t)
			on(mt, "", func(req *http.Request) (*http.Response, error) {
				resp := httpmock.NewStringResponse(http.StatusTemporaryRedirect, "")
				resp.Header.Set("Location", "https://elsewhere.example:8443/x?_token="+secretToken)
				resp.Request = req
				return resp, nil
			})
			_, err := c.Do(ctxT(t), "SET", "k", "v", "NX")
			return err
		}, `upstash: SET: protocol error: HTTP 307 Temporary Redirect to host "elsewhere.example:8443": the client does not follow redirects (check the REST URL)`,
			[]error{upstash.ErrProtocol}},
		{"body not JSON", func(t *testing.T) error {
			_, err := faulty(t, fastRetry, step{status: 200, body: `<html>`}).Get(ctxT(t), "k")
			return err
		}, "upstash: GET: protocol error: body is not a JSON object: …", []error{upstash.ErrProtocol}},
		{"pipeline reply of the wrong length", func(t *testing.T) error {
			_, err := faulty(t, fastRetry, step{status: 200, body: `[{"result":1}]`}).Pipeline(ctxT(t), upstash.Cmd("GET", "a"), upstash.Cmd("GET", "b"))
			return err
		}, "upstash: PIPELINE: protocol error: 1 replies for 2 commands", []error{upstash.ErrProtocol}},
		{"pipeline element not decodable", func(t *testing.T) error {
			_, err := faulty(t, fastRetry, step{status: 200, body: `[{"result":1},{"result":{}}]`}).Pipeline(ctxT(t), upstash.Cmd("GET", "a"), upstash.Cmd("GET", "b"))
			return err
		}, "upstash: PIPELINE: command 1 (GET): protocol error: unexpected object in reply", []error{upstash.ErrProtocol}},
		{"response over the limit", func(t *testing.T) error {
			c, mt, rec := newMock(t, upstash.WithLimits(upstash.Limits{MaxResponseBytes: 10}))
			on(mt, "", rec.reply(200, `{"result":"`+strings.Repeat("QUFB", 10)+`"}`))
			_, err := c.Get(ctxT(t), "k")
			return err
		}, "upstash: GET: protocol error: response …", []error{upstash.ErrProtocol}},
		{"invalid argument", func(t *testing.T) error {
			c, _, _ := newMock(t)
			_, err := c.Do(ctxT(t), "SET", "k", "\xff")
			return err
		}, "upstash: SET: argument 2: invalid argument: not valid UTF-8 …", []error{upstash.ErrInvalidArgument}},
		{"invalid argument in a pipeline", func(t *testing.T) error {
			c, _, _ := newMock(t)
			_, err := c.Pipeline(ctxT(t), upstash.Cmd("GET", "a"), upstash.Cmd("SET", "k", nil))
			return err
		}, "upstash: PIPELINE: command 1 (SET): argument 2: invalid argument: nil value", []error{upstash.ErrInvalidArgument}},
		{"empty command name in a transaction", func(t *testing.T) error {
			c, _, _ := newMock(t)
			_, err := c.Transaction(ctxT(t), upstash.Cmd("GET", "a"), upstash.Cmd(""))
			return err
		}, "upstash: MULTI-EXEC: command 1: invalid argument: a command needs a non-empty name", []error{upstash.ErrInvalidArgument}},
		{"empty command name", func(t *testing.T) error {
			c, _, _ := newMock(t)
			_, err := c.Run(ctxT(t), upstash.Command{})
			return err
		}, "upstash: invalid argument: a command needs a non-empty name", []error{upstash.ErrInvalidArgument}},
		{"empty pipeline", func(t *testing.T) error {
			c, _, _ := newMock(t)
			_, err := c.Pipeline(ctxT(t))
			return err
		}, "upstash: PIPELINE: invalid argument: no commands", []error{upstash.ErrInvalidArgument}},
		{"negative TTL", func(t *testing.T) error {
			c, _, _ := newMock(t)
			return c.Set(ctxT(t), "k", "v", -time.Second)
		}, "upstash: SET: invalid argument: negative TTL -1s", []error{upstash.ErrInvalidArgument}},
		{"request over the limit", func(t *testing.T) error {
			c, _, _ := newMock(t, upstash.WithLimits(upstash.Limits{MaxRequestBytes: 10}))
			_, err := c.Do(ctxT(t), "SET", "k", "0123456789")
			return err
		}, "upstash: SET: request too large: the request of 24 bytes exceeds the 10-byte limit (Limits.MaxRequestBytes)",
			[]error{upstash.ErrRequestTooLarge}},
		{"transaction discarded", func(t *testing.T) error {
			c, mt, rec := newMock(t)
			on(mt, "/multi-exec", rec.reply(400, `{"error":"ERR unknown command 'NOPE'"}`))
			_, err := c.Transaction(ctxT(t), upstash.Cmd("NOPE"))
			return err
		}, "upstash: MULTI-EXEC: ERR unknown command 'NOPE'", []error{upstash.ErrTransactionDiscarded}},
		{"script re-sent after NOSCRIPT in a pipeline", func(t *testing.T) error {
			c, mt, rec := newMock(t)
			on(mt, "/pipeline", rec.sequence(
				canned{status: 200, body: `[` + noscript + `]`},
				canned{status: 500, body: `{"error":"ERR internal error"}`},
			))
			res, err := c.Pipeline(ctxT(t), script.Cmd([]string{"k"}))
			if err != nil {
				t.Fatal(err)
			}
			return res[0].Err
		}, "upstash: PIPELINE: command 0 (EVALSHA): re-sending the script as EVAL after NOSCRIPT: outcome unknown (the request may or may not have been applied): ERR internal error",
			[]error{upstash.ErrOutcomeUnknown}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(t)
			if err == nil {
				t.Fatal("no error")
			}
			got := err.Error()
			if prefix, ok := strings.CutSuffix(tc.want, "…"); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("error text\n%s\ndoes not start with\n%s", got, prefix)
				}
			} else if got != tc.want {
				t.Errorf("error text\n%s\nwant\n%s", got, tc.want)
			}
			if n := strings.Count(got, "upstash:"); n != 1 {
				t.Errorf("error text %q has %d \"upstash:\" prefixes, want 1", got, n)
			}
			wantErrIs(t, err, tc.is...)
		})
	}
}

// TestUnauthorizedNamesTheToken: a 401 says where the refused token came
// from and which database refused it, never the token itself.
func TestUnauthorizedNamesTheToken(t *testing.T) {
	const wrongpass = `{"error":"WRONGPASS invalid or missing auth token"}`
	check := func(t *testing.T, cfg upstash.Config, want string) {
		t.Helper()
		mt := httpmock.NewMockTransport()
		mt.RegisterNoResponder(httpmock.NewStringResponder(http.StatusUnauthorized, wrongpass))
		c, err := upstash.New(cfg, upstash.WithTransport(mt))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Ping(ctxT(t))
		wantErrIs(t, err, upstash.ErrUnauthorized)
		if got := err.Error(); got != want {
			t.Errorf("error text\n%s\nwant\n%s", got, want)
		}
		if strings.Contains(err.Error(), cfg.Token) {
			t.Errorf("error %q contains the token", err)
		}
	}
	t.Run("Config built by hand", func(t *testing.T) {
		check(t, upstash.Config{URL: mockURL, Token: secretToken},
			"upstash: PING: HTTP 401 unauthorized (WRONGPASS invalid or missing auth token): "+
				"the server refused the token in Config.Token; check that it is the current REST token of "+mockURL)
	})
	for _, tc := range []struct {
		env  map[string]string
		opts []upstash.EnvOption
		from string
	}{
		{map[string]string{upstash.EnvURL: mockURL + "/", upstash.EnvToken: secretToken}, nil, upstash.EnvToken},
		{map[string]string{upstash.EnvVercelURL: mockURL, upstash.EnvVercelToken: secretToken}, nil, upstash.EnvVercelToken},
		{map[string]string{"p_" + upstash.EnvVercelURL: mockURL, "p_" + upstash.EnvVercelReadOnlyToken: secretToken},
			[]upstash.EnvOption{upstash.EnvPrefix("p_"), upstash.EnvReadOnly()}, "p_" + upstash.EnvVercelReadOnlyToken},
	} {
		t.Run(tc.from, func(t *testing.T) {
			cfg, err := upstash.ConfigFromEnv(append(tc.opts, upstash.EnvMap(tc.env))...)
			if err != nil {
				t.Fatal(err)
			}
			check(t, cfg, "upstash: PING: HTTP 401 unauthorized (WRONGPASS invalid or missing auth token): "+
				"the server refused the token from "+tc.from+"; check that it is the current REST token of "+mockURL)
		})
	}
	t.Run("a 401 without a message", func(t *testing.T) {
		c, mt, rec := newMock(t)
		on(mt, "/pipeline", rec.reply(401, "Unauthorized"))
		_, err := c.Pipeline(ctxT(t), upstash.Cmd("GET", "k"))
		wantErrIs(t, err, upstash.ErrUnauthorized)
		want := "upstash: PIPELINE: HTTP 401 unauthorized: the server refused the token in Config.Token; check that it is the current REST token of " + mockURL
		if got := err.Error(); got != want {
			t.Errorf("error text\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("an Error built by hand", func(t *testing.T) {
		e := &upstash.Error{Command: "GET", Index: -1, Status: 401, Message: "WRONGPASS x"}
		if got, want := e.Error(), "upstash: GET: HTTP 401 unauthorized (WRONGPASS x)"; got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
		if !errors.Is(e, upstash.ErrUnauthorized) {
			t.Error("a 401 does not match ErrUnauthorized")
		}
	})
}

// TestLogLines: WithLogger's doc promises debug lines for retries and for
// scripts re-sent as EVAL, and nothing else.
func TestLogLines(t *testing.T) {
	logs := &logRecorder{}
	mt := httpmock.NewMockTransport()
	rec := &recorder{}
	on(mt, "", rec.sequence(
		canned{status: 503, body: `{"error":"ERR busy"}`},
		canned{status: 200, body: `{"result":"eA=="}`},
		canned{status: 200, body: noscript},
		canned{status: 200, body: `{"result":1}`},
	))
	on(mt, "/pipeline", rec.sequence(
		canned{status: 200, body: `[` + noscript + `]`},
		canned{status: 200, body: `[{"result":1}]`},
	))
	c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken}, upstash.WithTransport(mt),
		upstash.WithRetry(fastRetry), upstash.WithLogger(slog.New(logs)))
	if err != nil {
		t.Fatal(err)
	}
	script := upstash.NewScript("return 1")
	if _, err := c.Get(ctxT(t), "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := script.Run(ctxT(t), c, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pipeline(ctxT(t), script.Cmd(nil)); err != nil {
		t.Fatal(err)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	var got []string
	for _, r := range logs.records {
		if r.Level != slog.LevelDebug {
			t.Errorf("%q logged at %v, want debug", r.Message, r.Level)
		}
		got = append(got, r.Message)
	}
	want := "upstash: retrying|upstash: script not cached, sending EVAL|upstash: scripts not cached, sending EVAL"
	if strings.Join(got, "|") != want {
		t.Errorf("log lines %q, want %q", got, want)
	}
}
