package upstash_test

// Tests of the codec (codec.go): reply decoding with its base64 rules,
// argument encoding, and the request size check.

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

func TestDecodeReply(t *testing.T) {
	tests := []struct {
		name string
		body string
		b64  bool
		want string // Value.String(), or "" when an error is expected
		err  error  // sentinel the error matches
	}{
		// Base64 on: the status OK stays raw at every depth.
		{"top-level OK raw", `{"result":"OK"}`, true, `"OK"`, nil},
		{"OK at depth 1", `{"result":["OK","T0s="]}`, true, `["OK", "OK"]`, nil},
		{"OK at depth 2", `{"result":[["OK"],[["OK"]]]}`, true, `[["OK"], [["OK"]]]`, nil},
		{"bulk OK is T0s=", `{"result":"T0s="}`, true, `"OK"`, nil},
		{"OA is the byte 8", `{"result":"OA"}`, true, `"8"`, nil},
		{"padded one byte", `{"result":"YQ=="}`, true, `"a"`, nil},
		{"unpadded one byte", `{"result":"YQ"}`, true, `"a"`, nil},
		{"padded two bytes", `{"result":"YWI="}`, true, `"ab"`, nil},
		{"unpadded two bytes", `{"result":"YWI"}`, true, `"ab"`, nil},
		{"no padding needed", `{"result":"YmFy"}`, true, `"bar"`, nil},
		{"empty string", `{"result":""}`, true, `""`, nil},
		{"PONG", `{"result":"UE9ORw=="}`, true, `"PONG"`, nil},
		{"NUL bytes", `{"result":"AGEAAA=="}`, true, `"\x00a\x00\x00"`, nil},
		{"invalid UTF-8 decoded exactly", `{"result":"/wDDKICA"}`, true, `"\xff\x00\xc3(\x80\x80"`, nil},
		{"unicode", `{"result":"w7zwn5qA"}`, true, `"ü🚀"`, nil},
		{"invalid base64 kept raw", `{"result":"not base64!"}`, true, `"not base64!"`, nil},
		{"single character kept raw", `{"result":"Y"}`, true, `"Y"`, nil},
		{"bad padding kept raw", `{"result":"YQ="}`, true, `"YQ="`, nil},
		{"non-canonical bits kept raw", `{"result":"YR=="}`, true, `"YR=="`, nil},
		{"URL alphabet kept raw", `{"result":"-_-_"}`, true, `"-_-_"`, nil},
		// Go's decoder skips CR and LF even in strict mode, as atob (the
		// official client's decoder) skips whitespace.
		{"embedded newline skipped", `{"result":"YW\nJj"}`, true, `"abc"`, nil},
		{"integers untouched", `{"result":[1,-2,0,9223372036854775807,-9223372036854775808]}`, true,
			`[(integer) 1, (integer) -2, (integer) 0, (integer) 9223372036854775807, (integer) -9223372036854775808]`, nil},
		{"numeric string decoded", `{"result":"MTAxNjAwMDAwMDAwMTUwMDgxNDY3"}`, true, `"101600000000150081467"`, nil},
		{"nil", `{"result":null}`, true, `(nil)`, nil},
		{"nil in arrays", `{"result":[null,"YQ==",[null,1]]}`, true, `[(nil), "a", [(nil), (integer) 1]]`, nil},
		{"empty array", `{"result":[]}`, true, `[]`, nil},
		{"SCAN shape", `{"result":["MA==",["a2V5MQ==","a2V5Mg=="]]}`, true, `["0", ["key1", "key2"]]`, nil},
		{"booleans", `{"result":[true,false]}`, true, `[(integer) 1, (integer) 0]`, nil},
		{"extra fields ignored", `{"result":"YmFy","other":{"x":[1]}}`, true, `"bar"`, nil},
		{"whitespace around", " \n{ \"result\" : 1 }\n ", true, `(integer) 1`, nil},
		// Base64 off: strings raw.
		{"raw string", `{"result":"YmFy"}`, false, `"YmFy"`, nil},
		{"raw OK", `{"result":"OK"}`, false, `"OK"`, nil},
		{"raw escapes", `{"result":"a\u0000b\n\u00e9\ud83d\ude80"}`, false, `"a\x00b\né🚀"`, nil},
		{"raw replacement character", `{"result":"a\ufffdb"}`, false, `"a�b"`, nil},
		{"raw nested", `{"result":["T0s=",["OK"],null,3]}`, false, `["T0s=", ["OK"], (nil), (integer) 3]`, nil},
		// Protocol errors.
		{"missing result", `{}`, true, "", upstash.ErrProtocol},
		{"null body", `null`, true, "", upstash.ErrProtocol},
		{"empty body", ``, true, "", upstash.ErrProtocol},
		{"array body", `[{"result":1}]`, true, "", upstash.ErrProtocol},
		{"string body", `"OK"`, true, "", upstash.ErrProtocol},
		{"truncated", `{"result":["YQ==",`, true, "", upstash.ErrProtocol},
		{"trailing data", `{"result":1}x`, true, "", upstash.ErrProtocol},
		{"two objects", `{"result":1}{"result":2}`, true, "", upstash.ErrProtocol},
		{"float", `{"result":1.5}`, true, "", upstash.ErrProtocol},
		{"exponent", `{"result":1e3}`, true, "", upstash.ErrProtocol},
		{"integer overflow", `{"result":9223372036854775808}`, true, "", upstash.ErrProtocol},
		{"negative integer overflow", `{"result":-9223372036854775809}`, true, "", upstash.ErrProtocol},
		{"twenty digits", `{"result":[12345678901234567890]}`, true, "", upstash.ErrProtocol},
		{"negative zero", `{"result":-0}`, true, `(integer) 0`, nil},
		{"negative exponent", `{"result":[1,-1E-2]}`, true, "", upstash.ErrProtocol},
		{"object result", `{"result":{"a":1}}`, true, "", upstash.ErrProtocol},
		{"object in array", `{"result":[1,{"a":1}]}`, true, "", upstash.ErrProtocol},
		{"error not a string", `{"error":["x"]}`, true, "", upstash.ErrProtocol},
		{"invalid UTF-8 in JSON", "{\"result\":\"\xff\"}", false, `"�"`, nil},
		{"too deep", `{"result":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`, true, "", upstash.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := upstash.DecodeReply([]byte(tc.body), tc.b64)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %v, %v; want an error matching %v", v, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if got := v.String(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDecodeReplyDepth(t *testing.T) {
	// 64 levels of nesting are fine, 65 are not.
	ok := `{"result":` + strings.Repeat("[", 64) + `"YQ=="` + strings.Repeat("]", 64) + `}`
	if _, err := upstash.DecodeReply([]byte(ok), true); err != nil {
		t.Fatalf("64 levels: %v", err)
	}
	deep := `{"result":` + strings.Repeat("[", 65) + `"YQ=="` + strings.Repeat("]", 65) + `}`
	if _, err := upstash.DecodeReply([]byte(deep), true); !errors.Is(err, upstash.ErrProtocol) {
		t.Fatalf("65 levels: %v", err)
	}
	// Far deeper than encoding/json allows: an error, never a stack overflow.
	abyss := `{"result":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`
	if _, err := upstash.DecodeReply([]byte(abyss), true); !errors.Is(err, upstash.ErrProtocol) {
		t.Fatalf("100000 levels: %v", err)
	}
}

func TestDecodeReplyError(t *testing.T) {
	for _, body := range []string{
		`{"error":"WRONGTYPE Operation against a key holding the wrong kind of value"}`,
		`{"error":"WRONGTYPE Operation against a key holding the wrong kind of value","result":"YQ=="}`,
	} {
		_, err := upstash.DecodeReply([]byte(body), true)
		var e *upstash.Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: %v is not an *Error", body, err)
		}
		if e.Code != "WRONGTYPE" || e.Index != -1 || e.Status != 200 || e.Command != "" {
			t.Fatalf("%s: %+v", body, *e)
		}
	}
	// Error texts are never base64-decoded.
	_, err := upstash.DecodeReply([]byte(`{"error":"T0s="}`), true)
	var e *upstash.Error
	if !errors.As(err, &e) || e.Message != "T0s=" {
		t.Fatalf("%v", err)
	}
	for msg, code := range map[string]string{
		"ERR syntax error": "ERR",
		"NOSCRIPT No matching script. Please use EVAL.": "NOSCRIPT",
		"NOPERM this user has no permissions":           "NOPERM",
		"BUSYGROUP Consumer Group name already exists":  "BUSYGROUP",
		"MISCONF_X y":  "MISCONF_X",
		"Unauthorized": "",
		"user_script:1: Script attempted to access a nonexistent global variable": "",
		"":   "",
		"ER": "ER",
	} {
		e := &upstash.Error{}
		_, err := upstash.DecodeReply([]byte(`{"error":"`+msg+`"}`), true)
		if !errors.As(err, &e) || e.Code != code {
			t.Errorf("code of %q = %q, want %q", msg, e.Code, code)
		}
	}
}

func TestDecodeReplyDoesNotAliasTheBody(t *testing.T) {
	for _, b64 := range []bool{false, true} {
		body := []byte(`{"result":["YmFy","OK"],"x":0}`)
		single := []byte(`{"result":"YmFy"}`)
		v, err := upstash.DecodeReply(body, b64)
		if err != nil {
			t.Fatal(err)
		}
		w, err := upstash.DecodeReply(single, b64)
		if err != nil {
			t.Fatal(err)
		}
		before, wBefore := v.String(), w.String()
		for i := range body {
			body[i] = 'Z'
		}
		for i := range single {
			single[i] = 'Z'
		}
		if v.String() != before || w.String() != wBefore {
			t.Fatalf("values changed with the body: %s -> %s, %s -> %s", before, v, wBefore, w)
		}
	}
}

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

func TestRequestLimits(t *testing.T) {
	limits := upstash.Limits{MaxRequestBytes: 1000}
	script := upstash.NewScript("return 1")
	tooLarge := []struct {
		name  string
		label string // the call its error names
		run   func(c *upstash.Client) error
	}{
		{"body", "SET", func(c *upstash.Client) error {
			_, err := c.Do(context.Background(), "SET", "k", strings.Repeat("v", 1000))
			return err
		}},
		{"long key", "GET", func(c *upstash.Client) error {
			_, err := c.Get(context.Background(), strings.Repeat("k", 1000))
			return err
		}},
		{"script", "EVALSHA", func(c *upstash.Client) error {
			_, err := script.Run(context.Background(), c, []string{"a"}, strings.Repeat("v", 1000))
			return err
		}},
		{"pipeline body", "PIPELINE", func(c *upstash.Client) error {
			cmds := make([]upstash.Command, 0, 100)
			for i := 0; i < 100; i++ {
				cmds = append(cmds, upstash.Cmd("SET", "k", "0123456789"))
			}
			_, err := c.Pipeline(context.Background(), cmds...)
			return err
		}},
		{"transaction body", "MULTI-EXEC", func(c *upstash.Client) error {
			_, err := c.Transaction(context.Background(), upstash.Cmd("GET", "a"), upstash.Cmd("SET", "k", strings.Repeat("v", 1000)))
			return err
		}},
	}
	for _, tc := range tooLarge {
		t.Run(tc.name, func(t *testing.T) {
			c, mt, _ := newMock(t, upstash.WithLimits(limits))
			err := tc.run(c)
			wantErrIs(t, err, upstash.ErrRequestTooLarge)
			if want := "upstash: " + tc.label + ": request too large: "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			if n := mt.GetTotalCallCount(); n != 0 {
				t.Fatalf("%d requests were made", n)
			}
		})
	}
	t.Run("at the limit", func(t *testing.T) {
		c, mt, rec := newMock(t, upstash.WithLimits(limits))
		on(mt, "", rec.reply(200, `{"result":"OK"}`))
		body := `["SET","k","` + strings.Repeat("v", 1000-len(`["SET","k",""]`)) + `"]`
		if len(body) != 1000 {
			t.Fatalf("test bug: %d", len(body))
		}
		if _, err := c.Do(ctxT(t), "SET", "k", strings.Repeat("v", 1000-len(`["SET","k",""]`))); err != nil {
			t.Fatal(err)
		}
		if got := string(rec.all()[0].Body); got != body {
			t.Fatalf("sent %d bytes, want the 1000-byte body", len(got))
		}
	})
	t.Run("zero limits disable the checks", func(t *testing.T) {
		c, mt, rec := newMock(t, upstash.WithLimits(upstash.Limits{}))
		on(mt, "", rec.reply(200, `{"result":"OK"}`))
		if _, err := c.Do(ctxT(t), "SET", strings.Repeat("k", 40<<10), strings.Repeat("v", 11<<20)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("default limits", func(t *testing.T) {
		c, mt, rec := newMock(t)
		on(mt, "", rec.reply(200, `{"result":null}`))
		// Keys are not checked by the client (the server judges them): a
		// 33 KB key is sent.
		if _, err := c.Get(ctxT(t), strings.Repeat("k", 32*1024+1)); !errors.Is(err, upstash.ErrNil) {
			t.Fatalf("33 KB key: %v", err)
		}
		big := strings.Repeat("v", 10*1024*1024)
		if err := c.Set(ctxT(t), "k", big, 0); !errors.Is(err, upstash.ErrRequestTooLarge) {
			t.Fatalf("10 MB value: %v", err)
		}
		if n := mt.GetTotalCallCount(); n != 1 {
			t.Fatalf("%d requests were made, want 1 (the GET)", n)
		}
	})
}
