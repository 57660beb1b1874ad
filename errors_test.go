package upstash_test

// Tests of error texts (errors.go) and of redaction: no token or argument
// value in any error text, log line or printed configuration.

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"

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
